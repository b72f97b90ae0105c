/* nopie_fnptr: a non-PIE executable that takes the address of malloc/free/calloc/realloc
 * and calls through those pointers (CPython does this for PyMem's raw allocator).
 *
 * In a non-PIE executable an address-taken libc function gets a "canonical PLT entry": the
 * executable's own dynamic symbol table holds an *undefined* `malloc` whose value is its PLT
 * stub, so that every image agrees on &malloc. dlsym(RTLD_DEFAULT, "malloc") and dladdr both
 * answer with that stub, which jumps back to whoever interposes malloc. Taking it for the
 * program's own allocator recursed forever (python3 crashed at start-up under the library).
 *
 * Build: gcc -O2 -g -no-pie -fno-pie. It keeps 1234 bytes from kept_block() and prints a
 * checksum of what it wrote through the pointers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);

/* volatile: the compiler must not turn the indirect calls back into direct ones */
static malloc_fn volatile p_malloc = malloc;
static free_fn volatile p_free = free;
static calloc_fn volatile p_calloc = calloc;
static realloc_fn volatile p_realloc = realloc;
static void *volatile sink;

__attribute__((noinline)) static void kept_block(void) { sink = p_malloc(1234); memset(sink, 7, 1234); }

int main(void) {
    unsigned long sum = 0;
    for (int i = 1; i <= 1000; i++) {
        unsigned char *a = p_malloc((size_t)i);
        unsigned char *b = p_calloc(2, (size_t)i);
        memset(a, i & 0xff, (size_t)i);
        a = p_realloc(a, (size_t)i * 3);
        for (int k = 0; k < i; k++) sum += a[k] + b[k];
        p_free(a);
        p_free(b);
    }
    kept_block();
    printf("nopie_fnptr: sum=%lu\n", sum);
    return 0;
}
