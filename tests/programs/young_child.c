/* young_child: a forked child that lives past OFFHEAP_CHILD_MIN. It keeps early_block()'s
 * 1234 bytes, allocated at once, and late_block()'s 4321 bytes, allocated after 1.5 s; the
 * parent waits for it. Under the library (OFFHEAP_CHILD_MIN=1) the child's dump must count
 * both blocks, and name late_block only: stacks are captured from the child's first second
 * on. The child also frees a second early block at once (a record it must find again while
 * young). The parent keeps parent_block()'s 777 bytes from before the fork: the parent's, in
 * the parent's dumps, not the child's. stdout: "young_child: child status 0". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *volatile keep[3];

__attribute__((noinline)) static void *parent_block(void) {
    void *p = malloc(777);
    memset(p, 3, 777);
    return p;
}

__attribute__((noinline)) static void *early_block(void) {
    void *p = malloc(1234);
    memset(p, 1, 1234);
    return p;
}

__attribute__((noinline)) static void *late_block(void) {
    void *p = malloc(4321);
    memset(p, 2, 4321);
    return p;
}

int main(void) {
    keep[2] = parent_block();
    pid_t pid = fork();
    if (pid == 0) {
        keep[0] = early_block();
        free(early_block());
        usleep(1500000);
        keep[1] = late_block();
        exit(0);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    printf("young_child: child status %d\n", WEXITSTATUS(status));
    return 0;
}
