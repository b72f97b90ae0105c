/*
 * Benchmark: the worst pause an allocating thread sees while liboffheap dumps a table of
 * LIVE (default 1,000,000) live allocations. The main thread allocates the live set from 16
 * call sites, then a probe thread times every malloc+free pair for SECONDS while the library's
 * dumper writes periodic dumps (run with OFFHEAP_INTERVAL=1). Prints the probe's worst and
 * 99.99th percentile latency in microseconds.
 * Usage: dump_stall [live] [seconds]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

#define SITE(n) __attribute__((noinline)) static void *site##n(size_t s) { void *p = malloc(s); __asm__ volatile("" ::: "memory"); return p; }
SITE(0) SITE(1) SITE(2) SITE(3) SITE(4) SITE(5) SITE(6) SITE(7)
SITE(8) SITE(9) SITE(10) SITE(11) SITE(12) SITE(13) SITE(14) SITE(15)
static void *(*sites[16])(size_t) = {site0, site1, site2, site3, site4, site5, site6, site7,
    site8, site9, site10, site11, site12, site13, site14, site15};

static double seconds = 5;
static long buckets[64]; /* log2 microsecond buckets */
static double worst;
static long probes;

static void *probe(void *arg) {
    (void)arg;
    double end = now_us() + seconds * 1e6;
    while (1) {
        double t0 = now_us();
        if (t0 > end) break;
        void *p = malloc(32);
        ((volatile char *)p)[0] = 1;
        free(p);
        double dt = now_us() - t0;
        if (dt > worst) worst = dt;
        int b = 0;
        while (b < 63 && (1L << b) < (long)dt) b++;
        buckets[b]++;
        probes++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    long live = argc > 1 ? atol(argv[1]) : 1000000;
    if (argc > 2) seconds = atof(argv[2]);
    void **keep = malloc(sizeof(void *) * live);
    double t0 = now_us();
    for (long i = 0; i < live; i++) keep[i] = sites[i % 16](64);
    double fill = now_us() - t0;
    pthread_t t;
    pthread_create(&t, NULL, probe, NULL);
    pthread_join(t, NULL);
    long target = probes / 10000, seen = 0;
    int p9999 = 0;
    for (int b = 63; b >= 0; b--) { seen += buckets[b]; if (seen > target) { p9999 = b; break; } }
    printf("live=%ld fill_ms=%.1f probes=%ld worst_us=%.1f p99.99_us<=%ld\n", live, fill / 1e3, probes, worst, 1L << p9999);
    for (long i = 0; i < live; i++) free(keep[i]);
    free(keep);
    return 0;
}
