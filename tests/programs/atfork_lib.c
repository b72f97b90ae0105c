/* atfork_lib: a library whose fork handlers allocate and free, linked by atfork_main.c. Its
 * constructor runs before the preloaded liboffheap's, so it registers its pthread_atfork
 * handlers first: glibc runs its prepare handler after liboffheap's and its parent and child
 * handlers before liboffheap's, while liboffheap holds its own locks.
 *
 *   cache_fill()      (program code) 64 blocks of 100,000 B, kept in a cache
 *   prepare handler   frees the whole cache (a program that drops caches before forking)
 *   parent handler    parent_keep: 32 blocks of 50,000 B, kept for good
 *   child handler     child_keep: 16 blocks of 30,000 B, kept for good (in the child)
 */
#include <pthread.h>
#include <stdlib.h>

#define CACHE 64
#define PARENT_KEEP 32
#define CHILD_KEEP 16

/* volatile: blocks nobody reads again are otherwise not allocated at all (gcc drops a malloc
 * whose result is only stored where nothing reads it). */
static void *volatile cache[CACHE];
static int cached;
static void *volatile kept_in_parent[PARENT_KEEP];
static void *volatile kept_in_child[CHILD_KEEP];

__attribute__((noinline)) void cache_fill(void) {
    for (cached = 0; cached < CACHE; cached++) {
        cache[cached] = malloc(100000);
    }
}

static void cache_drop(void) {
    for (int i = 0; i < cached; i++) {
        free(cache[i]);
    }
    cached = 0;
}

static void parent_keep(void) {
    for (int i = 0; i < PARENT_KEEP; i++) {
        kept_in_parent[i] = malloc(50000);
    }
}

static void child_keep(void) {
    for (int i = 0; i < CHILD_KEEP; i++) {
        kept_in_child[i] = malloc(30000);
    }
}

__attribute__((constructor)) static void register_handlers(void) {
    pthread_atfork(cache_drop, parent_keep, child_keep);
}
