/*
 * Big blocks glibc maps one by one: BLOCKS blocks of 150-399 KiB from malloc and ALIGNED of
 * 300 KiB from posix_memalign at 64 KiB (all over glibc's 128 KiB mmap threshold, which stays
 * there as none is freed), each written whole so that every page of it is resident, all kept
 * live until exit. Prints "blocks=N bytes=B" (the blocks and bytes asked for).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCKS 64
#define ALIGNED 16

int main(void)
{
    static void *kept[BLOCKS + ALIGNED];
    unsigned long bytes = 0;
    for (int i = 0; i < BLOCKS + ALIGNED; i++) {
        size_t size = i < BLOCKS ? (150 + (size_t)(i * 37) % 250) * 1024 : 300 * 1024;
        if (i < BLOCKS)
            kept[i] = malloc(size);
        else if (posix_memalign(&kept[i], 64 * 1024, size) != 0)
            kept[i] = NULL;
        if (!kept[i])
            return 1;
        memset(kept[i], i + 1, size);
        bytes += size;
    }
    printf("blocks=%d bytes=%lu\n", BLOCKS + ALIGNED, bytes);
    return 0;
}
