/* spawn: process shapes other than a plain fork (issue 7).
 *
 * usage: spawn MODE [N]
 *   leaf           leaf_leak() leaks exactly 4321 bytes, prints "leaf <N>", exit(0)
 *   vfork N        N times: vfork + execv(self, "leaf", i); then one vfork child that
 *                  _exit(7)s without exec'ing. Prints the leaves' statuses.
 *   spawn N        N times posix_spawn(self, "leaf", i), one at a time, each waited for.
 *   chain N        exec chain: chain_leak() leaks 1000 bytes, then execv(self, "chain",
 *                  N-1); at N == 0 prints "chain end" and exit(0)s. One pid, N+1 images.
 *   daemon         double fork: the child setsid()s, forks the daemon and _exit(0)s at
 *                  once; the daemon (an orphan) leaks 2222 bytes in daemon_leak(), sends
 *                  its pid through a pipe and exit(0)s. The parent waits for EOF on the
 *                  pipe, which comes only when the daemon has fully exited (after its exit
 *                  dump), and prints "daemon done".
 * Pids go to stderr ("pid <role> <pid>") so stdout is identical with and without the library.
 */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static void *volatile sink;
static char self[4096];

__attribute__((noinline)) static void leaf_leak(void) { sink = malloc(4321); memset(sink, 2, 4321); }
__attribute__((noinline)) static void chain_leak(void) { sink = malloc(1000); memset(sink, 3, 1000); }
__attribute__((noinline)) static void daemon_leak(void) { sink = malloc(2222); memset(sink, 4, 2222); }

static int status_of(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv) {
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 2;
    self[n] = 0;
    const char *mode = argc > 1 ? argv[1] : "";
    int count = argc > 2 ? atoi(argv[2]) : 0;
    char num[32];

    if (!strcmp(mode, "leaf")) {
        leaf_leak();
        printf("leaf %d\n", count);
        return 0;
    }
    if (!strcmp(mode, "vfork")) {
        for (int i = 0; i < count; i++) {
            snprintf(num, sizeof num, "%d", i);
            fflush(stdout);
            pid_t pid = vfork();
            if (pid == 0) {
                char *av[] = {self, "leaf", num, NULL};
                execv(self, av);
                _exit(127);
            }
            fprintf(stderr, "pid leaf %d\n", (int)pid);
            printf("vfork leaf %d status %d\n", i, status_of(pid));
        }
        pid_t pid = vfork();
        if (pid == 0) _exit(7);
        printf("vfork _exit status %d\n", status_of(pid));
        return 0;
    }
    if (!strcmp(mode, "spawn")) {
        for (int i = 0; i < count; i++) {
            snprintf(num, sizeof num, "%d", i);
            fflush(stdout);
            char *av[] = {self, "leaf", num, NULL};
            pid_t pid;
            int rc = posix_spawn(&pid, self, NULL, NULL, av, environ);
            if (rc != 0) { printf("posix_spawn failed %d\n", rc); return 1; }
            fprintf(stderr, "pid leaf %d\n", (int)pid);
            printf("spawn leaf %d status %d\n", i, status_of(pid));
        }
        return 0;
    }
    if (!strcmp(mode, "chain")) {
        chain_leak();
        if (count == 0) {
            printf("chain end\n");
            return 0;
        }
        usleep(400000); /* long enough for a periodic dump of every image, on a loaded machine too */
        snprintf(num, sizeof num, "%d", count - 1);
        char *av[] = {self, "chain", num, NULL};
        fflush(stdout);
        execv(self, av);
        return 127;
    }
    if (!strcmp(mode, "daemon")) {
        int fds[2];
        if (pipe(fds) != 0) return 2;
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            setsid();
            pid_t middle = getpid();
            pid_t d = fork();
            if (d != 0) _exit(d > 0 ? 0 : 1);
            /* the daemon: reparented once its parent has _exit'ed */
            close(fds[0]);
            while (getppid() == middle) usleep(1000);
            daemon_leak();
            pid_t me = getpid();
            if (write(fds[1], &me, sizeof me) != sizeof me) exit(3);
            exit(0);
        }
        close(fds[1]);
        printf("daemon intermediate status %d\n", status_of(child));
        pid_t d = 0;
        if (read(fds[0], &d, sizeof d) != sizeof d) { printf("no daemon pid\n"); return 1; }
        char c;
        while (read(fds[0], &c, 1) > 0) {} /* EOF: the daemon is gone */
        fprintf(stderr, "pid daemon %d\npid intermediate %d\n", (int)d, (int)child);
        printf("daemon done\n");
        return 0;
    }
    fprintf(stderr, "usage: spawn leaf|vfork|spawn|chain|daemon [N]\n");
    return 2;
}
