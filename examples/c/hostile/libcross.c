/* libcross.so: a dlopen'ed library that allocates and frees across the boundary with
 * dlcross.c (issue 7). Its constructor allocates a block that its destructor frees, so each
 * dlopen/dlclose cycle is balanced. */
#include <stdlib.h>
#include <string.h>

static char *ctor_block;

__attribute__((constructor)) static void cross_ctor(void) {
    ctor_block = malloc(3000);
    memset(ctor_block, 7, 3000);
}
__attribute__((destructor)) static void cross_dtor(void) { free(ctor_block); }

/* Allocated here, freed by the main program. */
__attribute__((noinline)) char *cross_alloc(size_t n, int fill) {
    char *p = malloc(n);
    if (p) memset(p, fill, n);
    return p;
}
/* Allocated by the main program, freed (or grown) here. */
__attribute__((noinline)) void cross_free(void *p) { free(p); }
__attribute__((noinline)) void *cross_grow(void *p, size_t n) { return realloc(p, n); }
