/* rawexit joined|strict|later: the program's threads all leave with the raw exit system
 * call, which ends only the calling thread; the process ends when its last thread has, with
 * that thread's code as its status.
 *   joined: a worker is started and joined, main prints "bye" and leaves with
 *           syscall(SYS_exit, 5): status 5.
 *   strict: after a worker was joined, main enters strict seccomp (read, write, _exit and
 *           sigreturn only, as sandboxed workers do), allocates, writes "done in sandbox"
 *           and leaves with syscall(SYS_exit, 0): status 0.
 *   later:  main leaves first with syscall(SYS_exit, 7); a worker allocates for 200 ms more,
 *           prints "worker leaves" and leaves with syscall(SYS_exit, 3): status 3.
 *   returns: as later, but the worker returns from its function (glibc's exit, code 0):
 *           status 0, not main's 7.
 * A thread of the library's own must not keep the process alive after that. */
#define _GNU_SOURCE
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static void *worker(void *arg) {
    (void)arg;
    return malloc(100);
}

/* Allocates for 200 ms after main left, then leaves: by the raw exit call with code 3 when
 * `raw` is set, else by returning (glibc's thread exit, code 0). */
static void *late_worker(void *raw) {
    for (int i = 0; i < 200; i++) {
        free(malloc(64 + i));
        usleep(1000);
    }
    printf(raw ? "worker leaves\n" : "worker returns\n");
    fflush(stdout);
    if (raw) syscall(SYS_exit, 3);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "later") == 0 || strcmp(argv[1], "returns") == 0)) {
        pthread_t late;
        void *raw = strcmp(argv[1], "later") == 0 ? (void *)1 : NULL;
        pthread_create(&late, NULL, late_worker, raw);
        syscall(SYS_exit, 7);
    }
    int strict = argc > 1 && strcmp(argv[1], "strict") == 0;
    pthread_t t;
    void *r;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, &r);
    free(r);
    if (!strict) {
        printf("bye\n");
        fflush(stdout);
        syscall(SYS_exit, 5);
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0) {
        perror("prctl");
        return 1;
    }
    void *volatile p = malloc(32);
    free(p);
    const char msg[] = "done in sandbox\n";
    write(1, msg, sizeof msg - 1);
    syscall(SYS_exit, 0);
    return 99;
}
