/*
 * A worker thread that puts itself under a seccomp filter before its first allocation call,
 * the way sandboxed workers do, then frees blocks the main thread allocated: its first call
 * the library tracks comes after the filter. The filter kills the process on any system
 * call but the few glibc's free needs (glibc's own per-thread set-up is done beforehand
 * through __libc_malloc, which no preload interposes). Nothing of the library's may make a
 * call the filter denies on that thread.
 * stdout: "sandbox_free: freed=N bytes=B".
 */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define N 200
#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
                  BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);

static void *blocks[N];

__attribute__((noinline)) static void *allocate_block(size_t n)
{
    void *p = malloc(n);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

static void *worker(void *arg)
{
    (void)arg;
    __libc_free(__libc_malloc(64)); /* glibc's tcache and arena for this thread, untracked */
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        ALLOW(SYS_read), ALLOW(SYS_write), ALLOW(SYS_exit), ALLOW(SYS_exit_group),
        ALLOW(SYS_brk), ALLOW(SYS_madvise), ALLOW(SYS_futex), ALLOW(SYS_rt_sigreturn),
        ALLOW(SYS_munmap), ALLOW(SYS_rt_sigprocmask),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return NULL;
    for (int i = 0; i < N; i++)
        free(blocks[i]);
    return (void *)1;
}

int main(void)
{
    long bytes = 0;
    for (int i = 0; i < N; i++) {
        blocks[i] = allocate_block(32 + i);
        bytes += 32 + i;
    }
    pthread_t t;
    void *done = NULL;
    if (pthread_create(&t, NULL, worker, NULL) != 0 || pthread_join(t, &done) != 0 || !done) {
        fprintf(stderr, "sandbox_free: the worker could not run\n");
        return 2;
    }
    printf("sandbox_free: freed=%d bytes=%ld\n", N, bytes);
    return 0;
}
