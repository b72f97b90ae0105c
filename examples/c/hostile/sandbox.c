/* sandbox: a program that puts itself under a seccomp allowlist (issue 16), the way
 * chromium's renderers and sandboxed workers do, then allocates (small blocks, a big mmapped
 * one, realloc growth), prints and exits. The filter allows what glibc's allocator, stdio and
 * exit need; anything else gets the action from argv: "kill" (SIGSYS kills the process) or
 * "eperm" (the call fails with EPERM). Nothing of the library's may make the difference.
 * stdout: "sandbox: ok sum=<n>". */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
                  BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

int main(int argc, char **argv) {
    int kill = argc > 1 && strcmp(argv[1], "kill") == 0;
    unsigned int deny = kill ? SECCOMP_RET_KILL_PROCESS : (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA));
    setvbuf(stdout, NULL, _IOFBF, 4096); /* the buffer exists before the filter */
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        ALLOW(SYS_read), ALLOW(SYS_write), ALLOW(SYS_exit), ALLOW(SYS_exit_group),
        ALLOW(SYS_brk), ALLOW(SYS_mmap), ALLOW(SYS_munmap), ALLOW(SYS_mremap),
        ALLOW(SYS_madvise), ALLOW(SYS_futex), ALLOW(SYS_rt_sigreturn),
        ALLOW(SYS_newfstatat), ALLOW(SYS_fstat),
        BPF_STMT(BPF_RET | BPF_K, deny),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("seccomp");
        return 2;
    }
    long sum = 0;
    char *big = malloc(1 << 20);
    memset(big, 1, 1 << 20);
    for (int i = 0; i < 10000; i++) {
        char *p = malloc(16 + i % 500);
        p[0] = (char)i;
        sum += p[0];
        p = realloc(p, 1000 + i % 3000);
        free(p);
    }
    free(big);
    printf("sandbox: ok sum=%ld\n", sum);
    return 0;
}
