/*
 * Reporter scale benchmark (issue 12 "Done when 1"): 2^17 = 131,072 distinct allocation
 * stacks, one 32-byte block each, 4 MiB live in all. A binary tree of calls 17 levels deep:
 * at every level `walk` calls `left` or `right` from two different call sites, so each leaf
 * is reached by its own chain of return addresses. All blocks reach `malloc` from one line
 * in `leaf`: the report must show one allocation site holding 4 MiB in 131,072 blocks.
 * Usage: manystacks [seconds to stay alive after allocating, default 0]
 * Build: gcc -O2 -g -fno-optimize-sibling-calls -o manystacks manystacks.c
 */
#include <stdlib.h>
#include <unistd.h>

#define LEVELS 17

static void *volatile *sink;
static unsigned next;

__attribute__((noinline)) static void leaf(void) {
    sink[next++] = malloc(32); /* the one allocation site */
}

static void walk(int depth);

__attribute__((noinline)) static void left(int depth) {
    walk(depth + 1);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void right(int depth) {
    walk(depth + 1);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void walk(int depth) {
    if (depth == LEVELS) {
        leaf();
        return;
    }
    left(depth);
    right(depth);
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    sink = calloc(1u << LEVELS, sizeof *sink);
    walk(0);
    if (argc > 1) sleep((unsigned)atoi(argv[1]));
    return next == (1u << LEVELS) ? 0 : 1;
}
