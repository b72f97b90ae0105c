/*
 * Per-thread state of liboffheap, kept in C because stable Rust cannot declare an
 * initial-exec TLS variable: Rust's thread_local! in a cdylib is general-dynamic and pays a
 * __tls_get_addr call on every hook. An LD_PRELOADed library is part of the static TLS block,
 * so initial-exec is valid here and the access is a single %fs-relative load.
 *
 * The struct has no destructor and needs no lazy initialisation: zero is a valid state, so
 * glibc never calls into the allocator to set it up (it would re-enter our hooks).
 */
#include <stdint.h>

struct offheap_thread {
    int32_t busy;            /* re-entrancy depth: >0 means "our own code is running" */
    int32_t initialised;     /* the sampler fields were set up for this thread */
    uint32_t stripe;         /* 1 + which counter stripe this thread updates (0 = unassigned) */
    uint32_t reserved;
    int64_t sample_countdown;/* bytes left until the next sampled allocation */
    uint64_t rng;            /* xorshift state for the sampler */
    uintptr_t stack_lo;      /* readable range known to contain this thread's stack */
    uintptr_t stack_hi;
    void *unwind_cache;      /* per-thread unwinder rule cache, owned by the Rust side */
    uint64_t frames[256];    /* capture buffer: never zeroed, only the filled prefix is read */
};

static __thread struct offheap_thread offheap_tls __attribute__((tls_model("initial-exec")));

struct offheap_thread *offheap_thread_state(void) { return &offheap_tls; }
