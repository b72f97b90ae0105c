/* Links early_thread_lib.c (see there) and prints what its thread did. */
#include <stdio.h>

long join_early_thread(void);

int main(void) {
    printf("early_thread: rounds=%ld\n", join_early_thread());
    return 0;
}
