/* edges: allocation edge cases whose results must be exactly glibc's (issue 7).
 *
 * Every case prints what the program observes (NULL or not, errno, return values, usable
 * sizes, alignment, contents); the test compares stdout byte for byte with and without
 * liboffheap. Nothing printed depends on addresses.
 * Covered: calloc/reallocarray overflow; posix_memalign with invalid alignments (EINVAL,
 * errno untouched); aligned_alloc/memalign with odd sizes and alignments; realloc(p, 0),
 * realloc(NULL, 0), malloc(0); frees, reallocs and malloc_usable_size of blocks the library
 * never saw (__libc_malloc/__libc_memalign, and blocks from libearly's constructor when it is
 * preloaded first); malloc_usable_size of every kind of block; 1 GiB, 3 GiB and absurd
 * sizes; errno preserved by successful calls; mmap/mremap/munmap edge arguments.
 * Ends with "edges: done".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_calloc(size_t, size_t);
/* From libearly.so (linked; the test also preloads it ahead of liboffheap.so). */
extern void *early_blocks[4];

static void *volatile sink;

#define SHOW(label, ptr) \
    printf("%-40s %s errno=%s\n", label, (ptr) ? "ptr " : "NULL", errname(errno))

static const char *errname(int e) {
    switch (e) {
    case 0: return "0";
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    case 4242: return "4242";
    default: { static char b[32]; snprintf(b, sizeof b, "%d", e); return b; }
    }
}

static int aligned(void *p, size_t a) { return p && ((uintptr_t)p % a) == 0; }

/* Exact usable sizes are printed only where glibc's answer depends on the size alone
 * (malloc, calloc: chunk rounding or page rounding). For aligned and reallocated blocks it
 * also depends on the heap's layout (split-off padding, in-place growth), which any thread
 * creation changes, so only the contract is printed: usable >= asked. */
static void usable_ok(const char *label, void *p, size_t asked) {
    size_t u = malloc_usable_size(p);
    printf("%-40s ok=%d\n", label, p ? u >= asked && u < asked + 2 * 1048576 + 8192 : u == 0);
}
static void usable(const char *label, void *p, size_t asked) {
    size_t u = malloc_usable_size(p);
    printf("%-40s usable=%zu ok=%d\n", label, u, p ? u >= asked : u == 0);
}

int main(void) {
    void *p, *q;
    int rc;

    /* glibc raises its mmap threshold when a mmapped block is freed, to that block's size;
     * an aligned mmapped block's size depends on where the kernel put it (ASLR), so the
     * threshold, and with it whether a later 1 MiB malloc is mmapped, would vary from run to
     * run even without the library. A fixed threshold makes the usable sizes deterministic. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);

    /* --- overflow --- */
    errno = 0; p = calloc(SIZE_MAX / 2 + 2, 2); SHOW("calloc(SIZE_MAX/2+2, 2)", p);
    errno = 0; p = calloc(SIZE_MAX, SIZE_MAX); SHOW("calloc(SIZE_MAX, SIZE_MAX)", p);
    errno = 0; p = calloc((size_t)1 << 33, (size_t)1 << 33); SHOW("calloc(2^33, 2^33)", p);
    errno = 0; p = calloc(0, SIZE_MAX); SHOW("calloc(0, SIZE_MAX)", p); free(p);
    q = malloc(64); memset(q, 0x61, 64);
    errno = 0; p = reallocarray(q, SIZE_MAX / 2, 3); SHOW("reallocarray(q, SIZE_MAX/2, 3)", p);
    printf("%-40s %d\n", "old block intact", ((char *)q)[63] == 0x61);
    errno = 0; p = reallocarray(q, 16, 8); SHOW("reallocarray(q, 16, 8)", p);
    printf("%-40s %d\n", "contents kept", p && ((char *)p)[63] == 0x61);
    usable_ok("usable reallocarray", p, 128);
    free(p);
    errno = 0; p = reallocarray(NULL, 10, 10); SHOW("reallocarray(NULL, 10, 10)", p); free(p);

    /* --- absurd sizes --- */
    errno = 0; p = malloc(SIZE_MAX); SHOW("malloc(SIZE_MAX)", p);
    errno = 0; p = malloc((size_t)PTRDIFF_MAX + 1); SHOW("malloc(PTRDIFF_MAX+1)", p);
    errno = 0; p = malloc(SIZE_MAX - 4095); SHOW("malloc(SIZE_MAX-4095)", p);
    q = malloc(10);
    errno = 0; p = realloc(q, SIZE_MAX); SHOW("realloc(q, SIZE_MAX)", p);
    free(q);
    errno = 0; p = memalign(64, SIZE_MAX - 10); SHOW("memalign(64, SIZE_MAX-10)", p);
    errno = 0; p = aligned_alloc(4096, SIZE_MAX - 4095); SHOW("aligned_alloc(4096, SIZE_MAX-4095)", p);
    errno = 0; p = valloc(SIZE_MAX); SHOW("valloc(SIZE_MAX)", p);
    errno = 0; p = pvalloc(SIZE_MAX); SHOW("pvalloc(SIZE_MAX)", p);
    errno = 4242; p = NULL; rc = posix_memalign(&p, 64, SIZE_MAX);
    printf("%-40s rc=%s p=%s errno=%s\n", "posix_memalign(64, SIZE_MAX)", errname(rc), p ? "ptr" : "NULL", errname(errno));

    /* --- posix_memalign alignments --- */
    size_t aligns[] = {0, 1, 2, 3, 4, 7, 8, 12, 16, 24, 48, 100, 4096, 4097, (size_t)1 << 20, (size_t)1 << 31, SIZE_MAX};
    for (size_t i = 0; i < sizeof aligns / sizeof *aligns; i++) {
        void *r = (void *)1;
        errno = 4242;
        rc = posix_memalign(&r, aligns[i], 100);
        char label[64];
        snprintf(label, sizeof label, "posix_memalign(%zu, 100)", aligns[i]);
        printf("%-40s rc=%s untouched=%d aligned=%d errno=%s\n", label, errname(rc), r == (void *)1,
               rc == 0 && aligned(r, aligns[i]), errname(errno));
        if (rc == 0) { usable_ok("  usable", r, 100); free(r); }
    }

    /* --- aligned_alloc / memalign odd cases --- */
    size_t aa[][2] = {{64, 100}, {64, 64}, {3, 16}, {0, 16}, {1, 1}, {16, 0}, {4096, 1}, {4096, 4095},
                      {24, 48}, {(size_t)1 << 21, 3}, {SIZE_MAX / 2 + 1, 8}};
    for (size_t i = 0; i < sizeof aa / sizeof *aa; i++) {
        char label[64];
        errno = 4242;
        p = aligned_alloc(aa[i][0], aa[i][1]);
        snprintf(label, sizeof label, "aligned_alloc(%zu, %zu)", aa[i][0], aa[i][1]);
        printf("%-40s %s aligned=%d errno=%s\n", label, p ? "ptr " : "NULL",
               aa[i][0] && (aa[i][0] & (aa[i][0] - 1)) == 0 ? aligned(p, aa[i][0]) : p != NULL, errname(errno));
        if (p) { usable_ok("  usable", p, aa[i][1]); free(p); }
        errno = 4242;
        p = memalign(aa[i][0], aa[i][1]);
        snprintf(label, sizeof label, "memalign(%zu, %zu)", aa[i][0], aa[i][1]);
        printf("%-40s %s errno=%s\n", label, p ? "ptr " : "NULL", errname(errno));
        if (p) { usable_ok("  usable", p, aa[i][1]); free(p); }
    }

    /* --- zero sizes and realloc(p, 0) --- */
    errno = 4242; p = malloc(0); SHOW("malloc(0)", p); usable("  usable malloc(0)", p, 0);
    errno = 4242; q = realloc(p, 0); SHOW("realloc(p, 0)", q); free(q);
    errno = 4242; p = realloc(NULL, 0); SHOW("realloc(NULL, 0)", p); usable("  usable", p, 0);
    errno = 4242; q = realloc(p, 100); SHOW("realloc(that, 100)", q); free(q);
    errno = 4242; p = calloc(0, 0); SHOW("calloc(0, 0)", p); free(p);
    errno = 4242; p = valloc(0); SHOW("valloc(0)", p); free(p);
    errno = 4242; p = pvalloc(0); SHOW("pvalloc(0)", p); usable_ok("  usable pvalloc(0)", p, 0); free(p);
    errno = 4242; free(NULL); printf("%-40s errno=%s\n", "free(NULL)", errname(errno));
    printf("%-40s usable=%zu\n", "malloc_usable_size(NULL)", malloc_usable_size(NULL));
    p = realloc(malloc(300000), 0); /* an mmap-backed block */
    printf("%-40s %s\n", "realloc(big, 0)", p ? "ptr" : "NULL");
    free(p);

    /* --- usable size of every kind of block --- */
    size_t sizes[] = {1, 24, 25, 1000, 1032, 1033, 65536, 131072, 131073, 1 << 20, 5000000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        char label[64];
        size_t n = sizes[i];
        void *m = malloc(n), *c = calloc(1, n), *r = realloc(malloc(n / 2 + 1), n);
        void *ma = memalign(256, n), *aa2 = aligned_alloc(64, n), *v = valloc(n), *pv = pvalloc(n);
        void *pm = NULL;
        posix_memalign(&pm, 32, n);
        void *ra = reallocarray(NULL, n, 1);
        void *list[] = {m, c, r, ma, aa2, v, pv, pm, ra};
        const char *names[] = {"malloc", "calloc", "realloc", "memalign", "aligned_alloc", "valloc", "pvalloc", "posix_memalign", "reallocarray"};
        for (int k = 0; k < 9; k++) {
            snprintf(label, sizeof label, "usable %s(%zu)", names[k], n);
            if (k == 0 || k == 1 || k == 8)
                usable(label, list[k], n);
            else
                usable_ok(label, list[k], n);
            if (k == 1) {
                int zero = 1;
                for (size_t j = 0; j < n; j += 4093) zero &= ((char *)c)[j] == 0;
                printf("%-40s %d\n", "  calloc zeroed", zero && ((char *)c)[n - 1] == 0);
            }
            free(list[k]);
        }
    }

    /* --- blocks the library never saw --- */
    p = __libc_malloc(777); memset(p, 1, 777);
    usable("usable __libc_malloc(777)", p, 777);
    errno = 4242; q = realloc(p, 5000); SHOW("realloc(__libc_malloc block, 5000)", q);
    printf("%-40s %d\n", "  contents kept", q && ((char *)q)[776] == 1);
    free(q);
    p = __libc_memalign(4096, 100);
    usable_ok("usable __libc_memalign(4096, 100)", p, 100);
    errno = 4242; free(p); printf("%-40s errno=%s\n", "free(__libc_memalign block)", errname(errno));
    p = __libc_calloc(1, 400000);
    usable("usable __libc_calloc(1, 400000)", p, 400000);
    free(p);
    {
        usable("usable early block 0", early_blocks[0], 1000);
        usable("usable early block 1", early_blocks[1], 300000);
        free(early_blocks[0]);
        early_blocks[1] = realloc(early_blocks[1], 10);
        printf("%-40s %d\n", "realloc early block", early_blocks[1] != NULL && ((char *)early_blocks[1])[9] == 'e');
        free(early_blocks[1]);
        free(early_blocks[2]);
        printf("%-40s done\n", "early blocks freed");
    }

    /* --- 1 GiB and more --- */
    size_t gib = (size_t)1 << 30;
    errno = 4242; p = malloc(gib); SHOW("malloc(1 GiB)", p);
    if (p) { ((char *)p)[0] = 1; ((char *)p)[gib - 1] = 2; usable("  usable", p, gib); }
    errno = 4242; q = realloc(p, 2 * gib); SHOW("realloc(1 GiB -> 2 GiB)", q);
    if (q) { printf("%-40s %d\n", "  contents kept", ((char *)q)[0] == 1 && ((char *)q)[gib - 1] == 2); p = q; }
    free(p);
    errno = 4242; p = calloc(3, gib); SHOW("calloc(3, 1 GiB)", p);
    if (p) printf("%-40s %d\n", "  zeroed", ((char *)p)[0] == 0 && ((char *)p)[3 * gib - 1] == 0);
    free(p);
    errno = 4242; p = aligned_alloc((size_t)1 << 21, 4 * gib); SHOW("aligned_alloc(2 MiB, 4 GiB)", p);
    printf("%-40s %d\n", "  aligned", aligned(p, (size_t)1 << 21));
    free(p);
    errno = 4242; p = mmap(NULL, 8 * gib, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    SHOW("mmap(8 GiB, PROT_NONE)", p != MAP_FAILED ? p : NULL);
    errno = 4242; q = mremap(p, 8 * gib, 9 * gib, MREMAP_MAYMOVE); SHOW("mremap(8 -> 9 GiB)", q != MAP_FAILED ? q : NULL);
    size_t mlen = 8 * gib;
    if (q != MAP_FAILED) { p = q; mlen = 9 * gib; }
    errno = 4242; rc = mprotect(p, gib, PROT_READ | PROT_WRITE); printf("%-40s rc=%d errno=%s\n", "mprotect(1 GiB rw)", rc, errname(errno));
    if (rc == 0) ((char *)p)[gib - 1] = 1;
    errno = 4242; rc = munmap(p, mlen); printf("%-40s rc=%d errno=%s\n", "munmap(9 GiB)", rc, errname(errno));

    /* --- mmap family edge arguments --- */
    errno = 0; p = mmap(NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); SHOW("mmap(len 0)", p != MAP_FAILED ? p : NULL);
    errno = 0; p = mmap((void *)1, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0); SHOW("mmap(MAP_FIXED at 1)", p != MAP_FAILED ? p : NULL);
    errno = 0; p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 12345, 0); SHOW("mmap(bad fd)", p != MAP_FAILED ? p : NULL);
    errno = 0; rc = munmap((void *)1, 4096); printf("%-40s rc=%d errno=%s\n", "munmap(unaligned)", rc, errname(errno));
    errno = 0; rc = munmap(NULL, 0); printf("%-40s rc=%d errno=%s\n", "munmap(NULL, 0)", rc, errname(errno));
    /* two pages, the second unmapped again: growing in place into it works */
    p = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap((char *)p + 4096, 4096);
    errno = 0; q = mremap(p, 4096, 8192, 0); SHOW("mremap(no MAYMOVE)", q != MAP_FAILED ? q : NULL);
    size_t plen = q != MAP_FAILED ? 8192 : 4096;
    errno = 0; q = mremap(p, 4096, 0, MREMAP_MAYMOVE); SHOW("mremap(to 0)", q != MAP_FAILED ? q : NULL);
    errno = 0; rc = mprotect((char *)p + 1, 10, PROT_READ); printf("%-40s rc=%d errno=%s\n", "mprotect(unaligned)", rc, errname(errno));
    munmap(p, plen);

    /* --- errno preserved across successful calls --- */
    errno = 4242; p = malloc(10); printf("%-40s errno=%s\n", "malloc ok", errname(errno));
    errno = 4242; free(p); printf("%-40s errno=%s\n", "free ok", errname(errno));
    errno = 4242; p = malloc(1 << 22); printf("%-40s errno=%s\n", "big malloc ok", errname(errno));
    errno = 4242; free(p); printf("%-40s errno=%s\n", "big free ok", errname(errno));
    errno = 4242; p = calloc(10, 10); printf("%-40s errno=%s\n", "calloc ok", errname(errno));
    errno = 4242; p = realloc(p, 100000); printf("%-40s errno=%s\n", "realloc ok", errname(errno));
    errno = 4242; free(p); printf("%-40s errno=%s\n", "free after realloc ok", errname(errno));
    errno = 4242; rc = posix_memalign(&p, 64, 64); printf("%-40s errno=%s\n", "posix_memalign ok", errname(errno));
    errno = 4242; free(p);
    errno = 4242; p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); printf("%-40s errno=%s\n", "mmap ok", errname(errno));
    errno = 4242; rc = munmap(p, 4096); printf("%-40s errno=%s\n", "munmap ok", errname(errno));
    printf("edges: done\n");
    return 0;
}
