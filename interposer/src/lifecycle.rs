//! Process life, and the one place where the library is put together: start-up, threads,
//! fork, children created without fork handlers, and the end of the process.
//!
//! - Start-up (ELF constructor): read the configuration, set up the tables, discover
//!   modules, learn the main thread's stack; only then publish the state, so hooks pass
//!   through until everything they need exists. No thread is started unless
//!   `OFFHEAP_THREAD=always`: a single-threaded program stays single-threaded (see
//!   `dump::dumper` for when the dumper thread appears). Under secure execution (setuid,
//!   AT_SECURE) nothing is set up at all.
//! - fork: every lock of ours is taken before the fork and released in both processes, so the
//!   child never inherits a lock held by a thread that does not exist there. The child keeps
//!   the parent's tables (its heap is a copy) and is a series of its own; if it ends younger
//!   than OFFHEAP_CHILD_MIN it writes nothing (fork-heavy hosts pay no dump per child).
//! - Children created without our fork handlers (raw `clone`/`clone3`, `vfork`): their pid
//!   differs from the tables' owner. They never wait on a lock another thread may hold (the
//!   wait policy gives up), never write a dump, and a vfork child, which shares our memory,
//!   changes nothing of ours.
//! - Thread exit: a pthread key destructor releases the thread's unwinder cache and its
//!   registry slot.
//! - Exit: the exiting thread writes the final dump (`dump::exit`).

use crate::config::{self, ThreadMode};
use crate::dump;
use crate::room;
use crate::stack::modules;
use crate::state::{self, State};
use crate::tls;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use offheap_core::stack::store::Store;
use offheap_core::sync::Wait;
use offheap_core::table::{intervals::Intervals, live::LiveTable, young::YoungLog};
use offheap_core::threads::ThreadRegistry;

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = on_load;

#[used]
#[link_section = ".fini_array"]
static DESTRUCTOR: extern "C" fn() = on_unload;

extern "C" fn on_load() {
    tls::as_inside(|| {
        // Which allocator to forward to matters even when we do not track (bad configuration,
        // secure execution): decide first.
        crate::hooks::real::decide();
        crate::hooks::sandbox::init();
        crate::hooks::ns::init();
        crate::hooks::thread::init();
        // SAFETY: getauxval has no preconditions.
        if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
            return;
        }
        // Glibc it is: unsampled calls can jump straight to it (even when a bad configuration
        // leaves the library inert, as every call then forwards).
        #[cfg(target_arch = "x86_64")]
        if !crate::hooks::real::is_foreign() {
            crate::hooks::direct::install();
        }
        if !c_shim::layout_matches() {
            crate::diag!("liboffheap was built from mismatched halves; offheap is disabled");
            return;
        }
        // The configuration is read into Strings: without memory for them, Rust's
        // allocation-failure handler would abort the host (a tight RLIMIT_AS at start).
        if !crate::OWN_ALLOCATOR.warm_up() {
            crate::diag!("cannot map memory for its own use; offheap is disabled for this process");
            return;
        }
        if !config::load() {
            return;
        }
        let Some(cfg) = config::try_get() else { return };
        #[cfg(target_arch = "x86_64")]
        crate::verbose!("{}", crate::hooks::direct::outcome().text());
        if let Err(msg) = dump::writer::prepare_dir(cfg) {
            crate::diag!("{msg}; offheap is disabled for this process");
            return;
        }
        let address_room = room::address_room();
        let capacity = room::stack_capacity(cfg.max_stacks, address_room);
        if let Some(why) = room::too_little_room(cfg.max_stacks, capacity, address_room) {
            crate::diag!("{why}; offheap is disabled for this process");
            return;
        }
        let Some(state) = build_state(cfg, capacity, address_room) else {
            crate::diag!(
                "cannot reserve memory for the tables; offheap is disabled for this process"
            );
            return;
        };
        crate::hooks::dl::init();
        modules::rebuild();
        crate::probes::install(cfg.go_probes);
        if let Some((lo, hi)) = crate::stack::bounds::main_thread_stack() {
            tls::set_stack_bounds(lo, hi);
        }
        tls::set_flags(c_shim::THREAD_MAIN);
        offheap_core::sync::set_wait_policy(wait_policy);
        // SAFETY: the key destructor releases only what our own trampoline and caches set up.
        unsafe {
            let mut key: libc::pthread_key_t = 0;
            if libc::pthread_key_create(&mut key, Some(on_thread_exit)) == 0 {
                crate::process::set_thread_key(key);
            }
            libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
        }
        if !cfg.follow_children {
            strip_self_from_preload();
        }
        crate::process::set_tables_pid(crate::process::own_pid());
        state::publish(state);
        crate::hooks::exit::install();
        if cfg.thread == ThreadMode::Always {
            dump::dumper::start_resident();
        }
    });
    if state::get().is_none() {
        state::declare_inert();
    }
}

/// Sampling at least this many bytes apart keeps one live-table shard per group: about one
/// record per 64 KiB of live heap, 16,384 per GiB (see `LiveTable::with_one_shard_per_group`).
/// Closer sampling (tests use a few KiB to sample millions of blocks) keeps them all, so no
/// shard grows large enough to hold its lock long.
const ONE_SHARD_PER_GROUP_FROM: u64 = 64 * 1024;

fn build_state(
    cfg: &'static config::Config,
    capacity: usize,
    room: Option<room::AddressRoom>,
) -> Option<Box<State>> {
    if let (None, Some(r)) = (cfg.max_stacks, room) {
        crate::verbose!(
            "RLIMIT_AS leaves {} MiB: the stack store keeps up to {capacity} stacks ({} KiB of \
             address space; OFFHEAP_MAX_STACKS sets it)",
            r.room >> 20,
            Store::reserved_bytes(capacity) >> 10
        );
    }
    let store = Store::new(capacity)?;
    let now_ms = offheap_core::sys::coarse_ms();
    let first_due = if cfg.interval_ms > 0 {
        cfg.interval_ms
    } else {
        u64::MAX
    };
    // Built in place in zeroed memory (a fresh mapping: our allocator maps blocks this large
    // and does not write them), so that the live table's 256 KiB of empty shards stay
    // unbacked: written out here they were 64 of a `$(/bin/true)` child's ~285 page faults.
    let layout = std::alloc::Layout::new::<State>();
    // SAFETY: State is not zero-sized. A failure gives null (checked below): Box::new_zeroed
    // would abort the host instead, where we only want to stay out of its way.
    let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut State;
    if p.is_null() {
        return None;
    }
    if cfg.sample_bytes == 0 {
        // Before publication: a block tracked once the state is out must find its bit set.
        state::SAMPLE_FILTER.maybe_everywhere();
    }
    let one_shard_per_group = cfg.sample_bytes >= ONE_SHARD_PER_GROUP_FROM;
    // SAFETY: `(*p).live` is aligned, writable and zeroed (alloc_zeroed), as init_zeroed needs.
    unsafe { LiveTable::init_zeroed(core::ptr::addr_of_mut!((*p).live), one_shard_per_group) };
    macro_rules! put {
        ($field:ident, $value:expr) => {
            // SAFETY: a field of the new state's memory, aligned and writable, written once here
            // before anything reads it; what it held (zeroes) needs no drop.
            unsafe { core::ptr::addr_of_mut!((*p).$field).write($value) }
        };
    }
    put!(config, cfg);
    put!(young, YoungLog::new());
    put!(intervals, Intervals::new());
    put!(store, store);
    put!(threads, ThreadRegistry::new());
    put!(start_ms, now_ms);
    put!(start_wall_ns, offheap_core::sys::wall_ns());
    put!(generation, AtomicU32::new(0));
    put!(epoch, AtomicU8::new(0));
    put!(lost_records, AtomicU64::new(0));
    put!(next_due_ms, AtomicU64::new(first_due));
    put!(child_born_ms, AtomicU64::new(u64::MAX));
    put!(stacks_from_ms, AtomicU64::new(0));
    put!(dump_starting, AtomicBool::new(false));
    put!(address_limit, room.map(|r| r.limit));
    // SAFETY: `p` came from the global allocator with State's layout, `live` was made by
    // init_zeroed and every other field written above (the pattern in
    // `every_state_field_is_built` lists them all, so a new field does not compile until it
    // is written here too).
    Some(unsafe { Box::from_raw(p) })
}

/// Never called: its exhaustive pattern fails to compile when `State` gains a field, which
/// must then also be written in `build_state`.
#[allow(dead_code)]
fn every_state_field_is_built(s: State) {
    let State {
        config: _,
        live: _,
        young: _,
        intervals: _,
        store: _,
        threads: _,
        start_ms: _,
        start_wall_ns: _,
        generation: _,
        epoch: _,
        lost_records: _,
        next_due_ms: _,
        child_born_ms: _,
        stacks_from_ms: _,
        dump_starting: _,
        address_limit: _,
    } = s;
}

/// What a thread waiting for one of our locks does (see `offheap_core::sync`).
fn wait_policy(rounds: u32) -> Wait {
    if crate::process::sandboxed() {
        return Wait::Spin;
    }
    // Every ~256 rounds (a millisecond or so of waiting), or at once when an orphan was
    // seen here before: is this a child whose lock holder does not exist? getpid is one
    // cheap system call, made only on this slow path.
    let ask = rounds.is_multiple_of(256) || (rounds == 1 && crate::process::orphan_suspected());
    if ask && crate::process::orphaned() {
        return Wait::GiveUp;
    }
    Wait::Yield
}

/// OFFHEAP_FOLLOW_CHILDREN=0: take our library out of LD_PRELOAD so exec'd children run
/// without it.
///
/// The environment is edited in place, in the array the process started with: a program may
/// read that array through `main`'s third argument (bash builds its children's environment
/// from it), where setenv's copy would never show.
fn strip_self_from_preload() {
    extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    // SAFETY: called from the constructor, before the host's main runs and before any thread
    // of ours exists: nothing reads or writes the environment concurrently. `environ` is the
    // NULL-terminated array the kernel and libc set up.
    unsafe {
        let env = environ;
        if env.is_null() {
            return;
        }
        let mut i = 0;
        while !(*env.add(i)).is_null() {
            let entry = std::ffi::CStr::from_ptr(*env.add(i)).to_bytes();
            if let Some(value) = entry.strip_prefix(b"LD_PRELOAD=") {
                let kept = kept_preloads(value);
                if kept.is_empty() {
                    // Shift the rest (and the terminating NULL) down over this entry.
                    let mut j = i;
                    while !(*env.add(j)).is_null() {
                        *env.add(j) = *env.add(j + 1);
                        j += 1;
                    }
                    continue;
                }
                let mut replaced = b"LD_PRELOAD=".to_vec();
                replaced.extend_from_slice(&kept);
                replaced.push(0);
                // Leaked on purpose: the environment points at it for the process's life.
                *env.add(i) = Box::leak(replaced.into_boxed_slice()).as_mut_ptr().cast();
            }
            i += 1;
        }
    }
}

/// LD_PRELOAD's entries without our library, joined with ':'.
fn kept_preloads(value: &[u8]) -> Vec<u8> {
    value
        .split(|&b| b == b':' || b == b' ')
        .filter(|p| !p.is_empty() && !p.ends_with(b"liboffheap.so"))
        .collect::<Vec<_>>()
        .join(&b':')
}

unsafe extern "C" fn on_thread_exit(_: *mut libc::c_void) {
    // This thread leaves through glibc, with code 0: should it be the program's last, an
    // earlier thread's raw exit code is not the process's status.
    crate::process::note_raw_thread_exit(0);
    tls::as_inside(|| {
        let cache = tls::take_unwind_cache();
        // SAFETY: the cache is this thread's own from unwind::thread_cache; the thread is
        // exiting and no hook runs on it after its key destructors.
        unsafe { crate::stack::unwind::free_thread_cache(cache) };
        let slot = tls::take_thread_slot();
        crate::stack::sidestack::release();
        modules::thread_exiting();
        crate::track::release_stripe();
        if let Some(st) = state::get() {
            let left = st.threads.unregister(slot);
            if left == 0 && crate::process::main_exited() {
                dump::dumper::leave_before_the_last_thread();
            }
        }
    });
}

extern "C" fn on_unload() {
    dump::exit::exit_dump("exit", None, None);
}

extern "C" fn fork_prepare() {
    let Some(st) = state::get() else { return };
    // SAFETY: depth is only touched through the raw pointer.
    unsafe { (*c_shim::thread_state_ptr()).depth += 1 };
    modules::fork_prepare();
    st.threads.fork_prepare();
    st.store.fork_prepare();
    st.intervals.fork_prepare();
    crate::OWN_ALLOCATOR.fork_prepare();
    offheap_core::sys::OWN_MAPS.lock_forever();
    // Still inside until our parent/child handler: other libraries' handlers that run
    // meanwhile must not take the locks we hold; their mallocs and frees are written down.
    crate::track::forklog::open();
}

fn release_all(st: &State) {
    // SAFETY: the locks were taken in fork_prepare by this thread (or, in the child, by the
    // thread that is now the only one).
    unsafe {
        offheap_core::sys::OWN_MAPS.force_unlock();
        crate::OWN_ALLOCATOR.fork_release();
        st.intervals.fork_release();
        st.store.fork_release();
        st.threads.fork_release();
        modules::fork_release();
    }
}

extern "C" fn fork_parent() {
    let Some(st) = state::get() else { return };
    crate::track::forklog::end();
    release_all(st);
    // SAFETY: as in fork_prepare.
    unsafe { (*c_shim::thread_state_ptr()).depth -= 1 };
    crate::track::play_fork_log();
}

extern "C" fn fork_child() {
    let Some(st) = state::get() else { return };
    crate::track::forklog::end();
    release_all(st);
    // SAFETY: the fork child handler runs in the child's only thread, before its program
    // code, so nothing uses the table meanwhile.
    unsafe { st.live.after_fork_in_child() };
    // SAFETY: as above.
    unsafe { state::SAMPLE_FILTER.after_fork_in_child() };
    crate::process::set_tables_pid(crate::process::own_pid());
    let born = st.uptime_ms();
    st.child_born_ms.store(born, Ordering::Relaxed);
    if st.config.child_min_ms > 0 {
        st.stacks_from_ms
            .store(born + st.config.child_min_ms, Ordering::Relaxed);
        // SAFETY: as above: the child's only thread, before its program code.
        unsafe { st.young.open_in_child() };
    }
    let slot = tls::thread_slot();
    st.threads.keep_only(slot);
    modules::fork_child();
    crate::track::stripes_after_fork();
    if st.config.sample_bytes > 0 {
        // The child draws its own sampling gaps (with the parent's countdown and generator it
        // would sample at the very byte offsets the parent does).
        tls::restart_sampler();
    }
    dump::dumper::after_fork_in_child();
    // SAFETY: as in fork_prepare.
    unsafe { (*c_shim::thread_state_ptr()).depth -= 1 };
    crate::track::play_fork_log();
}
