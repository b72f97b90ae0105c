/*
 * groundtruth.c — a program whose outstanding memory at exit is known exactly.
 *
 * Used by the offheap test suite (issue 2 "Done when 1", issue 3 "Done when 3"):
 * every leak comes from its own non-inlined function with a distinctive name
 * (`site_*`) and a size no other site uses, so per-site truth is unambiguous.
 * Everything not leaked on purpose is freed / unmapped before exit.
 *
 * The truth (bytes and counts per site) lives in the tests
 * (tests/tests/groundtruth.rs), not in this program's output: the program
 * prints nothing, so libc's stdio buffer never becomes an extra heap block.
 *
 * Build: gcc -O2 -g -pthread -o groundtruth groundtruth.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* noipa: no inlining, no cloning (.isra/.constprop names), no tail calls
 * into the site from outside — the symbol in the stack is exactly the name here. */
#define SITE __attribute__((noipa))

/* Leaked pointers are parked here so that nothing (not even valgrind) can call
 * them "definitely lost" versus "still reachable": both count as in use at exit. */
static void *volatile parked[64];
static int parked_n;

static void park(void *p)
{
    parked[parked_n++] = p;
}

/* gcc removes a malloc whose result is only freed (or not used at all);
 * passing every freed block through this volatile sink keeps the calls. */
static void *volatile escape_sink;

static void *escape(void *p)
{
    escape_sink = p;
    return escape_sink;
}

/* Touch memory so the compiler cannot drop an allocation as unused. */
static void touch(void *p, size_t n)
{
    memset(p, 0xA5, n);
}

/* ---------------- heap leaks (malloc family) ---------------- */

/* 3 blocks x 1001 bytes */
SITE void site_malloc_leak(void)
{
    for (int i = 0; i < 3; i++) {
        void *p = malloc(1001);
        touch(p, 1001);
        park(p);
    }
}

/* 2 blocks x (10 * 123) = 1230 bytes */
SITE void site_calloc_leak(void)
{
    for (int i = 0; i < 2; i++)
        park(calloc(10, 123));
}

/* grow: malloc(500) -> realloc 2500 (1 block, 2500 bytes);
 * realloc(NULL, 777) behaves like malloc (1 block, 777 bytes). */
SITE void site_realloc_leak(void)
{
    char *p = malloc(500);
    touch(p, 500);
    p = realloc(p, 2500);
    touch(p, 2500);
    park(p);
    park(realloc(NULL, 777));
}

/* shrink: malloc(4000) -> realloc 1500 (1 block, 1500 bytes) */
SITE void site_realloc_shrink_leak(void)
{
    char *p = malloc(4000);
    touch(p, 4000);
    p = realloc(p, 1500);
    park(p);
}

/* 1 block, 1234 bytes, 64-byte aligned */
SITE void site_posix_memalign_leak(void)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, 1234) != 0)
        abort();
    touch(p, 1234);
    park(p);
}

/* 1 block, 2048 bytes, 256-byte aligned */
SITE void site_aligned_alloc_leak(void)
{
    void *p = aligned_alloc(256, 2048);
    touch(p, 2048);
    park(p);
}

/* 1 block, 3333 bytes, 128-byte aligned */
SITE void site_memalign_leak(void)
{
    void *p = memalign(128, 3333);
    touch(p, 3333);
    park(p);
}

/* 1 block, 5000 bytes, page aligned */
SITE void site_valloc_leak(void)
{
    void *p = valloc(5000);
    touch(p, 5000);
    park(p);
}

/* 1 block of 300000 bytes: above glibc's mmap threshold, so glibc serves it
 * with its own internal mmap. It must count as malloc, once, and never as
 * an untracked mapping. */
SITE void site_big_malloc_leak(void)
{
    void *p = malloc(300000);
    touch(p, 300000);
    park(p);
}

/* Run in 4 threads that exit before main does: 2 blocks x 611 bytes each,
 * 8 blocks / 4888 bytes in total. */
SITE void site_thread_leak(void)
{
    for (int i = 0; i < 2; i++) {
        void *p = malloc(611);
        touch(p, 611);
        /* park() is not thread-safe; the caller serializes with a mutex. */
        park(p);
    }
}

static pthread_mutex_t park_lock = PTHREAD_MUTEX_INITIALIZER;

static void *thread_main(void *arg)
{
    (void)arg;
    /* Freed churn inside the thread, then the leak. */
    for (int i = 0; i < 100; i++)
        free(escape(malloc(64 + i)));
    pthread_mutex_lock(&park_lock);
    site_thread_leak();
    pthread_mutex_unlock(&park_lock);
    return NULL;
}

/* ---------------- everything else: allocated and freed ---------------- */

SITE void freed_churn(void)
{
    for (int i = 0; i < 1000; i++) {
        char *a = escape(malloc((size_t)(i % 97) + 1));
        char *b = escape(calloc((size_t)(i % 13) + 1, 8));
        a = escape(realloc(a, (size_t)(i % 211) + 1));
        void *c = NULL;
        if (posix_memalign(&c, 32, 100) != 0)
            abort();
        escape(c);
        void *d = escape(aligned_alloc(64, 128));
        void *e = escape(memalign(16, 48));
        void *f = escape(valloc(10));
        char *s = escape(strdup("groundtruth"));
        free(a);
        free(b);
        free(c);
        free(d);
        free(e);
        free(f);
        free(s);
    }
    free(NULL);
    /* realloc(p, 0) frees p in glibc (returns NULL). */
    void *z = escape(malloc(10));
    z = escape(realloc(z, 0));
    free(z);
    /* malloc(0) returns a unique pointer that must be freed like any other. */
    free(escape(malloc(0)));
    /* A big block freed again (glibc mmap-backed chunk). */
    free(escape(malloc(1 << 20)));
    /* An anonymous mapping fully unmapped. */
    void *m = mmap(NULL, 5 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        abort();
    touch(m, 5 * 4096);
    munmap(m, 5 * 4096);
    /* Unmapped in two pieces. */
    char *m2 = mmap(NULL, 6 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m2 == MAP_FAILED)
        abort();
    munmap(m2, 2 * 4096);
    munmap(m2 + 2 * 4096, 4 * 4096);
}

/* ---------------- mmap leaks ---------------- */

static long page;

/* 1 anonymous committed mapping of 3 pages. */
SITE void site_mmap_leak(void)
{
    void *p = mmap(NULL, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        abort();
    touch(p, 3 * page);
}

/* 8 pages, then pages [2,4) unmapped and the last page unmapped:
 * what is left is [0,2) and [4,7): 2 intervals, 5 pages. */
SITE void site_mmap_partial_munmap(void)
{
    char *p = mmap(NULL, 8 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        abort();
    touch(p, 8 * page);
    munmap(p + 2 * page, 2 * page); /* split */
    munmap(p + 7 * page, page);     /* trim the tail */
}

/* 2 pages grown to 9 pages with mremap (may move): 1 interval, 9 pages.
 * A guard mapping right after the first one forces the move. */
SITE void site_mremap_grow(void)
{
    char *p = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        abort();
    /* Free pages [2,4) again so only 2 pages are ours, then grow. */
    munmap(p + 2 * page, 2 * page);
    touch(p, 2 * page);
    char *q = mremap(p, 2 * page, 9 * page, MREMAP_MAYMOVE);
    if (q == MAP_FAILED)
        abort();
    touch(q, 9 * page);
}

/* The base of the MAP_FIXED overlay: 10 pages; after the overlay of pages
 * [3,6) what is left of it is [0,3) and [6,10): 2 intervals, 7 pages. */
SITE char *site_mmap_fixed_base(void)
{
    char *p = mmap(NULL, 10 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        abort();
    touch(p, 10 * page);
    return p;
}

/* MAP_FIXED over pages [3,6) of the base: 1 interval, 3 pages. */
SITE void site_mmap_fixed_overlay(char *base)
{
    void *q = mmap(base + 3 * page, 3 * page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (q == MAP_FAILED)
        abort();
    touch(q, 3 * page);
}

/* What the Go runtime does: reserve PROT_NONE, then commit part of it with a
 * read-write MAP_FIXED mapping. The reservation is 16 pages; pages [4,8)
 * are committed. Left: reserved [0,4) and [8,16) (2 intervals, 12 pages,
 * kind mmap_reserved) attributed here. */
SITE char *site_mmap_reserve(void)
{
    char *p = mmap(NULL, 16 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        abort();
    return p;
}

/* The commit: 1 interval, 4 pages, kind mmap. */
SITE void site_mmap_commit(char *reservation)
{
    void *q = mmap(reservation + 4 * page, 4 * page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (q == MAP_FAILED)
        abort();
    touch(q, 4 * page);
}

/* A file-backed mapping of 1 page of our own executable: kind mmap_file. */
SITE void site_mmap_file_leak(void)
{
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        abort();
    void *p = mmap(NULL, page, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        abort();
    close(fd);
}

int main(void)
{
    /* No stdio is used at all; this keeps it that way even if a later edit
     * prints something (an unbuffered stream never mallocs a buffer). */
    setvbuf(stdout, NULL, _IONBF, 0);
    page = sysconf(_SC_PAGESIZE);

    freed_churn();

    site_malloc_leak();
    site_calloc_leak();
    site_realloc_leak();
    site_realloc_shrink_leak();
    site_posix_memalign_leak();
    site_aligned_alloc_leak();
    site_memalign_leak();
    site_valloc_leak();
    site_big_malloc_leak();

    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        if (pthread_create(&t[i], NULL, thread_main, NULL) != 0)
            abort();
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);

    site_mmap_leak();
    site_mmap_partial_munmap();
    site_mremap_grow();
    site_mmap_fixed_overlay(site_mmap_fixed_base());
    site_mmap_commit(site_mmap_reserve());
    site_mmap_file_leak();

    freed_churn();
    return 0;
}
