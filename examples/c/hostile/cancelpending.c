/* cancelpending exit|work: a worker gets a deferred cancel it never acts on, because it
 * reaches no cancellation point (malloc and free are none).
 *   exit: the worker then calls exit(3): the process exits with status 3.
 *   work: the worker mallocs and frees for 1.5 s and returns 42; main joins it and prints
 *         "worker returned 42" (with OFFHEAP_THREAD=never OFFHEAP_INTERVAL=0.1, dumps are
 *         written on the worker's own thread in the middle of its mallocs).
 * The library's code on a program thread must not be where a pending cancel is acted on. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile int go;

static double ms_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1e3 + (t.tv_nsec - t0->tv_nsec) / 1e6;
}

static void *exit_worker(void *arg) {
    (void)arg;
    while (!go) free(malloc(100));
    exit(3);
}

static void *work_worker(void *arg) {
    (void)arg;
    void *keep[256] = {0};
    unsigned r = 1;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (int i = 0; i < 100; i++) {
            r = r * 1103515245u + 12345u;
            int k = (r >> 8) % 256;
            free(keep[k]);
            keep[k] = malloc(32 + (r >> 16) % 2000);
        }
    } while (ms_since(&t0) < 1500);
    for (int k = 0; k < 256; k++) free(keep[k]);
    return (void *)42;
}

int main(int argc, char **argv) {
    int exiting = argc > 1 && strcmp(argv[1], "exit") == 0;
    pthread_t t;
    void *result;
    setvbuf(stdout, NULL, _IONBF, 0);
    pthread_create(&t, NULL, exiting ? exit_worker : work_worker, NULL);
    usleep(200000);
    pthread_cancel(t);
    go = 1;
    pthread_join(t, &result);
    printf("worker %s\n", result == PTHREAD_CANCELED ? "was cancelled" : "returned 42");
    return 0;
}
