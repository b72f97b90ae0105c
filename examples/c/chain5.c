/*
 * chain5.c — one allocation site reached through a known chain of five
 * non-inlined functions (issue 3 "Done when 3").
 *
 * Build exactly as the test does:
 *     gcc -O2 -fomit-frame-pointer -g -o chain5 chain5.c
 *
 * Without frame pointers only CFI (.eh_frame) can walk these frames, so the
 * expected stack — chain_level5 → chain_level4 → chain_level3 → chain_level2
 * → chain_level1 → main, innermost first — checks the CFI unwinder. Each
 * function keeps a differently sized local buffer so every frame has its own
 * CFA offset, and does work after its call so gcc cannot turn the call into
 * a tail jump (which would remove the caller's frame from the stack).
 *
 * The `@line NAME` markers below are read by the test to learn the line of
 * each call without hard-coding line numbers. The program leaks
 * CHAIN5_COUNT blocks of CHAIN5_BYTES bytes, all from the same stack.
 */
#include <stdlib.h>
#include <string.h>

#define CHAIN5_BYTES 4242
#define CHAIN5_COUNT 3

#define LINK __attribute__((noipa))

void *volatile sink[CHAIN5_COUNT];
volatile unsigned long checksum;

/* Mixes a local buffer into the checksum after the call, so the frame stays. */
static inline void keep_frame(volatile unsigned char *buf, size_t n, void *p)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)(i + (unsigned long)p);
    checksum += buf[n / 2];
}

LINK void *chain_level5(size_t n)
{
    volatile unsigned char buf[24];
    void *p = malloc(n); /* @line chain_level5 */
    memset(p, 5, n);
    keep_frame(buf, sizeof buf, p);
    return p;
}

LINK void *chain_level4(size_t n)
{
    volatile unsigned char buf[72];
    void *p = chain_level5(n); /* @line chain_level4 */
    keep_frame(buf, sizeof buf, p);
    return p;
}

LINK void *chain_level3(size_t n)
{
    volatile unsigned char buf[136];
    void *p = chain_level4(n); /* @line chain_level3 */
    keep_frame(buf, sizeof buf, p);
    return p;
}

LINK void *chain_level2(size_t n)
{
    volatile unsigned char buf[264];
    void *p = chain_level3(n); /* @line chain_level2 */
    keep_frame(buf, sizeof buf, p);
    return p;
}

LINK void *chain_level1(size_t n)
{
    volatile unsigned char buf[520];
    void *p = chain_level2(n); /* @line chain_level1 */
    keep_frame(buf, sizeof buf, p);
    return p;
}

int main(void)
{
    for (int i = 0; i < CHAIN5_COUNT; i++) {
        sink[i] = chain_level1(CHAIN5_BYTES); /* @line main */
    }
    return 0;
}
