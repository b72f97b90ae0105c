/*
 * A caller that keeps a different value in RBP on every call, as code built without frame
 * pointers does (RBP is then just a callee-saved register: a loop counter, a pointer into an
 * array). The walk cache must not take that value for part of where a walk starts: a walk
 * that never uses RBP is the same walk whatever RBP holds.
 *
 * call_with_rbp(fn, arg, value) is written in assembly, with its CFI, so that RBP really holds
 * `value` while fn runs: the compiler gives no such guarantee for C. site_rbp() allocates
 * below it, site_plain() from an ordinary call. Truth, printed on stdout:
 *   rbp_caller: rbp_site=N kept=K size=S plain_site=M kept=L size=T
 * N calls of site_rbp(S), every 100th block kept (K), M calls of site_plain(T), every 100th
 * kept (L); every other block is freed at once. Usage: rbp_caller [calls=200000]
 */
#include <stdio.h>
#include <stdlib.h>

void *call_with_rbp(void *(*fn)(size_t), size_t arg, long value);
__asm__(".text\n"
        ".globl call_with_rbp\n"
        ".type call_with_rbp, @function\n"
        "call_with_rbp:\n"
        ".cfi_startproc\n"
        "  push %rbp\n"
        ".cfi_def_cfa_offset 16\n"
        ".cfi_offset %rbp, -16\n"
        "  mov %rdx, %rbp\n"
        "  mov %rdi, %rax\n"
        "  mov %rsi, %rdi\n"
        "  call *%rax\n"
        "  pop %rbp\n"
        ".cfi_def_cfa_offset 8\n"
        "  ret\n"
        ".cfi_endproc\n"
        ".size call_with_rbp, .-call_with_rbp\n");

__attribute__((noinline, noclone)) void *site_rbp(size_t size) {
    void *p = malloc(size);
    __asm__ volatile("" ::: "memory");
    return p;
}

__attribute__((noinline, noclone)) void *site_plain(size_t size) {
    void *p = malloc(size);
    __asm__ volatile("" ::: "memory");
    return p;
}

static void *alloc_under_new_rbp(long i, size_t size) {
    return call_with_rbp(site_rbp, size, 0x1000 + i * 16);
}

static void *alloc_plainly(long i, size_t size) {
    (void)i;
    return site_plain(size);
}

static void *kept[1 << 16];
static long n_kept;

/* `calls` allocations of `size` bytes through `alloc`, every 100th kept: how many were kept. */
static long allocate(void *(*alloc)(long, size_t), size_t size, long calls) {
    long kept_here = 0;
    for (long i = 0; i < calls; i++) {
        void *p = alloc(i, size);
        if (!p) exit(1);
        if (i % 100 == 0 && n_kept < (1 << 16)) {
            kept[n_kept++] = p;
            kept_here++;
        } else {
            free(p);
        }
    }
    return kept_here;
}

int main(int argc, char **argv) {
    long calls = argc > 1 ? atol(argv[1]) : 200000;
    const size_t rbp_size = 48, plain_size = 80;
    long rbp_kept = allocate(alloc_under_new_rbp, rbp_size, calls);
    long plain_kept = allocate(alloc_plainly, plain_size, calls);
    printf("rbp_caller: rbp_site=%ld kept=%ld size=%zu plain_site=%ld kept=%ld size=%zu\n", calls,
           rbp_kept, rbp_size, calls, plain_kept, plain_size);
    return 0; /* the kept blocks are outstanding at exit, on purpose */
}
