/* killme: allocation churn with many distinct stacks and many live blocks, to be killed
 * with SIGKILL at a random moment (issue 4 "Done when 2"): dumps are written every 0.1 s
 * and each one is sizeable, so the kill often lands in the middle of writing one.
 * usage: killme SEED — runs until killed (or 30 s). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LIVE 20000
static void *volatile sink;

__attribute__((noinline)) static void *deep(int depth, size_t n) {
    if (depth <= 0) return malloc(n);
    void *p = deep(depth - 1, n);
    sink = p; /* not a tail call: one frame per level */
    return p;
}

static void *churn(void *arg) {
    unsigned s = (unsigned)(unsigned long)arg;
    void **held = calloc(LIVE, sizeof *held);
    for (;;) {
        s = s * 1103515245u + 12345u;
        unsigned i = (s >> 8) % LIVE;
        free(held[i]);
        held[i] = deep((int)((s >> 4) % 60), 1 + (s >> 16) % 2000);
    }
    return NULL;
}

int main(int argc, char **argv) {
    unsigned seed = argc > 1 ? (unsigned)atoi(argv[1]) : 1;
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, churn, (void *)(unsigned long)(seed * 3 + i + 1));
    sleep(30);
    return 0;
}
