/* singlethread: a program that insists on being single-threaded (chromium's zygote, code
 * about to unshare(CLONE_NEWUSER), Python deciding whether fork() is safe): it checks
 * /proc/self/status at start and again after some work, and exits 1 if it has threads it
 * did not start. stdout: "singlethread: threads=1 then 1". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int threads(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0) n = atoi(line + 8);
    if (f) fclose(f);
    return n;
}

static void *volatile sink;

int main(void) {
    int a = threads();
    for (int i = 0; i < 100000; i++) {
        sink = malloc(16 + i % 2000);
        free(sink);
    }
    usleep(200000);
    int b = threads();
    printf("singlethread: threads=%d then %d\n", a, b);
    return a == 1 && b == 1 ? 0 : 1;
}
