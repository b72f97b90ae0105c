/*
 * Reporter scale benchmark (issue 12 "Done when 3"): a service with 10,000 distinct
 * allocation stacks that runs long enough for thousands of dumps. Stacks come from a tree of
 * calls four levels deep with ten call sites per level (10^4 paths). Each stack keeps a small
 * ring of live blocks that churns (bounded); the stacks of the first path digit 7 leak one
 * block per round on top, so the report has leaks to find among the churn.
 * Usage: service10k <seconds>
 * Build: gcc -O2 -g -fno-optimize-sibling-calls -o service10k service10k.c
 */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PATHS 10000
#define RING 4

static void *ring[PATHS][RING];
static unsigned pos[PATHS];

__attribute__((noinline)) static void *grab(unsigned path) {
    return malloc(64 + path % 64);
}

static void *down(int level, unsigned path, unsigned rest);

/* Ten functions per level, one per digit of the path: identical calls in a switch would be
 * merged by the compiler into one call site, distinct functions cannot be. */
#define HOP(d)                                                                  \
    __attribute__((noinline)) static void *hop##d(int level, unsigned path,     \
                                                  unsigned rest) {              \
        void *p = down(level + 1, path, rest / 10);                             \
        __asm__ volatile("" ::: "memory");                                      \
        return p;                                                               \
    }
HOP(0) HOP(1) HOP(2) HOP(3) HOP(4) HOP(5) HOP(6) HOP(7) HOP(8) HOP(9)
static void *(*const hops[10])(int, unsigned, unsigned) = {hop0, hop1, hop2, hop3, hop4,
                                                          hop5, hop6, hop7, hop8, hop9};

__attribute__((noinline)) static void *down(int level, unsigned path, unsigned rest) {
    if (level == 4) return grab(path);
    void *p = hops[rest % 10](level, path, rest);
    __asm__ volatile("" ::: "memory");
    return p;
}

static void *volatile leaked;

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned round = 0;
    do {
        for (unsigned k = 0; k < 1000; k++) {
            unsigned path = (round * 1000 + k * 7919) % PATHS;
            unsigned slot = pos[path]++ % RING;
            free(ring[path][slot]);
            ring[path][slot] = down(0, path, path);
            if (path / 1000 == 7 && k % 50 == 0) leaked = down(0, path, path);
        }
        round++;
        usleep(10000);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
    return 0;
}
