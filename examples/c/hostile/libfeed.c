/* A library that feeds a child process through popen() and closes it in its destructor:
 * the "flush to a helper process at exit" pattern (gzip, logger, sort). The child sees EOF
 * only when every copy of the pipe's write end is closed. Used by examples/c/hostile/feedexit.c. */
#include <stdio.h>
#include <stdlib.h>

static FILE *feed;

__attribute__((constructor)) static void feed_open(void) { feed = popen("wc -c", "w"); }

void feed_line(const char *s) { fputs(s, feed); }

__attribute__((destructor)) static void feed_close(void) {
    int status = pclose(feed);
    printf("pclose status %d\n", status);
}
