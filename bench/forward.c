/*
 * The floor of any malloc preload: a library whose malloc and free only forward to glibc's
 * (one extra call and indirect jump each). bench/run.py's `instructions` section compares
 * sampling with it, so what sampling adds is told apart from what preloading costs.
 */
#include <stddef.h>

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *p);

void *malloc(size_t size) { return __libc_malloc(size); }
void free(void *p) { __libc_free(p); }
