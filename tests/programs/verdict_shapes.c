/*
 * Memory shapes with known verdicts, for the reporter's verdict tests (issue 13 "Done when 2").
 *
 *   shapes <seconds>: three threads at once
 *     stop_leak_add   50 blocks/s of 1000 bytes for the first 8 s, never freed, then no
 *                     traffic at all (a leak that stopped: `leak`)
 *     burst_alloc     every 4 s, 200 blocks of 10000 bytes, all freed 1 s later
 *                     (recurring short-lived bursts: `transient`)
 *     lru_put         100 inserts/s of 2048 bytes into a 300-entry cache that evicts its
 *                     oldest entry beyond capacity (an LRU: `bounded`)
 *   fill <seconds>:   cache_fill_put, 100 inserts/s of 2048 bytes into a cache too large to
 *                     fill within the run (a filling cache: never `leak` from two dumps)
 *
 * Work is paced against the clock, so counts after t seconds are exact.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double seconds;
static struct timespec start;

static double elapsed(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - start.tv_sec) + (t.tv_nsec - start.tv_nsec) / 1e9;
}

/* Calls f(i) so that after t seconds floor(t * rate) calls were made, until `until`. */
static void pace(double rate, double until, void (*f)(long)) {
    long n = 0;
    while (1) {
        double e = elapsed();
        if (e > until) e = until;
        long target = (long)(e * rate);
        for (; n < target; n++) f(n);
        if (e >= until) return;
        usleep(5000);
    }
}

static void *volatile leaked[1000];

__attribute__((noinline)) static void stop_leak_add(long i) {
    char *p = malloc(1000);
    memset(p, 1, 1000);
    leaked[i % 1000] = p; /* the older ones are simply lost */
}

static void *stop_leak(void *arg) {
    (void)arg;
    pace(50, 8, stop_leak_add);
    return NULL;
}

static void *burst_blocks[200];

__attribute__((noinline)) static void burst_alloc(void) {
    for (int i = 0; i < 200; i++) {
        burst_blocks[i] = malloc(10000);
        memset(burst_blocks[i], 2, 10000);
    }
}

static void *burst(void *arg) {
    (void)arg;
    for (double at = 1; at + 1 < seconds; at += 4) {
        while (elapsed() < at) usleep(5000);
        burst_alloc();
        while (elapsed() < at + 1) usleep(5000);
        for (int i = 0; i < 200; i++) free(burst_blocks[i]);
    }
    return NULL;
}

#define LRU_CAP 300
static void *lru[LRU_CAP];

__attribute__((noinline)) static void lru_put(long i) {
    long slot = i % LRU_CAP;
    free(lru[slot]); /* evicts the oldest entry once full */
    lru[slot] = malloc(2048);
    memset(lru[slot], 3, 2048);
}

static void *lru_thread(void *arg) {
    (void)arg;
    pace(100, seconds, lru_put);
    return NULL;
}

static void *volatile fill_cache[100000]; /* volatile: gcc deletes a malloc whose result is never read */

__attribute__((noinline)) static void cache_fill_put(long i) {
    char *p = malloc(2048);
    memset(p, 4, 2048);
    fill_cache[i] = p;
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "shapes") && strcmp(argv[1], "fill"))) {
        fprintf(stderr, "usage: verdict_shapes shapes|fill <seconds>\n");
        return 2;
    }
    seconds = atof(argv[2]);
    clock_gettime(CLOCK_MONOTONIC, &start);
    if (!strcmp(argv[1], "fill")) {
        pace(100, seconds, cache_fill_put);
        return 0;
    }
    pthread_t t[3];
    pthread_create(&t[0], NULL, stop_leak, NULL);
    pthread_create(&t[1], NULL, burst, NULL);
    pthread_create(&t[2], NULL, lru_thread, NULL);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    return 0;
}
