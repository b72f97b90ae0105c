/* dropuid: a worker that drops its privileges after start, as nginx's and postgres's workers
 * do (issue 16). Started as root, it switches its effective uid to argv[1] (nobody), then
 * allocates for a while so periodic dumps fall due, and leaks 2468 bytes from
 * leak_as_worker() for its exit dump. The dump directory it started with belongs to root
 * (0700): the library must neither fail loudly there nor write where it may not.
 * stdout: "dropuid: uid <n>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void *volatile sink;

__attribute__((noinline)) static void leak_as_worker(void) {
    sink = malloc(2468);
    memset(sink, 2, 2468);
}

int main(int argc, char **argv) {
    uid_t to = argc > 1 ? (uid_t)atoi(argv[1]) : 65534;
    if (setgid(to) != 0 || setuid(to) != 0) {
        perror("setuid");
        return 2;
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do {
        for (int i = 0; i < 1000; i++) {
            sink = malloc(32 + i);
            free(sink);
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
    } while ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9 < 0.5);
    leak_as_worker();
    printf("dropuid: uid %d\n", (int)getuid());
    return 0;
}
