/* fdlist: what the program sees of its own descriptors after the library has been working
 * (issue 16): it allocates for a while (dumps fall due at OFFHEAP_INTERVAL=0.1), optionally
 * from a second thread, then prints its /proc/self/fd entries (number -> target), its
 * thread count and the lowest number open() gives it. All must be what they are without the
 * library (the listing's own descriptor excepted).
 * argv: "threads" to allocate from a second thread too. */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void *volatile sink;

static void churn_for(double seconds) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do {
        for (int i = 0; i < 1000; i++) {
            /* a local, not `free(sink)`: both threads store to sink, and freeing what the
             * other thread just stored there is a double free */
            void *p = malloc(32 + i);
            sink = p;
            free(p);
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
    } while ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9 < seconds);
}

static void *worker(void *a) {
    (void)a;
    churn_for(0.6);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 && strcmp(argv[1], "threads") == 0;
    pthread_t t;
    if (threads) pthread_create(&t, NULL, worker, NULL);
    churn_for(0.6);
    if (threads) pthread_join(t, NULL);
    DIR *d = opendir("/proc/self/fd");
    int own = dirfd(d);
    struct dirent *e;
    char names[64][300];
    int n = 0;
    while ((e = readdir(d)) && n < 64) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == own) continue;
        char path[64], target[256] = "";
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(path, target, sizeof target - 1);
        if (k > 0) target[k] = 0;
        snprintf(names[n++], 300, "%s -> %s", e->d_name, target);
    }
    closedir(d);
    qsort(names, n, 300, (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < n; i++) printf("fd %s\n", names[i]);
    int fd = open("/dev/null", O_RDONLY);
    printf("first open: %d\n", fd);
    return 0;
}
