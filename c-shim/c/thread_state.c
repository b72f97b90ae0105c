/*
 * Per-thread state of liboffheap, kept in C because stable Rust cannot declare an
 * initial-exec TLS variable: Rust's thread_local! in a cdylib is general-dynamic and pays a
 * __tls_get_addr call on every hook. An LD_PRELOADed library is part of the static TLS block,
 * so initial-exec is valid here, and the Rust side reaches the variable with one %fs-relative
 * address computation (src/lib.rs), without a call.
 *
 * The struct has no destructor and needs no lazy initialisation: zero is a valid state, so
 * glibc never calls into the allocator to set it up (it would re-enter our hooks).
 * Field order and types must match `ThreadState` in src/lib.rs.
 */
#include <stdint.h>

struct offheap_thread {
    int32_t depth;            /* >0: our own code is running on this thread ("inside") */
    int32_t initialised;      /* the sampler fields were set up for this thread */
    uint32_t stripe;          /* 1 + which counter stripe this thread updates (0 = unassigned) */
    uint32_t flags;           /* THREAD_* bits (sandboxed, dumper, ...) */
    uint64_t sample_countdown;/* bytes left until the next sampled allocation */
    uint64_t rng;             /* xorshift state for the sampler */
    uintptr_t stack_lo;       /* range known to be this thread's own mapped stack */
    uintptr_t stack_hi;
    void *unwind_cache;       /* per-thread unwinder rule cache, owned by the Rust side */
    void *side_stack;         /* top of this thread's side stack, or 0 */
    uint32_t clock_ms;        /* uptime ms cached for birth times */
    uint32_t clock_generation;/* the dump generation clock_ms was read in */
    uint32_t clock_countdown; /* allocations left before clock_ms is read again */
    uint32_t thread_slot;     /* 1 + index in the thread registry (0 = not registered) */
    uint32_t walk_slot;       /* 1 + this thread's reclamation slot for stack walks (0 = none) */
    uint32_t reserved;        /* keeps the pointers below 8-aligned without implicit padding */
    void *stripe_counters;    /* the counters of this thread's own exclusive stripe, or 0 */
    uint64_t frames[256];     /* capture buffer: never zeroed, only the filled prefix is read */
};

__attribute__((tls_model("initial-exec"), visibility("hidden")))
__thread struct offheap_thread offheap_tls;

struct offheap_thread *offheap_thread_state(void) { return &offheap_tls; }

/* The struct's size as C lays it out, for the Rust side to check its mirror against. */
const unsigned long offheap_thread_state_size = sizeof(struct offheap_thread);
