/*
 * ledgercost.c — the shape issue 11 "Done when 4" measures the ledger at: about 1,000 mappings
 * and 8 glibc thread arenas (plus the main one), all resident, while the library dumps.
 *
 * 8 threads each malloc 4 MiB in 4 KiB blocks (a thread's first malloc gives it an arena of its
 * own) and free every other block, so each arena has live and retained pages; the main thread
 * maps 1,000 anonymous 8 KiB regions one page apart (the gaps keep the kernel from merging them)
 * and touches them. Then everything stays put for argv[1] seconds (default 3) while periodic
 * dumps measure the ledger; the bench reads `ledger.ms` from those dumps.
 *
 * Build: gcc -O2 -g -pthread -o ledgercost ledgercost.c
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define THREADS 8
#define BLOCKS 1024
#define BLOCK 4096
#define MAPPINGS 1000

static pthread_barrier_t ready, done;

static void *arena_worker(void *arg) {
	(void)arg;
	static __thread void *blk[BLOCKS];
	for (int i = 0; i < BLOCKS; i++) {
		blk[i] = malloc(BLOCK);
		memset(blk[i], 1, BLOCK);
	}
	for (int i = 0; i < BLOCKS; i += 2) free(blk[i]);
	pthread_barrier_wait(&ready);
	pthread_barrier_wait(&done); /* alive, arena in use, until the dumps are taken */
	return NULL;
}

int main(int argc, char **argv) {
	int seconds = argc > 1 ? atoi(argv[1]) : 3;
	long page = sysconf(_SC_PAGESIZE);
	pthread_t t[THREADS];
	pthread_barrier_init(&ready, NULL, THREADS + 1);
	pthread_barrier_init(&done, NULL, THREADS + 1);
	for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, arena_worker, NULL);
	/* One reservation, then every third page left unmapped: 1,000 separate VMAs. */
	char *base = mmap(NULL, (size_t)MAPPINGS * 3 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	munmap(base, (size_t)MAPPINGS * 3 * page);
	for (int i = 0; i < MAPPINGS; i++) {
		char *p = mmap(base + (size_t)i * 3 * page, 2 * page, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (p != MAP_FAILED) memset(p, 2, 2 * page);
	}
	pthread_barrier_wait(&ready);
	sleep(seconds);
	pthread_barrier_wait(&done);
	for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
	return 0;
}
