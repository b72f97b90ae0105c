/* smallstack: allocation on small stacks (issue 7).
 *
 * usage: smallstack thread|altstack|both
 *   thread    a thread created with the smallest stack POSIX allows (PTHREAD_STACK_MIN,
 *             16 KiB on x86_64 glibc) mallocs, callocs, reallocs, frees and mmaps;
 *   altstack  a signal handler running on a 16 KiB alternate signal stack (sigaltstack)
 *             mallocs and frees; the interrupted thread is not inside malloc, so this
 *             is safe with glibc alone.
 * Such stacks are common: small-stack worker pools, coroutine libraries, signal handlers
 * on alternate stacks (Go's signal stacks are 32 KiB). glibc needs a few hundred bytes
 * of stack for these calls; an interposer must not need much more.
 * stdout: "smallstack: <mode> ok".
 */
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void *volatile sink;

static void allocate(void) {
    void *p = malloc(100);
    void *q = calloc(10, 1000);
    p = realloc(p, 5000);
    void *big = malloc(300000);
    void *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sink = p;
    free(p);
    free(q);
    free(big);
    if (m != MAP_FAILED) munmap(m, 8192);
}

static void *thread_main(void *arg) {
    (void)arg;
    allocate();
    return NULL;
}

static volatile sig_atomic_t handled;
static void on_usr1(int sig) {
    (void)sig;
    allocate();
    handled = 1;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "both";
    if (!strcmp(mode, "thread") || !strcmp(mode, "both")) {
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, PTHREAD_STACK_MIN);
        pthread_t t;
        if (pthread_create(&t, &at, thread_main, NULL) != 0) { printf("pthread_create failed\n"); return 1; }
        pthread_join(t, NULL);
    }
    if (!strcmp(mode, "altstack") || !strcmp(mode, "both")) {
        stack_t ss;
        ss.ss_size = 16384;
        ss.ss_sp = malloc(ss.ss_size);
        ss.ss_flags = 0;
        if (sigaltstack(&ss, NULL) != 0) { perror("sigaltstack"); return 1; }
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;
        sa.sa_flags = SA_ONSTACK;
        sigaction(SIGUSR1, &sa, NULL);
        raise(SIGUSR1);
        if (!handled) return 1;
    }
    printf("smallstack: %s ok\n", mode);
    return 0;
}
