/*
 * Counts under more threads than a machine has cores: WAVES waves of THREADS threads alive
 * at once (each wave joined before the next starts, so later threads take over the counter
 * stripes of earlier ones), each thread making PAIRS malloc+free pairs of (t + 1) * 8 bytes
 * from counted_pair() and keeping one block of KEPT bytes from kept_block().
 *
 * Its truth, printed on stdout: counted_pair() made WAVES * THREADS * PAIRS allocations and
 * as many frees, of WAVES * PAIRS * 8 * (1 + 2 + ... + THREADS) bytes each way; kept_block()
 * made WAVES * THREADS allocations of KEPT bytes, none freed.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define THREADS 24
#define WAVES 3
#define PAIRS 5000
#define KEPT 100

static void *kept[WAVES * THREADS];

__attribute__((noinline)) static void *counted_pair(size_t n)
{
    void *p = malloc(n);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

__attribute__((noinline)) static void *kept_block(void)
{
    void *p = malloc(KEPT);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

struct job {
    int wave, t;
};

static void *thread_main(void *arg)
{
    struct job *j = arg;
    for (int i = 0; i < PAIRS; i++)
        free(counted_pair((size_t)(j->t + 1) * 8));
    kept[j->wave * THREADS + j->t] = kept_block();
    return NULL;
}

int main(void)
{
    struct job jobs[THREADS];
    pthread_t tid[THREADS];
    for (int w = 0; w < WAVES; w++) {
        for (int t = 0; t < THREADS; t++) {
            jobs[t] = (struct job){w, t};
            if (pthread_create(&tid[t], NULL, thread_main, &jobs[t]) != 0)
                return 1;
        }
        for (int t = 0; t < THREADS; t++)
            pthread_join(tid[t], NULL);
    }
    uint64_t pairs = (uint64_t)WAVES * THREADS * PAIRS;
    uint64_t bytes = (uint64_t)WAVES * PAIRS * 8 * (THREADS * (THREADS + 1) / 2);
    printf("thread_counts: pairs=%llu pair_bytes=%llu kept=%d kept_bytes=%d\n",
           (unsigned long long)pairs, (unsigned long long)bytes, WAVES * THREADS,
           WAVES * THREADS * KEPT);
    return 0;
}
