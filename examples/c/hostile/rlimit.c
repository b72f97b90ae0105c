/* rlimit: ENOMEM under RLIMIT_AS (issue 7).
 *
 * Sets RLIMIT_AS to the current address-space size + 256 MiB, then exhausts it: 1 MiB blocks
 * until malloc returns NULL, then 200-byte blocks until NULL (the library's own tables cannot
 * grow either at that point), frees everything, and checks that every allocator entry point
 * fails exactly as glibc does (NULL / MAP_FAILED and errno ENOMEM, posix_memalign returns
 * ENOMEM, a failed realloc leaves the old block intact). What it still holds at exit is known:
 *   hold_blocks()     10 blocks of 1 MiB (malloc)
 *   realloc_victim()  1 block of 1000 bytes (malloc; survived a failed realloc)
 *   hold_mapping()    1 anonymous mapping of 3 pages
 * stdout is deterministic (no counts that depend on the address-space headroom).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

static void *held[10];
static char *victim;
static void *mapping;

__attribute__((noinline)) static void hold_blocks(void) {
    for (int i = 0; i < 10; i++) { held[i] = malloc(1 << 20); memset(held[i], i, 1 << 20); }
}
__attribute__((noinline)) static void realloc_victim(void) { victim = malloc(1000); memset(victim, 'v', 1000); }
__attribute__((noinline)) static void hold_mapping(void) {
    mapping = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static unsigned long vm_size(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %lu kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
}

static const char *en(int e) { return e == ENOMEM ? "ENOMEM" : e == 0 ? "0" : strerror(e); }

int main(void) {
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max = vm_size() + (256ul << 20);
    if (setrlimit(RLIMIT_AS, &rl) != 0) { perror("setrlimit"); return 2; }
    realloc_victim();

    /* Slots for what we allocate, from mmap so that they do not compete with malloc. */
    size_t cap = 4u << 20;
    void **slots = mmap(NULL, cap * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (slots == MAP_FAILED) { printf("no slots\n"); return 2; }
    /* Small blocks first: about a million of them, so the library's tables must grow while
     * the address space runs out. */
    size_t n = 0;
    errno = 0;
    while (n < cap && (slots[n] = malloc(200)) != NULL) n++;
    printf("200 B blocks until NULL: errno=%s, reached=%d\n", en(errno), n < cap);
    size_t small = n;
    for (size_t i = 0; i < small / 2; i++) free(slots[i]);
    for (size_t i = 0; i < small / 2; i++) slots[i] = NULL;
    errno = 0;
    while (n < cap && (slots[n] = malloc(1 << 20)) != NULL) n++;
    printf("1 MiB blocks until NULL: errno=%s, got some=%d\n", en(errno), n > small);

    errno = 0; void *p = calloc(1, 512u << 20); printf("calloc 512 MiB: %s errno=%s\n", p ? "ptr" : "NULL", en(errno));
    errno = 0; p = aligned_alloc(64, 512u << 20); printf("aligned_alloc 512 MiB: %s errno=%s\n", p ? "ptr" : "NULL", en(errno));
    errno = 0; p = valloc(512u << 20); printf("valloc 512 MiB: %s errno=%s\n", p ? "ptr" : "NULL", en(errno));
    p = NULL; int rc = posix_memalign(&p, 64, 512u << 20); printf("posix_memalign 512 MiB: rc=%s p=%s\n", en(rc), p ? "ptr" : "NULL");
    errno = 0; char *r = realloc(victim, 512u << 20);
    int intact = r == NULL && victim[0] == 'v' && victim[999] == 'v';
    printf("realloc 512 MiB: %s errno=%s victim intact=%d\n", r ? "ptr" : "NULL", en(errno), intact);
    errno = 0; p = mmap(NULL, 512u << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mmap 512 MiB: %s errno=%s\n", p == MAP_FAILED ? "MAP_FAILED" : "ptr", en(errno));

    for (size_t i = 0; i < n; i++) free(slots[i]);
    munmap(slots, cap * sizeof(void *));
    hold_blocks();
    hold_mapping();
    printf("after freeing: hold ok=%d mapping ok=%d\n", held[9] != NULL, mapping != MAP_FAILED);
    return 0;
}
