/* fdchurn: the host's descriptor numbers are its own (issue 16). The main thread closes and
 * reopens fd 0, dup2's over low numbers and opens pipes in a tight loop, checking every
 * number it gets and that each descriptor is still the file it put there; a second thread
 * allocates, so the library's own thread (dumps at OFFHEAP_INTERVAL=0.1) runs meanwhile.
 * Any descriptor the library took from, or closed under, the program shows up as a wrong one.
 * argv: iterations. stdout: "fdchurn: iterations=<n> wrong=<w>" (w must be 0). */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile int stop;
static void *volatile sink;

static void *allocator(void *a) {
    (void)a;
    while (!stop) {
        void *p = malloc(64 + (rand() & 1023)); /* a local: free what this thread got */
        sink = p;
        free(p);
    }
    return NULL;
}

static int same_file(int fd, const struct stat *want) {
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_ino == want->st_ino && st.st_dev == want->st_dev;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    struct stat devnull, devzero;
    stat("/dev/null", &devnull);
    stat("/dev/zero", &devzero);
    /* The lowest free numbers now (whatever the caller left open): pipes must get them, and
     * `spare` (well above them) must stay free except while the loop puts a copy there. */
    int lo[2];
    if (pipe(lo) != 0) return 2;
    close(lo[0]);
    close(lo[1]);
    int spare = lo[1] + 8;
    pthread_t t;
    pthread_create(&t, NULL, allocator, NULL);
    long wrong = 0;
    for (long i = 0; i < n; i++) {
        close(0);
        int fd = open("/dev/null", O_RDONLY);
        if (fd != 0 || !same_file(0, &devnull)) wrong++;
        int z = open("/dev/zero", O_RDONLY);
        if (dup2(z, spare) != spare || !same_file(spare, &devzero)) wrong++;
        close(z);
        if (!same_file(spare, &devzero)) wrong++;
        close(spare);
        if (fcntl(spare, F_GETFD) != -1) wrong++; /* nothing of anybody else's may sit there */
        if (i % 1000 == 0) {
            int p[2];
            if (pipe(p) != 0 || p[0] != lo[0] || p[1] != lo[1]) wrong++;
            close(p[0]);
            close(p[1]);
        }
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("fdchurn: iterations=%ld wrong=%ld\n", n, wrong);
    return 0;
}
