/*
 * Callers that keep a different value in RBP on every call, as code built without frame
 * pointers does (RBP is then just a callee-saved register: a loop counter, a pointer into an
 * array). The walk cache must not take such a value for part of where a walk starts, nor
 * compare a saved copy of it that no frame uses: a walk that never uses RBP is the same walk
 * whatever RBP holds.
 *
 * Written in assembly, with CFI, because the compiler gives no such guarantee for C:
 * call_with_rbp(fn, arg, value) calls fn(arg) with RBP = value (RBP at malloc's entry in fn
 * varies); call_saving_rbp(fn, arg, value) calls fn(arg) through a frame that saves RBP =
 * value on the stack and then sets RBP to a constant (the saved word varies, the entry RBP
 * does not). site_rbp(), site_saved() and site_plain() allocate below them and from an
 * ordinary call. Truth, printed on stdout:
 *   rbp_caller: calls=N size_rbp=S kept_rbp=K size_saved=T kept_saved=L size_plain=U kept_plain=M
 * N calls of each site, every 100th block kept until exit (K, L, M), every other freed at once.
 * Usage: rbp_caller [calls=200000]
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

void *call_saving_rbp(void *(*fn)(size_t), size_t arg, long value);
__asm__(".text\n"
        ".globl call_saving_rbp\n"
        ".type call_saving_rbp, @function\n"
        "call_saving_rbp:\n"
        ".cfi_startproc\n"
        "  push %rbp\n"
        ".cfi_def_cfa_offset 16\n"
        ".cfi_offset %rbp, -16\n"
        "  mov %rdx, %rbp\n"
        "  call save_rbp_then_call\n"
        "  pop %rbp\n"
        ".cfi_def_cfa_offset 8\n"
        "  ret\n"
        ".cfi_endproc\n"
        ".size call_saving_rbp, .-call_saving_rbp\n"
        /* save_rbp_then_call(fn, arg): saves the caller's (varying) RBP, calls fn(arg) with
         * RBP = a constant. */
        ".type save_rbp_then_call, @function\n"
        "save_rbp_then_call:\n"
        ".cfi_startproc\n"
        "  push %rbp\n"
        ".cfi_def_cfa_offset 16\n"
        ".cfi_offset %rbp, -16\n"
        "  mov $0x5150, %ebp\n"
        "  mov %rdi, %rax\n"
        "  mov %rsi, %rdi\n"
        "  call *%rax\n"
        "  pop %rbp\n"
        ".cfi_def_cfa_offset 8\n"
        "  ret\n"
        ".cfi_endproc\n"
        ".size save_rbp_then_call, .-save_rbp_then_call\n");

__attribute__((noinline, noclone)) void *site_rbp(size_t size) {
    void *p = malloc(size);
    __asm__ volatile("" ::: "memory");
    return p;
}

__attribute__((noinline, noclone)) void *site_saved(size_t size) {
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

static void *alloc_under_saved_rbp(long i, size_t size) {
    return call_saving_rbp(site_saved, size, 0x2000 + i * 16);
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
    const size_t size_rbp = 48, size_saved = 64, size_plain = 80;
    long kept_rbp = allocate(alloc_under_new_rbp, size_rbp, calls);
    long kept_saved = allocate(alloc_under_saved_rbp, size_saved, calls);
    long kept_plain = allocate(alloc_plainly, size_plain, calls);
    printf("rbp_caller: calls=%ld size_rbp=%zu kept_rbp=%ld size_saved=%zu kept_saved=%ld "
           "size_plain=%zu kept_plain=%ld\n",
           calls, size_rbp, kept_rbp, size_saved, kept_saved, size_plain, kept_plain);
    return 0; /* the kept blocks are outstanding at exit, on purpose */
}
