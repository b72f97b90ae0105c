/* libearly.so: allocates from its constructor. Preloaded before liboffheap.so (or linked),
 * its blocks may be born before the library tracks anything; edges.c frees, reallocs and
 * sizes them. */
#include <stdlib.h>
#include <string.h>

void *early_blocks[4];

__attribute__((constructor)) static void early(void) {
    early_blocks[0] = malloc(1000);
    early_blocks[1] = malloc(300000);
    memset(early_blocks[1], 'e', 300000);
    early_blocks[2] = calloc(10, 10);
}
