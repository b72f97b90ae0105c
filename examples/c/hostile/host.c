/* host: a small program with known output for the dump-safety tests (issue 4 "Done when 4",
 * issue 7 security). It always prints "host output" on stdout and "host diagnostics" on
 * stderr and exits 7; liboffheap must not change any of that, whatever happens to its
 * dumps. Before that, depending on MODE, it plants files where liboffheap will want to
 * write, named after its own pid, in $OFFHEAP_DIR (resolved against the start-up directory
 * like the library does):
 *
 *   plain                  nothing planted
 *   symlink VICTIM         offheap.<pid>.000000.json.gz -> VICTIM (a symlink)
 *   all VICTIM LINKED      before any dump: offheap.<pid>.000000.json.gz -> VICTIM (a
 *                          symlink; the library then picks the stem offheap.<pid>_2).
 *                          Then, once GO_FILE exists (the test creates it after the
 *                          first dump, when the stem is chosen), under that stem:
 *                          offheap.<pid>_2.000001.json.gz -> VICTIM (symlink)
 *                          offheap.<pid>_2.000002.json.gz  hard link of LINKED
 *                          offheap.<pid>_2.000003.json.gz  a regular file "precious\n"
 *                          .offheap.<pid>_2.000004.json.gz.<0..3>.tmp -> VICTIM (every
 *                          temporary name the library tries for seq 4)
 *                          and creates READY2_FILE.
 *   chdir                  chdir("/") before exiting (the dump directory was resolved
 *                          at start-up and must not move)
 *   wait                   nothing planted
 * For "all" and "wait" it creates READY_FILE (if set) first, and at the end waits for EOF
 * on stdin, so the test can take snapshots meanwhile. It also allocates a
 * little (kept: host_leak, 4444 bytes) so that dumps have content.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile sink;
__attribute__((noinline)) static void host_leak(void) { sink = malloc(4444); memset(sink, 1, 4444); }

static void name(char *buf, size_t n, const char *dir, const char *stem, int seq, int tmp_attempt) {
    if (tmp_attempt < 0)
        snprintf(buf, n, "%s/offheap.%d%s.%06d.json.gz", dir, (int)getpid(), stem, seq);
    else
        snprintf(buf, n, "%s/.offheap.%d%s.%06d.json.gz.%d.tmp", dir, (int)getpid(), stem, seq, tmp_attempt);
}

static void touch(const char *env) {
    const char *f = getenv(env);
    if (f) {
        FILE *r = fopen(f, "w");
        if (r) { fprintf(r, "%d\n", (int)getpid()); fclose(r); }
    }
}

static void wait_stdin_eof(void) {
    char c;
    while (read(0, &c, 1) > 0) {}
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "plain";
    const char *dir = getenv("OFFHEAP_DIR");
    char path[4096];
    host_leak();
    if (dir && !strcmp(mode, "symlink") && argc > 2) {
        name(path, sizeof path, dir, "", 0, -1);
        if (symlink(argv[2], path) != 0) perror("symlink");
    } else if (dir && !strcmp(mode, "all") && argc > 3) {
        name(path, sizeof path, dir, "", 0, -1);
        if (symlink(argv[2], path) != 0) perror("symlink");
        touch("READY_FILE");
        const char *go = getenv("GO_FILE");
        while (go && access(go, F_OK) != 0) usleep(5000);
        name(path, sizeof path, dir, "_2", 1, -1);
        if (symlink(argv[2], path) != 0) perror("symlink");
        name(path, sizeof path, dir, "_2", 2, -1);
        if (link(argv[3], path) != 0) perror("link");
        name(path, sizeof path, dir, "_2", 3, -1);
        FILE *f = fopen(path, "w");
        if (f) { fputs("precious\n", f); fclose(f); }
        for (int a = 0; a < 4; a++) {
            name(path, sizeof path, dir, "_2", 4, a);
            if (symlink(argv[2], path) != 0) perror("symlink tmp");
        }
        touch("READY2_FILE");
        wait_stdin_eof();
    } else if (!strcmp(mode, "wait")) {
        touch("READY_FILE");
        wait_stdin_eof();
    }
    if (!strcmp(mode, "chdir") && chdir("/") != 0) perror("chdir");
    printf("host output\n");
    fprintf(stderr, "host diagnostics\n");
    return 7;
}
