/* dlcross: dlopen/dlclose a library that allocates and frees across the boundary (issue 7).
 *
 * usage: dlcross LIBCROSS.so ROUNDS
 * Each round dlopens libcross.so, lets it allocate blocks the main program frees, hands it
 * blocks to free and to realloc, and dlcloses it (its destructor frees its constructor's
 * block), while a second thread allocates and frees continuously. After the last dlclose
 * main_keeps() still holds exactly one 5555-byte block the library allocated in round 0,
 * and frees nothing of it: the exit dump must show 5555 bytes, 1 block, under main_keeps
 * (the library's frame is unloaded by then; the main program's is not).
 * stdout: "dlcross: rounds=R checksum=<hex>" (deterministic).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef char *(*alloc_fn)(size_t, int);
typedef void (*free_fn)(void *);
typedef void *(*grow_fn)(void *, size_t);

static atomic_int stop;
static void *volatile sink;
static char *kept;

static void *churn(void *arg) {
    (void)arg;
    unsigned s = 1;
    while (!atomic_load(&stop)) {
        s = s * 1103515245u + 12345u;
        void *p = malloc(1 + (s >> 16) % 4000);
        sink = p;
        free(p);
    }
    return NULL;
}

__attribute__((noinline)) static void main_keeps(alloc_fn a) { kept = a(5555, 9); }

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int rounds = atoi(argv[2]);
    pthread_t t;
    pthread_create(&t, NULL, churn, NULL);
    unsigned long sum = 0;
    for (int r = 0; r < rounds; r++) {
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!h) { printf("dlopen failed: %s\n", dlerror()); return 1; }
        alloc_fn a = (alloc_fn)dlsym(h, "cross_alloc");
        free_fn f = (free_fn)dlsym(h, "cross_free");
        grow_fn g = (grow_fn)dlsym(h, "cross_grow");
        if (r == 0) main_keeps(a);
        for (int i = 0; i < 50; i++) {
            char *p = a(10 + (size_t)i * 97, i);
            sum += (unsigned char)p[9] + (unsigned long)i;
            free(p); /* theirs, freed here */
            char *q = malloc(20 + (size_t)i * 31);
            memset(q, i, 20 + (size_t)i * 31);
            q = g(q, 40000 + (size_t)i); /* ours, grown there */
            sum += (unsigned char)q[19];
            f(q); /* ours, freed there */
        }
        dlclose(h);
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    sum += (unsigned char)kept[5554];
    printf("dlcross: rounds=%d checksum=%lx\n", rounds, sum);
    return 0;
}
