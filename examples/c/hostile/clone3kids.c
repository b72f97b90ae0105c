/* clone3kids: children created without fork handlers (issue 16). Two threads allocate and
 * free all the time while the main thread makes 200 children with a raw clone3 (no
 * CLONE_VM: a copy of the process, but pthread_atfork handlers never run), so a child can
 * inherit a lock of the library's that a thread absent from it was holding. Each child
 * allocates, frees and calls exit() (destructors run in it); the parent reaps them. A child
 * that waits for ever on an inherited lock hangs the run.
 * stdout: "clone3kids: children=200 ok=200". */
#define _GNU_SOURCE
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop;
static void *volatile sink;

static void *churn(void *a) {
    (void)a;
    while (!stop) {
        void *p[16];
        for (int i = 0; i < 16; i++) p[i] = malloc(32 + i * 100);
        for (int i = 0; i < 16; i++) free(p[i]);
    }
    return NULL;
}

int main(void) {
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, churn, NULL);
    int ok = 0;
    for (int i = 0; i < 200; i++) {
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.exit_signal = SIGCHLD;
        long pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0) {
            for (int j = 0; j < 100; j++) {
                void *p = malloc(64 + j); /* a local: both threads store to sink */
                sink = p;
                free(p);
            }
            exit(0);
        }
        int status = 0;
        if (pid > 0 && waitpid((pid_t)pid, &status, 0) == pid && WIFEXITED(status) &&
            WEXITSTATUS(status) == 0)
            ok++;
    }
    stop = 1;
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("clone3kids: children=200 ok=%d\n", ok);
    return 0;
}
