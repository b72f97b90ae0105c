/*
 * plugin.c — a shared library that allocates, for examples/c/stress.c.
 *
 * stress dlopen()s this library from worker threads, calls plugin_work() and
 * dlclose()s it again, so the interposer sees allocations from a module that
 * appears and disappears while other threads allocate. plugin_work() frees
 * everything it allocates: after dlclose no live record may point into the
 * unloaded module.
 *
 * Build: gcc -O2 -g -fPIC -shared -o libstressplugin.so plugin.c
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* A constructor that allocates and a destructor that frees: dlopen/dlclose
 * run both while other threads are inside the allocator. */
static char *plugin_state;

__attribute__((constructor)) static void plugin_init(void)
{
    plugin_state = malloc(321);
    if (plugin_state)
        memset(plugin_state, 1, 321);
}

__attribute__((destructor)) static void plugin_fini(void)
{
    free(plugin_state);
    plugin_state = NULL;
}

/* Allocates `rounds` blocks of varied sizes plus one mapping, checks them,
 * frees them all. Returns the number of bytes it handled, or -1 on a
 * corrupted block (which the caller turns into a failing exit status). */
__attribute__((noipa)) long plugin_work(unsigned seed, int rounds)
{
    long total = 0;
    for (int i = 0; i < rounds; i++) {
        size_t n = 1 + (seed * 2654435761u + (unsigned)i * 40503u) % 3000;
        unsigned char *p = (i & 1) ? calloc(1, n) : malloc(n);
        if (!p)
            return -1;
        memset(p, (int)(n & 0xff), n);
        p = realloc(p, n * 2);
        if (!p || p[n - 1] != (unsigned char)(n & 0xff))
            return -1;
        total += (long)n;
        free(p);
    }
    void *m = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -1;
    memset(m, 7, 3 * 4096);
    munmap(m, 3 * 4096);
    return total;
}
