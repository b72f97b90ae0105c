/*
 * Benchmark workload "tcache" (issue 14): malloc+free pairs that stay on glibc's fast path.
 * Sizes are 16-1,040 B uniformly (the tcache range), 1 in 256 up to 68 KiB; each allocation
 * is made from a random call depth of 0-11 non-inlined frames; each thread keeps only a ring
 * of RING live blocks (the oldest is freed before the next is allocated), so most frees land
 * in the thread's tcache and most mallocs are served from it. What a pair costs natively is
 * then a few tens of ns, and a tracker's per-call cost and cross-thread traffic show plainly.
 *
 * The loop is timed inside the program, so start-up, the library's dumper and exit dump are
 * not counted. stdout, one line per thread then a total line:
 *   tcache: thread=T pairs=N wall_ns=W cpu_ns=C ns_per_pair=X
 *   tcache: threads=T pairs_per_thread=N ring=R cpus=P wall_ns=W ns_per_pair=X cpu_ns_per_pair=Y checksum=K
 * Total ns_per_pair is core-ns per pair: wall time from the common start to the last thread's
 * end, times the cores the threads could use (min(threads, cpus)), over all pairs. It equals
 * the 1-thread latency and stays flat as threads are added when nothing is shared; it grows
 * with contention, including time a thread spends blocked (which cpu_ns_per_pair misses).
 * Usage: tcache [threads=1] [pairs_per_thread=4000000] [ring=128]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 256

struct job {
    long pairs;
    int ring;
    uint64_t seed;
    uint64_t wall_ns, cpu_ns;
    uint64_t checksum;
    char pad[64]; /* jobs are written at the end only; keep neighbours off each other's line */
};

static pthread_barrier_t start_line;

static uint64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Every level is a real frame (no inlining, cloning or tail call), so a stack-walking tracker
 * pays for 0-11 extra frames as it would in a real program. */
__attribute__((noinline, noclone)) static void *alloc_at_depth(int depth, size_t size) {
    if (depth == 0) {
        char *p = malloc(size);
        if (p) *(volatile char *)p = 1; /* touch it, as a program would */
        return p;
    }
    void *p = alloc_at_depth(depth - 1, size);
    __asm__ volatile("" ::: "memory");
    return p;
}

static void *worker(void *arg) {
    struct job *job = arg;
    uint64_t rng = job->seed, checksum = 0;
    void **ring = calloc((size_t)job->ring, sizeof *ring);
    if (!ring) abort();
    pthread_barrier_wait(&start_line);
    uint64_t w0 = now_ns(CLOCK_MONOTONIC), c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    for (long i = 0, slot = 0; i < job->pairs; i++) {
        /* One xorshift draw per pair decides size and depth, so the generator costs little
         * next to the allocator. */
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        size_t size = (rng & 255) == 0 ? 1041 + (rng >> 8) % (68 * 1024 - 1040)
                                       : 16 + (rng >> 8) % 1025;
        int depth = (int)((rng >> 40) % 12);
        free(ring[slot]);
        ring[slot] = alloc_at_depth(depth, size);
        checksum += (uintptr_t)ring[slot] >> 4 & 0xff;
        if (++slot == job->ring) slot = 0;
    }
    job->wall_ns = now_ns(CLOCK_MONOTONIC) - w0;
    job->cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
    for (int s = 0; s < job->ring; s++) free(ring[s]);
    free(ring);
    job->checksum = checksum;
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    long pairs = argc > 2 ? atol(argv[2]) : 4000000;
    int ring = argc > 3 ? atoi(argv[3]) : 128;
    if (threads < 1 || threads > MAX_THREADS || pairs < 1 || ring < 1) {
        fprintf(stderr, "usage: tcache [threads 1-%d] [pairs_per_thread] [ring]\n", MAX_THREADS);
        return 2;
    }
    static pthread_t tid[MAX_THREADS];
    static struct job jobs[MAX_THREADS];
    pthread_barrier_init(&start_line, NULL, (unsigned)threads + 1);
    for (int t = 0; t < threads; t++) {
        jobs[t] = (struct job){.pairs = pairs, .ring = ring, .seed = 0x9E3779B97F4A7C15ull * (uint64_t)(t + 1)};
        if (pthread_create(&tid[t], NULL, worker, &jobs[t]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    pthread_barrier_wait(&start_line);
    uint64_t w0 = now_ns(CLOCK_MONOTONIC);
    for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    /* The joins end no earlier than the last loop; what each thread does after its loop
     * (freeing one ring) is noise next to millions of pairs. */
    uint64_t wall = now_ns(CLOCK_MONOTONIC) - w0, cpu = 0, checksum = 0;
    for (int t = 0; t < threads; t++) {
        printf("tcache: thread=%d pairs=%ld wall_ns=%llu cpu_ns=%llu ns_per_pair=%.2f\n", t, pairs,
               (unsigned long long)jobs[t].wall_ns, (unsigned long long)jobs[t].cpu_ns,
               (double)jobs[t].wall_ns / (double)pairs);
        cpu += jobs[t].cpu_ns;
        checksum += jobs[t].checksum;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long cores = threads < cpus ? threads : cpus;
    double total = (double)pairs * threads;
    printf("tcache: threads=%d pairs_per_thread=%ld ring=%d cpus=%ld wall_ns=%llu ns_per_pair=%.2f "
           "cpu_ns_per_pair=%.2f checksum=%llu\n",
           threads, pairs, ring, cpus, (unsigned long long)wall, (double)wall * (double)cores / total,
           (double)cpu / total, (unsigned long long)checksum);
    return 0;
}
