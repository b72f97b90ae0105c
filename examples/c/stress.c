/*
 * stress.c — concurrency stress for the interposer (issue 2 "Done when 4").
 *
 * Rounds of 8 worker threads (created and joined again every round) run a
 * seeded random mix of malloc, calloc, realloc, posix_memalign, free, mmap,
 * partial munmap, mremap (grow / shrink / move) and full munmap on their own
 * slots, fill every block with a per-slot pattern and check it before each
 * realloc and free (a corrupted block exits with status 3). Now and then a
 * worker forks and execs /bin/true, or dlopen()s the plugin library, calls
 * into it and dlclose()s it.
 *
 * At the end every block and mapping is released except a known leftover:
 *     STRESS_LEFT_MALLOC_COUNT blocks of STRESS_LEFT_MALLOC_BYTES (in stress_leftover_malloc)
 *     1 anonymous mapping of STRESS_LEFT_MMAP_PAGES pages (in stress_leftover_mmap)
 * so the outstanding totals at exit are exact. The test keeps the same
 * numbers. Nothing is printed (no stdio buffer).
 *
 * Usage: stress PLUGIN_PATH [ops_per_thread=3000] [rounds=3] [seed=1]
 * Exit status: 0 ok, 2 usage/setup error, 3 data corruption, 4 child failed.
 *
 * Build: gcc -O2 -g -pthread -o stress stress.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define NTHREADS 8
#define NSLOTS 48

#define STRESS_LEFT_MALLOC_BYTES 54321
#define STRESS_LEFT_MALLOC_COUNT 2
#define STRESS_LEFT_MMAP_PAGES 7

enum kind { EMPTY, HEAP, MAP };

struct slot {
    enum kind kind;
    unsigned char *p;
    size_t n; /* bytes (heap) or bytes of the mapping (map) */
};

static const char *plugin_path;
static long ops_per_thread = 3000;
static unsigned seed0 = 1;
static long page;
static volatile int failure; /* first failing exit status, 0 if none */

static void fail(int status)
{
    __sync_bool_compare_and_swap(&failure, 0, status);
}

static uint32_t next_rand(uint32_t *s)
{
    /* xorshift32: deterministic per thread for a given seed. */
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static unsigned char pattern(int slot)
{
    return (unsigned char)(0x40 + slot);
}

static void fill(struct slot *s, int i)
{
    memset(s->p, pattern(i), s->n);
}

static int check(const struct slot *s, int i, size_t n)
{
    for (size_t k = 0; k < n; k += 61)
        if (s->p[k] != pattern(i))
            return 0;
    return n == 0 || s->p[n - 1] == pattern(i);
}

static void release(struct slot *s, int i)
{
    if (s->kind != EMPTY && !check(s, i, s->n))
        fail(3);
    if (s->kind == HEAP)
        free(s->p);
    else if (s->kind == MAP)
        munmap(s->p, s->n);
    s->kind = EMPTY;
    s->p = NULL;
    s->n = 0;
}

/* fork + exec /bin/true from a worker thread: the child of a multithreaded
 * process must get a usable allocator (no lock held by a vanished thread). */
__attribute__((noipa)) static void spawn_true(void)
{
    pid_t pid = fork();
    if (pid < 0) {
        fail(4);
        return;
    }
    if (pid == 0) {
        /* In the child: allocate before exec, through the interposed malloc. */
        void *p = malloc(100);
        free(p);
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail(4);
}

__attribute__((noipa)) static void use_plugin(unsigned seed)
{
    void *h = dlopen(plugin_path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fail(2);
        return;
    }
    long (*work)(unsigned, int) = (long (*)(unsigned, int))dlsym(h, "plugin_work");
    if (!work || work(seed, 20) < 0)
        fail(3);
    dlclose(h);
}

static void *worker(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    uint32_t rs = (uint32_t)id * 7919u + seed0 * 104729u + 1u;
    struct slot slots[NSLOTS];
    memset(slots, 0, sizeof slots);

    for (long op = 0; op < ops_per_thread && !failure; op++) {
        uint32_t r = next_rand(&rs);
        int i = (int)(r % NSLOTS);
        struct slot *s = &slots[i];
        uint32_t what = (r >> 8) % 100;
        size_t sz = 1 + (next_rand(&rs) % 4096);
        if ((next_rand(&rs) % 64) == 0)
            sz = 1 + (next_rand(&rs) % (300 * 1024)); /* sometimes above glibc's mmap threshold */

        if (op == ops_per_thread / 2 && id % 4 == 1) {
            spawn_true(); /* 2 of the 8 workers per round */
        } else if (op % 1000 == 500) {
            use_plugin(r);
        } else if (s->kind == EMPTY) {
            /* allocate */
            switch (what % 5) {
            case 0:
                s->p = malloc(sz);
                break;
            case 1:
                s->p = calloc(1, sz);
                break;
            case 2: {
                void *q = NULL;
                if (posix_memalign(&q, (size_t)16 << (r % 6), sz) != 0)
                    q = NULL;
                s->p = q;
                break;
            }
            case 3:
                s->p = realloc(NULL, sz);
                break;
            default: {
                size_t pages = 1 + (r >> 20) % 8;
                void *q = mmap(NULL, pages * (size_t)page, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (q == MAP_FAILED) {
                    fail(2);
                    continue;
                }
                s->p = q;
                s->n = pages * (size_t)page;
                s->kind = MAP;
                fill(s, i);
                continue;
            }
            }
            if (!s->p) {
                fail(2);
                continue;
            }
            s->n = sz;
            s->kind = HEAP;
            fill(s, i);
        } else if (s->kind == HEAP && what < 40) {
            /* realloc: grow or shrink, contents preserved up to the smaller size */
            size_t keep = s->n < sz ? s->n : sz;
            if (!check(s, i, s->n))
                fail(3);
            unsigned char *q = realloc(s->p, sz);
            if (!q) {
                fail(2);
                continue;
            }
            s->p = q;
            if (!check(s, i, keep))
                fail(3);
            s->n = sz;
            fill(s, i);
        } else if (s->kind == MAP && what < 25 && s->n > (size_t)page) {
            /* partial munmap: drop the last page */
            if (!check(s, i, s->n))
                fail(3);
            munmap(s->p + s->n - page, page);
            s->n -= page;
        } else if (s->kind == MAP && what < 50) {
            /* mremap: grow (may move) or shrink */
            size_t pages = 1 + (r >> 20) % 12;
            size_t nn = pages * (size_t)page;
            size_t keep = s->n < nn ? s->n : nn;
            void *q = mremap(s->p, s->n, nn, MREMAP_MAYMOVE);
            if (q == MAP_FAILED) {
                fail(2);
                continue;
            }
            s->p = q;
            if (!check(s, i, keep))
                fail(3);
            s->n = nn;
            fill(s, i);
        } else {
            release(s, i);
        }
    }
    for (int i = 0; i < NSLOTS; i++)
        release(&slots[i], i);
    return NULL;
}

static void *volatile leftovers[STRESS_LEFT_MALLOC_COUNT + 1];

__attribute__((noipa)) static void stress_leftover_malloc(void)
{
    for (int i = 0; i < STRESS_LEFT_MALLOC_COUNT; i++) {
        leftovers[i] = malloc(STRESS_LEFT_MALLOC_BYTES);
        memset(leftovers[i], 9, STRESS_LEFT_MALLOC_BYTES);
    }
}

__attribute__((noipa)) static void stress_leftover_mmap(void)
{
    void *p = mmap(NULL, STRESS_LEFT_MMAP_PAGES * (size_t)page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        fail(2);
    else
        memset(p, 9, STRESS_LEFT_MMAP_PAGES * (size_t)page);
    leftovers[STRESS_LEFT_MALLOC_COUNT] = p;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2)
        return 2;
    plugin_path = argv[1];
    long rounds = 3;
    if (argc > 2)
        ops_per_thread = strtol(argv[2], NULL, 10);
    if (argc > 3)
        rounds = strtol(argv[3], NULL, 10);
    if (argc > 4)
        seed0 = (unsigned)strtoul(argv[4], NULL, 10);
    page = sysconf(_SC_PAGESIZE);

    for (long round = 0; round < rounds && !failure; round++) {
        pthread_t t[NTHREADS];
        for (int k = 0; k < NTHREADS; k++)
            if (pthread_create(&t[k], NULL, worker, (void *)(uintptr_t)(round * NTHREADS + k + 1)) != 0)
                return 2;
        for (int k = 0; k < NTHREADS; k++)
            pthread_join(t[k], NULL);
    }

    stress_leftover_malloc();
    stress_leftover_mmap();
    return failure;
}
