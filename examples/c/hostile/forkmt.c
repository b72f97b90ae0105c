/* forkmt: fork from a multi-threaded process while other threads allocate (issue 7).
 *
 * usage: forkmt CHILDREN THREADS
 * THREADS worker threads malloc/realloc/free without pause while the main thread forks
 * CHILDREN times. Each child (single-threaded copy, possibly taken while a worker was inside
 * malloc or inside liboffheap's hook) allocates and frees 10,000 blocks, starts and joins a
 * thread that allocates too, leaks exactly one 123457-byte block from child_leak(), reports
 * its pid on stderr ("child <pid>") and exit(0)s, so it gets an exit dump. A child that
 * inherited a held lock would hang: the test's timeout turns that into a failure.
 * The parent checks every child exited 0, stops and joins the workers (which free all they
 * hold) and prints one deterministic line on stdout:
 *     forkmt: children=C ok=C
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;
static void *volatile sink;

static void *worker(void *arg) {
    unsigned s = (unsigned)(uintptr_t)arg * 2654435761u + 1;
    void *held[64] = {0};
    while (!atomic_load(&stop)) {
        s = s * 1103515245u + 12345u;
        unsigned i = (s >> 8) % 64;
        size_t n = 1 + (s >> 12) % ((s & 1) ? 300000 : 2048); /* some mmap-backed blocks */
        if (held[i] && (s & 2)) {
            void *q = realloc(held[i], n);
            if (q) held[i] = q;
        } else {
            free(held[i]);
            held[i] = malloc(n);
            if (held[i]) memset(held[i], 0x5a, n < 64 ? n : 64);
        }
    }
    for (int i = 0; i < 64; i++) free(held[i]);
    return NULL;
}

static void *child_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        void *p = malloc(1 + i % 700);
        sink = p;
        free(p);
    }
    return NULL;
}

__attribute__((noinline)) static void child_leak(void) {
    char *p = malloc(123457);
    memset(p, 1, 123457);
    sink = p;
}

static int child_main(void) {
    void *blocks[100];
    for (int r = 0; r < 100; r++) {
        for (int i = 0; i < 100; i++) blocks[i] = malloc(16 + (size_t)(r * 37 + i * 13) % 5000);
        for (int i = 0; i < 100; i++) free(blocks[i]);
    }
    pthread_t t;
    if (pthread_create(&t, NULL, child_thread, NULL) != 0) return 3;
    pthread_join(t, NULL);
    child_leak();
    fprintf(stderr, "child %d\n", (int)getpid());
    return 0;
}

int main(int argc, char **argv) {
    int children = argc > 1 ? atoi(argv[1]) : 20;
    int threads = argc > 2 ? atoi(argv[2]) : 4;
    pthread_t tids[64];
    for (int i = 0; i < threads; i++) pthread_create(&tids[i], NULL, worker, (void *)(uintptr_t)(i + 1));
    int ok = 0;
    for (int c = 0; c < children; c++) {
        usleep(2000); /* let the workers get going between forks */
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 2; }
        if (pid == 0) exit(child_main());
        int st;
        if (waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0) ok++;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < threads; i++) pthread_join(tids[i], NULL);
    printf("forkmt: children=%d ok=%d\n", children, ok);
    return ok == children ? 0 : 1;
}
