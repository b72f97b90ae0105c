/* jehost: a program linked with jemalloc (as services embedding RocksDB or Redis-style C
 * libraries are), mixing the standard names (malloc, free, aligned_alloc,
 * malloc_usable_size: jemalloc's, since the program links it) with jemalloc's own API
 * (mallocx, dallocx) on the same blocks (issue 7: the host never notices us).
 * Build: gcc -O2 jehost.c -ljemalloc (Debian: libjemalloc-dev).
 * stdout: "jehost: ok usable=<n>" (jemalloc's usable size of a 100-byte block). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jemalloc/jemalloc.h>

int main(void) {
    void *a = malloc(100);
    memset(a, 1, 100);
    void *b = mallocx(200, MALLOCX_ZERO);
    size_t u = malloc_usable_size(a);
    void *c = aligned_alloc(64, 1000);
    free(a);
    free(b);     /* jemalloc's block, standard name */
    dallocx(c, 0); /* standard name's block, jemalloc's API */
    void *d = mallocx(5000, 0);
    free(d);
    printf("jehost: ok usable=%zu\n", u);
    return 0;
}
