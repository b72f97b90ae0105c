/* host: a small program with known output for the dump-safety tests (issue 4 "Done when 4",
 * issue 7 security). It always prints "host output" on stdout and "host diagnostics" on
 * stderr and exits 7; liboffheap must not change any of that, whatever happens to its
 * dumps. Before that, depending on MODE, it plants files where liboffheap will want to
 * write, named after its own pid, in $OFFHEAP_DIR (resolved against the start-up directory
 * like the library does):
 *
 *   plain                  nothing planted
 *   symlink VICTIM         offheap.<pid>.000000.json -> VICTIM (a symlink)
 *   all VICTIM LINKED      offheap.<pid>.000000.json -> VICTIM (symlink)
 *                          offheap.<pid>.000001.json  hard link of LINKED
 *                          offheap.<pid>.000002.json  a regular file "precious\n"
 *                          .offheap.<pid>.000003.json.<0..3>.tmp -> VICTIM (every
 *                          temporary name the library tries for seq 3)
 *   chdir                  chdir("/") before exiting (the dump directory was resolved
 *                          at start-up and must not move)
 *   wait                   nothing planted
 * then, for "all" and "wait", creates $OFFHEAP_DIR/../ready.<pid> (or READY_FILE if set)
 * and waits for EOF on stdin, so the test can take snapshots meanwhile. It also allocates a
 * little (kept: host_leak, 4444 bytes) so that dumps have content.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile sink;
__attribute__((noinline)) static void host_leak(void) { sink = malloc(4444); memset(sink, 1, 4444); }

static void name(char *buf, size_t n, const char *dir, int seq, int tmp_attempt) {
    if (tmp_attempt < 0)
        snprintf(buf, n, "%s/offheap.%d.%06d.json", dir, (int)getpid(), seq);
    else
        snprintf(buf, n, "%s/.offheap.%d.%06d.json.%d.tmp", dir, (int)getpid(), seq, tmp_attempt);
}

static void ready(void) {
    const char *f = getenv("READY_FILE");
    if (f) {
        FILE *r = fopen(f, "w");
        if (r) { fprintf(r, "%d\n", (int)getpid()); fclose(r); }
    }
    char c;
    while (read(0, &c, 1) > 0) {}
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "plain";
    const char *dir = getenv("OFFHEAP_DIR");
    char path[4096];
    host_leak();
    if (dir && !strcmp(mode, "symlink") && argc > 2) {
        name(path, sizeof path, dir, 0, -1);
        if (symlink(argv[2], path) != 0) perror("symlink");
    } else if (dir && !strcmp(mode, "all") && argc > 3) {
        name(path, sizeof path, dir, 0, -1);
        if (symlink(argv[2], path) != 0) perror("symlink");
        name(path, sizeof path, dir, 1, -1);
        if (link(argv[3], path) != 0) perror("link");
        name(path, sizeof path, dir, 2, -1);
        FILE *f = fopen(path, "w");
        if (f) { fputs("precious\n", f); fclose(f); }
        for (int a = 0; a < 4; a++) {
            name(path, sizeof path, dir, 3, a);
            if (symlink(argv[2], path) != 0) perror("symlink tmp");
        }
    }
    if (!strcmp(mode, "all") || !strcmp(mode, "wait")) ready();
    if (!strcmp(mode, "chdir") && chdir("/") != 0) perror("chdir");
    printf("host output\n");
    fprintf(stderr, "host diagnostics\n");
    return 7;
}
