/* ownalloc: an executable that defines its own malloc family (issue 16), the way rustc
 * carries jemalloc. Blocks come from a bump arena with a size header; free only counts. The
 * library must forward every entry point to these definitions (never mix in glibc's, which
 * aborts with "invalid pointer") — also reallocarray, which this file defines only with
 * -DWITH_REALLOCARRAY (without it, libc's reallocarray calls this realloc). libc's own
 * allocations (strdup, fopen, printf's buffer) reach these functions too.
 * stdout: the results, and how many calls each function saw. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Alignas(16) unsigned char arena[64 << 20];
static size_t used;
static long n_malloc, n_free, n_realloc, n_calloc;

static void *bump(size_t size) {
    size_t need = (size + 16 + 15) & ~(size_t)15;
    if (used + need > sizeof arena) { errno = ENOMEM; return NULL; }
    unsigned char *p = arena + used;
    used += need;
    *(size_t *)p = size;
    return p + 16;
}

void *malloc(size_t size) { n_malloc++; return bump(size); }
void free(void *p) { if (p) n_free++; }
void *calloc(size_t n, size_t size) {
    n_calloc++;
    if (size && n > SIZE_MAX / size) { errno = ENOMEM; return NULL; }
    void *p = bump(n * size);
    if (p) memset(p, 0, n * size);
    return p;
}
void *realloc(void *old, size_t size) {
    n_realloc++;
    void *p = bump(size);
    if (p && old) {
        size_t was = *(size_t *)((unsigned char *)old - 16);
        memcpy(p, old, was < size ? was : size);
    }
    return p;
}
#ifdef WITH_REALLOCARRAY
void *reallocarray(void *old, size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) { errno = ENOMEM; return NULL; }
    return realloc(old, n * size);
}
#endif

int main(void) {
    char *a = malloc(100);
    strcpy(a, "hello");
    char *b = strdup("strdup through libc");
    int *c = reallocarray(NULL, 10, sizeof(int));
    for (int i = 0; i < 10; i++) c[i] = i * i;
    c = reallocarray(c, 20, sizeof(int));
    char *d = calloc(4, 8);
    FILE *f = fopen("/dev/null", "w");
    fprintf(f, "%s %s %d\n", a, b, c[9]);
    fclose(f);
    free(a);
    free(b);
    free(c);
    printf("ownalloc: %s | %s | %d %d | calloc zero=%d\n", a, b, c[3], c[9], d[31] == 0);
    printf("ownalloc: calls malloc=%ld realloc=%ld calloc=%ld free=%ld\n", n_malloc, n_realloc,
           n_calloc, n_free);
    return 0;
}
