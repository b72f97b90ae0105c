/* vforkexit: a vfork child that calls exit() (issue 16): it runs the destructors — ours
 * included — in the parent's memory while the parent waits. The parent must carry on as
 * before: it allocates for another second (periodic dumps at OFFHEAP_INTERVAL=0.1 must go on
 * after the vfork) and leaks 4321 bytes from leak_after_vfork() for its exit dump.
 * stdout: "vforkexit: child status 0". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void *volatile sink;

__attribute__((noinline)) static void leak_after_vfork(void) {
    sink = malloc(4321);
    memset(sink, 1, 4321);
}

static void churn_for(double seconds) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do {
        for (int i = 0; i < 1000; i++) {
            sink = malloc(32 + i);
            free(sink);
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
    } while ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9 < seconds);
}

int main(void) {
    churn_for(0.3);
    pid_t pid = vfork();
    if (pid == 0) exit(0);
    int status = -1;
    waitpid(pid, &status, 0);
    churn_for(1.0);
    leak_after_vfork();
    printf("vforkexit: child status %d\n", WEXITSTATUS(status));
    return 0;
}
