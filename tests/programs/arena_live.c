/* arena_live: 20,000 blocks of 16-2,000 bytes (a fixed pseudo-random sequence) in the main
 * arena, then three of every four freed (the last block kept, so the arena cannot shrink):
 * ~5,000 live blocks among ~15,000 free chunks to the end. glibc's own accounting (mallinfo2, which the library records in each dump's
 * ledger) is the oracle for the ledger's malloc_live and malloc_retained. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCKS 20000

static void *volatile kept[BLOCKS];

int main(void) {
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < BLOCKS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t size = 16 + (size_t)(x % 1985);
        void *p = malloc(size);
        memset(p, 1, size); /* resident, so the ledger sees its pages */
        kept[i] = p;
    }
    for (int i = 0; i < BLOCKS - 1; i++) {
        if (i % 4 != 0) {
            free(kept[i]);
            kept[i] = NULL;
        }
    }
    return 0;
}
