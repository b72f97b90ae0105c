/* atfork_main: fills atfork_lib's cache, forks once, and waits for the child. Truth (see
 * atfork_lib.c): the parent ends holding exactly parent_keep's 32 blocks of 50,000 B (the
 * cache was freed by the prepare handler); the child ends holding exactly child_keep's 16
 * blocks of 30,000 B (what it inherited is the parent's). Nothing else allocates: output goes
 * through write(2), not stdio. stdout: "child <pid>\n" from the parent. */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void cache_fill(void);

int main(void) {
    cache_fill();
    pid_t child = fork();
    if (child < 0) {
        return 2;
    }
    if (child == 0) {
        return 0;
    }
    int status = 0;
    waitpid(child, &status, 0);
    char line[64];
    int n = snprintf(line, sizeof line, "child %d\n", (int)child);
    if (write(1, line, (size_t)n) != n) {
        return 3;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 4;
}
