/* fdbudget: how many descriptors can the host open? (issue 7: the host never notices us).
 * Opens /dev/null until open fails, prints the count and the error, closes them all and
 * exits 0. With RLIMIT_NOFILE the count is the host's whole descriptor budget; a library
 * that keeps a descriptor of its own for the process's life takes one from it.
 * It first sleeps 200 ms, like any service that reaches its limit after start-up (a
 * library opening its descriptor asynchronously has done so by then).
 * stdout: "fdbudget: opened N, then Too many open files". */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    int n = 0, last = -1, fd;
    usleep(200000);
    while ((fd = open("/dev/null", O_RDONLY)) >= 0) { n++; last = fd; }
    int err = errno;
    for (int i = 3; i <= last; i++) close(i);
    printf("fdbudget: opened %d, then %s\n", n, strerror(err));
    return 0;
}
