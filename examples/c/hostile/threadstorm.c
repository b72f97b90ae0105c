/* threadstorm: 10,000 threads created and exiting (issue 7).
 *
 * usage: threadstorm THREADS BATCH
 * Threads are created in batches of BATCH (half joinable, half detached) and each one
 * mallocs, reallocs and frees a few blocks (tcache-sized and mmap-sized) and mmaps/munmaps
 * a page, then exits. Nothing is leaked by storm_thread. The main thread waits for the
 * detached ones through a counter.
 * stdout: "threadstorm: threads=N sum=<hex>" (deterministic).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static atomic_ulong sum;
static atomic_int finished;

static void *storm_thread(void *arg) {
    unsigned long id = (unsigned long)arg;
    char *a = malloc(32 + id % 1000);
    char *b = calloc(1, 200000 + id % 7);
    memset(a, (int)(id & 0xff), 32);
    a = realloc(a, 5000);
    void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED) munmap(m, 4096);
    atomic_fetch_add(&sum, (unsigned char)a[31] + (unsigned long)b[100] + id);
    free(a);
    free(b);
    atomic_fetch_add(&finished, 1);
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10000;
    int batch = argc > 2 ? atoi(argv[2]) : 100;
    pthread_attr_t det;
    pthread_attr_init(&det);
    pthread_attr_setdetachstate(&det, PTHREAD_CREATE_DETACHED);
    pthread_t *t = calloc((size_t)batch, sizeof *t);
    int created = 0;
    while (created < n) {
        int k = 0, want = 0;
        for (; k < batch && created < n; k++, created++) {
            int detached = created & 1;
            pthread_t tid;
            int rc = pthread_create(detached ? &tid : &t[k], detached ? &det : NULL, storm_thread,
                                    (void *)(unsigned long)created);
            if (rc != 0) { printf("pthread_create failed at %d: %d\n", created, rc); return 1; }
            if (detached) t[k] = 0;
            want++;
        }
        for (int j = 0; j < k; j++)
            if (t[j]) pthread_join(t[j], NULL);
        while (atomic_load(&finished) < created) usleep(100);
        (void)want;
    }
    free(t);
    /* detached threads may still be tearing down: give them a moment to be gone */
    usleep(50000);
    printf("threadstorm: threads=%d sum=%lx\n", n, atomic_load(&sum));
    return 0;
}
