/* exits: leaving the process from a non-main thread (issue 7).
 *
 * usage: exits exit|_exit|abort|return
 * Four worker threads malloc/free without pause. A fifth thread leaks 2468 bytes from
 * thread_leak(), prints "leaving" (line-buffered stdout would differ: stdout is a pipe, so
 * the line sits in stdio's buffer) and then, from that non-main thread:
 *   exit    exit(3): atexit handlers and liboffheap's exit dump run in this thread while
 *           the workers keep allocating; stdio is flushed ("leaving" appears)
 *   _exit   _exit(4): nothing runs, the buffered line is lost; liboffheap's _exit hook
 *           still writes the exit dump (issue 10)
 *   abort   abort(): SIGABRT, the buffered line is lost; with no program handler
 *           liboffheap's crash handler writes a best-effort exit dump first
 *   return  the thread returns; main stops the workers and returns 5 (exit dump)
 * The main thread blocks in pthread_join meanwhile. An atexit handler mallocs and frees and
 * writes "atexit" to stderr, so exit's order of events is visible.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static atomic_int stop;
static void *volatile sink;
static const char *mode;

static void *worker(void *arg) {
    unsigned s = (unsigned)(unsigned long)arg;
    while (!atomic_load(&stop)) {
        s = s * 1103515245u + 12345u;
        void *p = malloc(1 + (s >> 16) % 50000);
        sink = p;
        free(p);
    }
    return NULL;
}

__attribute__((noinline)) static void thread_leak(void) { sink = malloc(2468); memset(sink, 5, 2468); }

static void at_exit(void) {
    void *p = malloc(100);
    sink = p;
    free(p);
    fputs("atexit\n", stderr);
}

static void *leaver(void *arg) {
    (void)arg;
    usleep(100000); /* the workers are busy by now */
    thread_leak();
    printf("leaving\n");
    if (!strcmp(mode, "exit")) exit(3);
    if (!strcmp(mode, "_exit")) _exit(4);
    if (!strcmp(mode, "abort")) abort();
    return NULL;
}

int main(int argc, char **argv) {
    mode = argc > 1 ? argv[1] : "return";
    atexit(at_exit);
    pthread_t w[4], l;
    for (int i = 0; i < 4; i++) pthread_create(&w[i], NULL, worker, (void *)(unsigned long)(i + 1));
    pthread_create(&l, NULL, leaver, NULL);
    pthread_join(l, NULL);
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) pthread_join(w[i], NULL);
    printf("main returns\n");
    return 5;
}
