/*
 * Dumps at scale (issue 12, "Done when 1" and "2"), the host side.
 *
 *   dumpscale stacks [SECONDS]
 *       2^17 = 131,072 distinct allocation stacks, one 32-byte block each (4 MiB live): a
 *       binary tree of non-inlined calls 17 levels deep, where every level calls `left` or
 *       `right` from a call site of its own, so each leaf is reached by its own chain of
 *       return addresses. All blocks are allocated at one line in `leaf`.
 *   dumpscale live [COUNT] [STACKS] [SECONDS]
 *       COUNT (default 10,000,000) live 16-byte blocks from STACKS (default 1,000) distinct
 *       stacks, COUNT / STACKS blocks each, through the same kind of tree (10 levels: up to
 *       1,024 leaves).
 *
 * Either mode then stays alive SECONDS (default 0), doing one malloc+free every 10 ms like a
 * live service (a single-threaded program's periodic dumps are started from a hook); with
 * SECONDS = -1 it prints "ready" instead and waits for a line (or EOF) on stdin, so that the
 * caller can take demand dumps meanwhile. Last it prints, on stdout, "alloc_s=A end_mono_ns=T":
 * the seconds the allocations took and CLOCK_MONOTONIC at the return from main, after which
 * only the exit path (and the library's exit dump) runs, so the caller can time the exit dump
 * from the process's end.
 *
 * Build: gcc -O2 -g -fno-optimize-sibling-calls -o dumpscale dumpscale.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void *volatile *sink;
static unsigned long next, per_leaf, leaves_left;
static int levels;

static long long mono_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

__attribute__((noinline)) static void leaf(size_t size) {
    if (leaves_left == 0) return;
    leaves_left--;
    for (unsigned long i = 0; i < per_leaf; i++) sink[next++] = malloc(size); /* the one site */
}

static void walk(int depth, size_t size);

__attribute__((noinline)) static void left(int depth, size_t size) {
    walk(depth + 1, size);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void right(int depth, size_t size) {
    walk(depth + 1, size);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void walk(int depth, size_t size) {
    if (depth == levels) {
        leaf(size);
        return;
    }
    left(depth, size);
    right(depth, size);
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    unsigned long count, stacks;
    int seconds;
    size_t size;
    if (argc >= 2 && strcmp(argv[1], "stacks") == 0) {
        levels = 17;
        stacks = 1ul << levels;
        count = stacks;
        size = 32;
        seconds = argc > 2 ? atoi(argv[2]) : 0;
    } else if (argc >= 2 && strcmp(argv[1], "live") == 0) {
        count = argc > 2 ? strtoul(argv[2], NULL, 10) : 10000000;
        stacks = argc > 3 ? strtoul(argv[3], NULL, 10) : 1000;
        seconds = argc > 4 ? atoi(argv[4]) : 0;
        size = 16;
        for (levels = 0; (1ul << levels) < stacks; levels++) {
        }
        if (stacks == 0 || count % stacks != 0) {
            fprintf(stderr, "dumpscale: COUNT must be a multiple of STACKS\n");
            return 2;
        }
    } else {
        fprintf(stderr, "usage: dumpscale stacks [SECONDS] | dumpscale live [COUNT] [STACKS] [SECONDS]\n");
        return 2;
    }
    per_leaf = count / stacks;
    leaves_left = stacks;
    sink = calloc(count, sizeof *sink);
    long long t0 = mono_ns();
    walk(0, size);
    double alloc_s = (double)(mono_ns() - t0) / 1e9;
    if (next != count) return 1;
    if (seconds < 0) {
        char line[16];
        printf("ready\n");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin)) line[0] = 0;
    } else {
        long long until = mono_ns() + (long long)seconds * 1000000000LL;
        while (mono_ns() < until) {
            usleep(10000);
            void *volatile tick = malloc(64);
            free(tick);
        }
    }
    printf("alloc_s=%.4f end_mono_ns=%lld\n", alloc_s, mono_ns());
    fflush(stdout);
    return 0;
}
