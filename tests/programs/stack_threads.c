/*
 * Many threads, each reaching malloc from many stacks: THREADS threads (argv[1]) each walk a
 * binary tree of calls LEVELS deep (argv[2]) and make one malloc+free of 32 bytes at every
 * leaf, so each thread allocates from 2^LEVELS distinct stacks (the same ones in every
 * thread). With every thread done and still alive it prints its resident memory:
 * "rss_kb=N threads=T stacks=S".
 * Build: gcc -O2 -g -pthread -fno-optimize-sibling-calls
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int levels;
static pthread_barrier_t done, leave;

static void walk(int depth);

__attribute__((noinline)) static void leaf(void)
{
    void *volatile p = malloc(32);
    free(p);
}

/* Two call sites per level: each leaf is reached by a chain of return addresses of its own. */
__attribute__((noinline)) static void left(int depth)
{
    walk(depth + 1);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void right(int depth)
{
    walk(depth + 1);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void walk(int depth)
{
    if (depth == levels) {
        leaf();
        return;
    }
    left(depth);
    right(depth);
}

static void *thread_main(void *arg)
{
    (void)arg;
    walk(0);
    pthread_barrier_wait(&done);
    pthread_barrier_wait(&leave);
    return NULL;
}

static long rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int threads = atoi(argv[1]);
    levels = atoi(argv[2]);
    if (threads < 1 || threads > 256 || levels < 1 || levels > 20)
        return 2;
    pthread_t *ids = calloc((size_t)threads, sizeof *ids);
    pthread_barrier_init(&done, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&leave, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&ids[i], NULL, thread_main, NULL) != 0)
            return 1;
    pthread_barrier_wait(&done);
    printf("rss_kb=%ld threads=%d stacks=%d\n", rss_kb(), threads, 1 << levels);
    fflush(stdout);
    pthread_barrier_wait(&leave);
    for (int i = 0; i < threads; i++)
        pthread_join(ids[i], NULL);
    free(ids);
    return 0;
}
