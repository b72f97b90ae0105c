/*
 * deepstack.c — allocations from random call depths (issue 3 "Done when 4").
 *
 * 8 threads loop for a configurable duration: each iteration picks a depth
 * in 1..200 and recurses through three mutually recursive non-inlined
 * functions with different frame layouts (so the unwinder meets many CFA
 * rules, with and without frame pointers), then allocates at the bottom.
 * Most blocks are freed again; one in 16 is kept in a per-thread ring of 256
 * so the table always holds live allocations from every depth. At the end
 * everything is freed except the last ring contents of each thread
 * (intentionally: the exit dump then has stacks of all depths).
 *
 * Usage: deepstack [seconds=10] [threads=8]
 * Build: gcc -O2 -fomit-frame-pointer -g -pthread -o deepstack deepstack.c
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING 256
#define MAXDEPTH 200

struct ctx {
    uint32_t rs;
    void *ring[RING];
    unsigned ring_pos;
    unsigned long iterations;
};

static double seconds = 10.0;
static volatile unsigned long sink;

static uint32_t next_rand(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static void *deep_a(struct ctx *c, int depth);
static void *deep_b(struct ctx *c, int depth);
static void *deep_c(struct ctx *c, int depth);

__attribute__((noipa)) static void *bottom_alloc(struct ctx *c)
{
    size_t n = 16 + next_rand(&c->rs) % 2000;
    void *p = (next_rand(&c->rs) & 1) ? malloc(n) : calloc(1, n);
    if (p)
        memset(p, 0x5a, n < 64 ? n : 64);
    return p;
}

/* Three frame shapes: small, medium with a buffer, and one whose buffer
 * size depends on the depth (dynamic stack adjustment, CFA via rbp or a
 * DW_OP expression depending on the compiler's mood). */
__attribute__((noipa)) static void *deep_a(struct ctx *c, int depth)
{
    void *p = depth <= 1 ? bottom_alloc(c) : deep_b(c, depth - 1);
    sink += (uintptr_t)p & 0xf;
    return p;
}

__attribute__((noipa)) static void *deep_b(struct ctx *c, int depth)
{
    volatile char buf[96];
    buf[depth % 96] = (char)depth;
    void *p = depth <= 1 ? bottom_alloc(c) : deep_c(c, depth - 1);
    sink += (uintptr_t)buf[depth % 96];
    return p;
}

__attribute__((noipa)) static void *deep_c(struct ctx *c, int depth)
{
    volatile char *buf = __builtin_alloca(16 + (size_t)(depth % 7) * 16);
    buf[0] = (char)depth;
    void *p = depth <= 1 ? bottom_alloc(c) : deep_a(c, depth - 1);
    sink += (uintptr_t)buf[0];
    return p;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *thread_main(void *arg)
{
    struct ctx *c = arg;
    double end = now() + seconds;
    while (now() < end) {
        for (int k = 0; k < 256; k++) {
            int depth = 1 + (int)(next_rand(&c->rs) % MAXDEPTH);
            void *(*entry)(struct ctx *, int) = depth % 3 == 0 ? deep_a : depth % 3 == 1 ? deep_b : deep_c;
            void *p = entry(c, depth);
            if ((next_rand(&c->rs) & 15) == 0) {
                unsigned slot = c->ring_pos++ % RING;
                free(c->ring[slot]);
                c->ring[slot] = p;
            } else {
                free(p);
            }
            c->iterations++;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int nthreads = 8;
    if (argc > 1)
        seconds = strtod(argv[1], NULL);
    if (argc > 2)
        nthreads = atoi(argv[2]);
    if (nthreads < 1 || nthreads > 64)
        return 2;

    static struct ctx ctx[64];
    pthread_t t[64];
    for (int i = 0; i < nthreads; i++) {
        ctx[i].rs = 0x9e3779b9u * (uint32_t)(i + 1);
        if (pthread_create(&t[i], NULL, thread_main, &ctx[i]) != 0)
            return 2;
    }
    unsigned long total = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(t[i], NULL);
        total += ctx[i].iterations;
    }
    /* One line on stderr: useful to a person, ignored by the test. */
    fprintf(stderr, "deepstack: %d threads, %lu allocations\n", nthreads, total);
    return 0;
}
