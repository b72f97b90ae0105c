/*
 * Fork-per-connection server and its client (issue 16, "Done when 6"): the shape of
 * `pgbench -C` against postgres, where every connection is a forked backend that lives for
 * one short request and exits.
 *
 *   forkserver serve [LIVE_BLOCKS [FREE_AT_EXIT]]
 *       allocates LIVE_BLOCKS (default 20000) blocks of 16-4,096 B from 8 call sites and keeps
 *       them live (the state a forked child inherits, like a postmaster's), listens on
 *       127.0.0.1 on a free port, prints "port N" and serves until killed. Per connection it
 *       forks a child that reads a request line, allocates and frees a few blocks (8 of
 *       64 B-8 KiB, the 4 first freed before the reply, the rest after), writes a reply and
 *       leaves through exit(0) (as a postgres backend does: atexit handlers and the library's
 *       exit path run). The parent reaps children without blocking between accepts. With
 *       FREE_AT_EXIT (default 0), an atexit handler in each child frees that many of the
 *       inherited blocks, as a postgres backend's OPENSSL_cleanup frees what the postmaster
 *       allocated.
 *   forkserver client PORT N
 *       N sequential cycles of connect, write a request, read the reply to EOF, close; prints
 *       "conns=N secs=S conns_per_s=R".
 *
 * Build: gcc -O2 -g -o forkserver forkserver.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void *volatile *live;
static int free_at_exit;

static void free_inherited(void) {
    for (int i = 0; i < free_at_exit; i++) free(live[i]);
}

__attribute__((noinline)) static void *site(int which, size_t n) {
    /* eight call sites, so the inherited table has a few stacks */
    switch (which & 7) {
    case 0: return malloc(n);
    case 1: return malloc(n + 1);
    case 2: return calloc(1, n);
    case 3: return malloc(n + 3);
    case 4: return malloc(n + 4);
    case 5: return calloc(2, n / 2 + 1);
    case 6: return malloc(n + 6);
    default: return malloc(n + 7);
    }
}

static void handle(int fd) {
    char req[256];
    ssize_t got = read(fd, req, sizeof req);
    if (got <= 0) exit(1);
    void *blocks[8];
    unsigned sum = 0;
    for (int i = 0; i < 8; i++) {
        size_t n = (size_t)64 << (i % 8);
        blocks[i] = malloc(n);
        if (!blocks[i]) exit(1);
        memset(blocks[i], i, n < 256 ? n : 256);
        sum += ((unsigned char *)blocks[i])[0];
    }
    for (int i = 0; i < 4; i++) free(blocks[i]);
    char reply[128];
    int len = snprintf(reply, sizeof reply, "ok %u %zd\n", sum, got);
    if (write(fd, reply, (size_t)len) != len) exit(1);
    for (int i = 4; i < 8; i++) free(blocks[i]);
    close(fd);
    exit(0);
}

__attribute__((noreturn)) static void serve(int live_blocks, int frees) {
    free_at_exit = frees < live_blocks ? frees : live_blocks;
    live = calloc((size_t)live_blocks, sizeof *live);
    for (int i = 0; i < live_blocks; i++) live[i] = site(i, (size_t)16 << (i % 9));
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket");
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(s, 128) < 0) die("listen");
    socklen_t al = sizeof a;
    if (getsockname(s, (struct sockaddr *)&a, &al) < 0) die("getsockname");
    printf("port %d\n", ntohs(a.sin_port));
    fflush(stdout);
    for (;;) {
        int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR) continue;
            die("accept");
        }
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            close(s);
            if (free_at_exit > 0) atexit(free_inherited);
            handle(c);
        }
        close(c);
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int client(int port, int n) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    const char req[] = "SELECT 1;\n";
    double t0 = now();
    for (int i = 0; i < n; i++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0) die("socket");
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
        if (write(c, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) die("write");
        char buf[256];
        size_t total = 0;
        for (;;) {
            ssize_t r = read(c, buf, sizeof buf);
            if (r < 0) die("read");
            if (r == 0) break;
            total += (size_t)r;
        }
        if (total < 3 || buf[0] != 'o') {
            fprintf(stderr, "forkserver client: bad reply\n");
            return 1;
        }
        close(c);
    }
    double secs = now() - t0;
    printf("conns=%d secs=%.4f conns_per_s=%.1f\n", n, secs, n / secs);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) serve(argc > 2 ? atoi(argv[2]) : 20000, argc > 3 ? atoi(argv[3]) : 0);
    if (argc == 4 && strcmp(argv[1], "client") == 0) return client(atoi(argv[2]), atoi(argv[3]));
    fprintf(stderr, "usage: forkserver serve [LIVE_BLOCKS [FREE_AT_EXIT]] | forkserver client PORT N\n");
    return 2;
}
