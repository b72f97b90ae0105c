/* sigmalloc: malloc, free and mmap from a signal handler (issue 7).
 *
 * usage: sigmalloc MILLISECONDS
 * A SIGALRM timer fires every 50 us. The handler mallocs, writes, frees, and mmaps/munmaps a
 * page. The main thread runs two kinds of work in a loop:
 *   - malloc/realloc/free with SIGALRM blocked around each call (glibc's malloc is not
 *     reentrant: this is what makes the handler's malloc safe with glibc alone);
 *   - mmap/mprotect/munmap with SIGALRM unblocked (plain system calls in glibc: the handler
 *     may interrupt them at any point, and with liboffheap it interrupts the hooks).
 * A second thread (SIGALRM blocked) mallocs and frees continuously so that the library's
 * locks are contended when the handler runs. So glibc alone never deadlocks here; a
 * library that takes a non-reentrant lock in a hook the handler can interrupt does.
 * stdout: "sigmalloc: ok" once the time is up and at least 100 signals were handled.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>

static volatile sig_atomic_t handled;
static atomic_int stop;
static void *volatile sink;

static void on_alarm(int sig) {
    (void)sig;
    static unsigned s = 7;
    s = s * 1103515245u + 12345u;
    size_t n = 1 + (s >> 16) % 3000;
    char *p = malloc(n);
    if (p) { p[0] = 1; p[n - 1] = 2; }
    free(p);
    void *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED) { ((char *)m)[0] = 1; munmap(m, 8192); }
    handled++;
}

static void *other(void *arg) {
    (void)arg;
    unsigned s = 3;
    while (!atomic_load(&stop)) {
        s = s * 1103515245u + 12345u;
        void *p = malloc(1 + (s >> 16) % 100000);
        sink = p;
        free(p);
    }
    return NULL;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    double ms = argc > 1 ? atof(argv[1]) : 2000;
    sigset_t alrm;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &alrm, NULL); /* the other thread inherits the block */
    pthread_t t;
    pthread_create(&t, NULL, other, NULL);
    pthread_sigmask(SIG_UNBLOCK, &alrm, NULL);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 50}, {0, 50}};
    setitimer(ITIMER_REAL, &it, NULL);

    double end = now_ms() + ms;
    unsigned s = 11;
    void *held = NULL;
    while (now_ms() < end) {
        s = s * 1103515245u + 12345u;
        pthread_sigmask(SIG_BLOCK, &alrm, NULL);
        void *q = realloc(held, 1 + (s >> 16) % 5000);
        if (q) held = q;
        void *p = malloc(1 + (s >> 8) % 300000);
        sink = p;
        free(p);
        pthread_sigmask(SIG_UNBLOCK, &alrm, NULL);
        size_t len = 4096 * (1 + (s >> 20) % 8);
        char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) continue;
        m[0] = 1;
        mprotect(m, 4096, PROT_READ);
        munmap(m, len);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    free(held);
    fprintf(stderr, "sigmalloc: handled %d signals\n", (int)handled);
    printf("sigmalloc: %s\n", handled >= 100 ? "ok" : "too few signals");
    return handled >= 100 ? 0 : 1;
}
