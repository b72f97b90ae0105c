/* alone SECONDS: a single-threaded program that allocates and, between rounds, asks the
 * kernel for what only a single-threaded process may have: unshare(CLONE_THREAD), a no-op
 * that fails with EINVAL when the process has another thread (as unshare(CLONE_NEWUSER),
 * which bwrap and unshare(1) call, does). Prints "einval N": 0 without the library, and it
 * must stay 0 with periodic dumps, which a single-threaded program gets on a thread of ours
 * that lives only while one is written. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 2;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    void *keep[512] = {0};
    unsigned r = 1;
    long einval = 0;
    do {
        for (int i = 0; i < 200; i++) {
            r = r * 1103515245u + 12345u;
            int k = (r >> 8) % 512;
            free(keep[k]);
            keep[k] = malloc(16 + (r >> 16) % 4000);
        }
        if (unshare(CLONE_THREAD) != 0 && errno == EINVAL) einval++;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
    for (int k = 0; k < 512; k++) free(keep[k]);
    printf("einval %ld\n", einval);
    return 0;
}
