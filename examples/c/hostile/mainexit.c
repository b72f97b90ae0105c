/* mainexit: the main thread leaves with pthread_exit while another thread carries on
 * (issue 7). POSIX: the process exits, with status 0 and stdio flushed, when its last
 * thread ends. A thread of the library's own that never ends would keep the process alive
 * for ever (and, blocking every signal, even deaf to SIGTERM: a process-directed signal
 * needs a thread that does not block it). The worker leaks 3333 bytes from late_leak(),
 * so the exit dump has something known in it.
 * stdout: "main leaves\nworker done\n". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static void *volatile sink;
__attribute__((noinline)) static void late_leak(void) { sink = malloc(3333); memset(sink, 1, 3333); }
static void *worker(void *a) { (void)a; usleep(100000); for (int i = 0; i < 10000; i++) free(malloc(100 + i % 1000)); late_leak(); printf("worker done\n"); return NULL; }
int main(void) { pthread_t t; pthread_create(&t, NULL, worker, NULL); printf("main leaves\n"); fflush(stdout); pthread_exit(NULL); }
