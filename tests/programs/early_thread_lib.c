/*
 * A library whose constructor starts a thread that allocates: linked by a program, it runs
 * before liboffheap's constructor (a dependency is initialised first), so the library starts
 * in a process that already has two threads, one of them in malloc and free. The library must
 * then leave its forward sites as they are (interposer hooks/direct.rs).
 */
#include <pthread.h>
#include <stdlib.h>

static pthread_t worker;
static volatile long rounds;

static void *churn(void *arg) {
    (void)arg;
    for (long i = 0; i < 2000000; i++) {
        void *p = malloc(16 + (size_t)(i % 200));
        __asm__ volatile("" ::"r"(p) : "memory");
        free(p);
        rounds = i + 1;
    }
    return NULL;
}

__attribute__((constructor)) static void start_early_thread(void) {
    pthread_create(&worker, NULL, churn, NULL);
}

/* Joins the constructor's thread; returns how many rounds it made. */
long join_early_thread(void) {
    pthread_join(worker, NULL);
    return rounds;
}
