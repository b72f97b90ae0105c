/* sampled_churn: millions of live blocks, then all freed (issue 14). Under sampling with a
 * small OFFHEAP_SAMPLE_BYTES nearly every block is sampled, so each slot of the library's
 * sampled-block filter covers hundreds of live sampled blocks at the peak (a per-slot 8-bit
 * counter would wrap and forget some: their frees would be missed, a phantom leak).
 * keep_block() keeps 1000 blocks of 4096 bytes to the end; everything churn_block() made is
 * freed. stdout: "sampled_churn: live=3000000 freed=3000000 kept=1000".
 *
 * With the argument "cross", THREADS threads each allocate a quarter of the blocks (each from
 * its own glibc arena, so from its own 64 MiB windows: its own group of the filter), then
 * each frees the previous thread's quarter while it allocates and frees a second round of its
 * own, so births and frees of one group's blocks race on different threads. Same stdout. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIVE 3000000
#define THREADS 4
#define SHARE (LIVE / THREADS)

static void *volatile sink;
static void **blocks;
static pthread_barrier_t allocated;

__attribute__((noinline)) static void *churn_block(size_t size) {
    void *p = malloc(size);
    __asm__ volatile("" ::: "memory");
    return p;
}

__attribute__((noinline)) static void *keep_block(void) {
    void *p = malloc(4096);
    memset(p, 1, 4096);
    return p;
}

static size_t size_after(unsigned *x) {
    *x = *x * 1103515245u + 12345u;
    return 16 + (*x >> 16) % 241;
}

static void *cross_worker(void *arg) {
    long t = (long)arg;
    unsigned x = 12345u + (unsigned)t;
    void **mine = blocks + t * SHARE, **theirs = blocks + ((t + THREADS - 1) % THREADS) * SHARE;
    for (long i = 0; i < SHARE; i++) mine[i] = churn_block(size_after(&x));
    pthread_barrier_wait(&allocated);
    void *ring[64] = {0};
    for (long i = 0; i < SHARE; i++) {
        free(theirs[i]);
        free(ring[i % 64]);
        ring[i % 64] = churn_block(size_after(&x));
    }
    for (int i = 0; i < 64; i++) free(ring[i]);
    return NULL;
}

int main(int argc, char **argv) {
    int cross = argc > 1 && strcmp(argv[1], "cross") == 0;
    blocks = calloc(LIVE, sizeof *blocks);
    void **kept = calloc(1000, sizeof *kept);
    if (cross) {
        pthread_t tid[THREADS];
        pthread_barrier_init(&allocated, NULL, THREADS);
        for (long t = 0; t < THREADS; t++) pthread_create(&tid[t], NULL, cross_worker, (void *)t);
        for (int t = 0; t < THREADS; t++) pthread_join(tid[t], NULL);
    } else {
        unsigned x = 12345;
        for (int i = 0; i < LIVE; i++) blocks[i] = churn_block(size_after(&x));
    }
    for (int i = 0; i < 1000; i++) kept[i] = keep_block();
    size_t freed = LIVE;
    if (!cross)
        for (int i = 0; i < LIVE; i++) free(blocks[i]);
    free(blocks);
    sink = kept;
    printf("sampled_churn: live=%d freed=%zu kept=1000\n", LIVE, freed);
    return 0;
}
