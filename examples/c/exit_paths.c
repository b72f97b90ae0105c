/* exit_paths: a C program that leaves known outstanding blocks and then ends in a chosen way
 * (issue 10 "Done when 6").
 *
 * usage: exit_paths MODE [CODE]        (CODE defaults to 7)
 *   _exit    _exit(CODE)                            status CODE, no atexit, no destructors
 *   _Exit    _Exit(CODE)                            status CODE, same
 *   abort    abort()                                killed by SIGABRT (shell status 134)
 *   segv     store through a NULL pointer           killed by SIGSEGV (shell status 139)
 *   handler  installs its own SIGSEGV handler, which prints a line and _exit(42)s, then
 *            stores through NULL                    status 42
 *   exit     exit(CODE)                             status CODE, destructors run (control case)
 *   return   return CODE from main                  same (control case)
 *
 * Before ending it has leaked, from non-inlined functions with sizes no other site uses:
 *   site_small   3 x malloc(1111)        3333 bytes
 *   site_calloc  1 x calloc(7, 1111)     7777 bytes
 *   site_big     1 x malloc(300000)      300000 bytes (above the mmap threshold: an mmapped chunk)
 * Everything else it allocates is freed. It prints its truth on stderr, one line per site,
 *   exit_paths: truth {"func":"site_small","bytes":3333,"count":3}
 * then what the program itself sees of the signal dispositions (a preloaded library that
 * installs handlers must not show through: SIG_DFL, or the program's own handler):
 *   exit_paths: sigaction SIGSEGV=SIG_DFL SIGABRT=SIG_DFL SIGBUS=SIG_DFL
 * and finally "exit_paths: ending MODE". Output goes through write(2) on a stack buffer, so
 * stdio never allocates a buffer of its own (that block would be an extra outstanding one).
 *
 * Build: gcc -O2 -g -o exit_paths exit_paths.c
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Kept reachable, and opaque to the optimiser: gcc deletes a malloc whose result is unused. */
static void *volatile kept[8];
/* NULL that the compiler cannot see: a literal NULL store may be compiled into a trap. */
static int *volatile null_ptr;

static void say(const char *s) {
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

static void truth(const char *func, long bytes, long count) {
    char b[160];
    snprintf(b, sizeof b, "exit_paths: truth {\"func\":\"%s\",\"bytes\":%ld,\"count\":%ld}\n", func,
             bytes, count);
    say(b);
}

__attribute__((noinline)) static void site_small(int i) {
    char *p = malloc(1111);
    memset(p, 's', 1111);
    kept[i] = p;
}

__attribute__((noinline)) static void site_calloc(void) {
    kept[3] = calloc(7, 1111);
}

__attribute__((noinline)) static void site_big(void) {
    char *p = malloc(300000);
    memset(p, 'b', 300000);
    kept[4] = p;
}

/* Allocations that are all gone before the ending: they must not show up. */
__attribute__((noinline)) static void freed_work(void) {
    for (int i = 0; i < 100; i++) {
        void *p = malloc(100 + i);
        memset(p, 0, 100 + i);
        p = realloc(p, 5000 + i);
        free(p);
    }
    free(malloc(200000));
}

static const char *disp(int sig, void (*own)(int)) {
    struct sigaction old;
    if (sigaction(sig, NULL, &old) != 0) return "error";
    if (old.sa_flags & SA_SIGINFO) return "OTHER(siginfo)";
    if (old.sa_handler == SIG_DFL) return "SIG_DFL";
    if (old.sa_handler == SIG_IGN) return "SIG_IGN";
    if (own && old.sa_handler == own) return "OWN";
    return "OTHER";
}

static void on_segv(int sig) {
    (void)sig;
    say("exit_paths: own SIGSEGV handler ran\n");
    _exit(42);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        say("usage: exit_paths _exit|_Exit|abort|segv|handler|exit|return [CODE]\n");
        return 1;
    }
    const char *mode = argv[1];
    int code = argc > 2 ? atoi(argv[2]) : 7;

    for (int i = 0; i < 3; i++) site_small(i);
    site_calloc();
    site_big();
    freed_work();
    truth("site_small", 3333, 3);
    truth("site_calloc", 7777, 1);
    truth("site_big", 300000, 1);

    void (*own)(int) = NULL;
    if (!strcmp(mode, "handler")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_segv;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, NULL);
        own = on_segv;
    }
    char b[160];
    snprintf(b, sizeof b, "exit_paths: sigaction SIGSEGV=%s SIGABRT=%s SIGBUS=%s\n",
             disp(SIGSEGV, own), disp(SIGABRT, NULL), disp(SIGBUS, NULL));
    say(b);
    snprintf(b, sizeof b, "exit_paths: ending %s\n", mode);
    say(b);

    if (!strcmp(mode, "_exit")) _exit(code);
    if (!strcmp(mode, "_Exit")) _Exit(code);
    if (!strcmp(mode, "abort")) abort();
    if (!strcmp(mode, "segv") || !strcmp(mode, "handler")) {
        *null_ptr = 1;
        say("exit_paths: survived a NULL store?\n");
        return 99;
    }
    if (!strcmp(mode, "exit")) exit(code);
    if (!strcmp(mode, "return")) return code;
    say("exit_paths: unknown mode\n");
    return 1;
}
