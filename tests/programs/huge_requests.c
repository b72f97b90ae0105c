/* huge_requests: mallocs no allocator can satisfy, each followed by blocks the program keeps.
 * The library's malloc entry takes every size off the thread's sampling countdown; a request
 * of 2^63 bytes or more, or failed requests that take the countdown past the far end of its
 * range, must not leave it where later mallocs are forwarded untracked (that hid every
 * later leak of the thread: a missed leak, silently).
 *
 * After each request kept_after_huge() keeps KEEP blocks of BLOCK bytes to the end, so the
 * truth is REQUESTS * KEEP blocks of BLOCK bytes under kept_after_huge. BLOCK is far above
 * the test's OFFHEAP_SAMPLE_BYTES, so under sampling every kept block is sampled too.
 * stdout: one line per request ("<name> NULL errno=ENOMEM"), then "kept=<n> bytes=<b>". */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define KEEP 100
#define BLOCK 4096

static void *volatile sink;

__attribute__((noinline)) static void kept_after_huge(void **keep, int *n) {
    for (int i = 0; i < KEEP; i++) {
        keep[(*n)++] = malloc(BLOCK);
    }
    __asm__ volatile("" ::: "memory");
}

struct request {
    const char *name;
    size_t size;
    int times;
};

int main(void) {
    /* SIZE_MAX and 0xc000...: 2^63 or more (negative as a signed size); 2^62 three times:
     * below 2^63 each, but together past the far end of a signed 64-bit countdown. */
    static const struct request requests[] = {
        {"malloc(SIZE_MAX)", SIZE_MAX, 1},
        {"malloc(0xc000000000000000)", (size_t)0xc000000000000000ull, 1},
        {"malloc(2^63)", (size_t)1 << 63, 1},
        {"3 x malloc(2^62)", (size_t)1 << 62, 3},
    };
    const int count = sizeof requests / sizeof requests[0];
    static void *keep[sizeof requests / sizeof requests[0] * KEEP];
    int kept = 0;
    for (int r = 0; r < count; r++) {
        int all_failed = 1, last_errno = 0;
        for (int t = 0; t < requests[r].times; t++) {
            errno = 0;
            void *p = malloc(requests[r].size);
            sink = p;
            all_failed &= p == NULL;
            last_errno = errno;
        }
        printf("%s %s errno=%s\n", requests[r].name, all_failed ? "NULL" : "ptr",
               last_errno == ENOMEM ? "ENOMEM" : "other");
        kept_after_huge(keep, &kept);
    }
    printf("kept=%d bytes=%d\n", kept, kept * BLOCK);
    return 0;
}
