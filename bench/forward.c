/*
 * The floor of any malloc preload: a library whose malloc and free only forward to glibc's.
 * bench/run.py's tcache and instructions sections compare sampling with it, so what sampling
 * adds is told apart from what preloading costs.
 *
 * Built as is (-fno-plt), each call is one extra indirect jump, as in a preload that keeps
 * the real functions behind pointers. Built with -DDIRECT, the constructor rewrites both jumps
 * into direct ones (e9 rel32), as liboffheap does at its forward sites
 * (interposer/src/hooks/direct.rs): on this machine that is most of the difference.
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *p);

#ifndef DIRECT
void *malloc(size_t size) { return __libc_malloc(size); }
void free(void *p) { __libc_free(p); }
#else
/* Each entry is an 8-byte-aligned `jmp *GOT(%rip)` (6 bytes) and two bytes of padding. */
__asm__(".section .text.forward,\"ax\",@progbits\n"
        ".p2align 6\n"
        ".globl malloc\n.type malloc,@function\n"
        "malloc:\n jmp *__libc_malloc@GOTPCREL(%rip)\n .skip 2, 0xcc\n"
        ".globl free\n.type free,@function\n"
        "free:\n jmp *__libc_free@GOTPCREL(%rip)\n .skip 2, 0xcc\n"
        ".text\n");
extern char malloc_entry[] __asm__("malloc");
extern char free_entry[] __asm__("free");

/* `jmp target` over the indirect jump at `at`, if it reaches. */
static void make_direct(char *at, void *target) {
    intptr_t rel = (char *)target - (at + 5);
    if (rel != (int32_t)rel) return;
    int32_t rel32 = (int32_t)rel;
    at[0] = (char)0xe9;
    memcpy(at + 1, &rel32, 4);
}

__attribute__((constructor)) static void init(void) {
    char *page = (char *)((uintptr_t)malloc_entry & ~(uintptr_t)4095);
    if (mprotect(page, 4096, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) return;
    make_direct(malloc_entry, (void *)__libc_malloc);
    make_direct(free_entry, (void *)__libc_free);
    mprotect(page, 4096, PROT_READ | PROT_EXEC);
}
#endif
