/*
 * Benchmark workload 1: malloc-heavy and multi-threaded.
 * Each thread keeps a live set of LIVE blocks and replaces a random one per step with a new
 * block of a random size (16 B - 64 KiB, log-uniform so small blocks dominate as in real
 * programs), allocated from a random call depth of 1-12 non-inlined frames.
 * Usage: malloc_heavy [threads] [ops_per_thread]
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIVE 4096

static __thread uint64_t rng;

static inline uint64_t next_random(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t random_size(void) {
    /* log-uniform between 2^4 and 2^16 */
    unsigned shift = 4 + next_random() % 12;
    size_t base = (size_t)1 << shift;
    return base + next_random() % base;
}

__attribute__((noinline)) static void *alloc_at_depth(int depth, size_t size) {
    if (depth <= 1) {
        void *p = malloc(size);
        if (p) ((volatile char *)p)[0] = 1;
        return p;
    }
    void *p = alloc_at_depth(depth - 1, size);
    __asm__ volatile("" ::: "memory"); /* keep the frame: no tail call */
    return p;
}

struct job { long ops; uint64_t seed; size_t checksum; };

static void *worker(void *arg) {
    struct job *job = arg;
    rng = job->seed;
    void **live = calloc(LIVE, sizeof(void *));
    for (long i = 0; i < job->ops; i++) {
        size_t slot = next_random() % LIVE;
        free(live[slot]);
        int depth = 1 + next_random() % 12;
        live[slot] = alloc_at_depth(depth, random_size());
        job->checksum += (uintptr_t)live[slot] & 0xff;
    }
    for (size_t i = 0; i < LIVE; i++) free(live[i]);
    free(live);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    long ops = argc > 2 ? atol(argv[2]) : 1000000;
    pthread_t tid[64];
    struct job jobs[64];
    if (threads < 1 || threads > 64) return 2;
    for (int t = 0; t < threads; t++) {
        jobs[t] = (struct job){ .ops = ops, .seed = 0x9E3779B97F4A7C15ull * (t + 1), .checksum = 0 };
        pthread_create(&tid[t], NULL, worker, &jobs[t]);
    }
    for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    printf("done %d threads x %ld ops\n", threads, ops);
    return 0;
}
