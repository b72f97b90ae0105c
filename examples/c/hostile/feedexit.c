/* feedexit [thread]: writes 1000 lines to libfeed's child (`wc -c`, which prints the byte
 * count, 8890, when its input ends) and returns from main; with `thread`, an idle thread is
 * alive at the exit. libfeed's destructor, which runs after liboffheap's (a dependency is
 * loaded before the preload and finalized after it), pcloses the pipe: the process ends only
 * if that close reaches the descriptor table the other thread shares. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void feed_line(const char *s);

static void *idle(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv) {
    pthread_t t;
    if (argc > 1) pthread_create(&t, NULL, idle, NULL);
    for (int i = 0; i < 1000; i++) {
        char *line = malloc(64);
        snprintf(line, 64, "line %d\n", i);
        feed_line(line);
        free(line);
    }
    return 0;
}
