/* sampled_churn: millions of live blocks, then all freed (issue 14). Under sampling with a
 * small OFFHEAP_SAMPLE_BYTES nearly every block is sampled, so each slot of the library's
 * sampled-block filter covers hundreds of live sampled blocks at the peak (a per-slot 8-bit
 * counter would wrap and forget some: their frees would be missed, a phantom leak).
 * keep_block() keeps 1000 blocks of 4096 bytes to the end; everything churn_block() made is
 * freed. stdout: "sampled_churn: live=3000000 freed=3000000 kept=1000". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIVE 3000000

static void *volatile sink;

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

int main(void) {
    void **blocks = calloc(LIVE, sizeof *blocks);
    void **kept = calloc(1000, sizeof *kept);
    unsigned x = 12345;
    for (int i = 0; i < LIVE; i++) {
        x = x * 1103515245u + 12345u;
        blocks[i] = churn_block(16 + (x >> 16) % 241);
    }
    for (int i = 0; i < 1000; i++) kept[i] = keep_block();
    size_t freed = 0;
    for (int i = 0; i < LIVE; i++) {
        free(blocks[i]);
        freed++;
    }
    free(blocks);
    sink = kept;
    printf("sampled_churn: live=%d freed=%zu kept=1000\n", LIVE, freed);
    return 0;
}
