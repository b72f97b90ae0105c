/*
 * A leak of small blocks slower than sampling sees: for argv[1] seconds (default 4) it keeps
 * 16 blocks of 64 bytes every 10 ms, on an absolute schedule, and never frees them. Prints
 * "chunk_bytes_per_s=N" first: the bytes of glibc chunk (malloc_usable_size + the 8-byte
 * header) it leaks per second, what glibc's count of bytes in use grows by.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define PER_TICK 16
#define TICK_NS 10000000L

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 4.0;
    void *probe = malloc(64);
    if (!probe)
        return 1;
    unsigned long chunk = malloc_usable_size(probe) + 8;
    printf("chunk_bytes_per_s=%lu\n", chunk * PER_TICK * (1000000000L / TICK_NS));
    fflush(stdout);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    long ticks = (long)(seconds * 1e9 / TICK_NS);
    for (long t = 0; t < ticks; t++) {
        for (int i = 0; i < PER_TICK; i++) {
            void *volatile p = malloc(64);
            if (!p)
                return 1;
        }
        next.tv_nsec += TICK_NS;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    return 0;
}
