/*
 * Whether an unwinder starting inside each malloc-family entry point finds unwind information
 * for it (what a profiler's signal handler, or backtrace() in a crash handler, needs to reach
 * the caller): prints "<name> fde=<yes|no>" per entry point, as libgcc's _Unwind_Find_FDE
 * answers for an address one byte into the function. glibc's answer is yes for each; a
 * preload must give the same.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

struct dwarf_eh_bases {
    void *tbase, *dbase, *func;
};
extern const void *_Unwind_Find_FDE(void *pc, struct dwarf_eh_bases *bases);

int main(void) {
    static const char *const names[] = {"malloc", "free", "calloc", "realloc", "reallocarray",
                                        "memalign", "aligned_alloc", "posix_memalign", "valloc",
                                        "pvalloc", "mmap", "munmap"};
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *f = dlsym(RTLD_DEFAULT, names[i]);
        struct dwarf_eh_bases bases;
        const void *fde = f ? _Unwind_Find_FDE(f + 1, &bases) : NULL;
        printf("%s fde=%s\n", names[i], fde ? "yes" : "no");
    }
    return 0;
}
