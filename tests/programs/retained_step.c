/* retained_step SECONDS: four threads each write 8 MiB in 1 KiB blocks in their own arena,
 * keep one 64-byte block above them (so the arena cannot give its top back) and free the
 * rest: ~32 MiB glibc keeps resident, freed once, early. Then main keeps 1 KiB every 100 ms
 * (a small leak) for SECONDS. The retained memory stepped up and stays: its slope is ~0,
 * its share of RSS large. Prints "pinned 4". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BLOCKS 8192

static void *pins[4];

static void *fill_and_free(void *arg) {
    void **blocks = malloc(BLOCKS * sizeof *blocks);
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(1024);
        memset(blocks[i], 7, 1024);
    }
    void *pin = malloc(64);
    for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
    free(blocks);
    return pin;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3;
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, fill_and_free, NULL);
    int pinned = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], &pins[i]);
        pinned += pins[i] != NULL;
    }
    struct timespec pause = {0, 100 * 1000 * 1000};
    static void *leak[1000];
    for (int i = 0; i < seconds * 10 && i < 1000; i++) {
        leak[i] = malloc(1024);
        memset(leak[i], 1, 1024);
        nanosleep(&pause, NULL);
    }
    printf("pinned %d\n", pinned);
    return 0;
}
