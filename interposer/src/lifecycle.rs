//! Process life: start-up, fork, thread exit and process exit.
//!
//! - Start-up (ELF constructor): read the configuration, set up the tables, discover modules,
//!   start the dumper; only then publish the state, so hooks pass through until everything
//!   they need exists. Under secure execution (setuid, AT_SECURE) nothing is set up at all.
//! - fork: every lock of ours is taken before the fork and released in both processes, so the
//!   child never inherits a lock held by a thread that does not exist there. The child keeps
//!   the parent's table (its heap is a copy of the parent's), starts its own dumper and writes
//!   its own files (its pid is in their names; `header.ppid` links them).
//! - Thread exit: the per-thread unwinder cache is released by a pthread key destructor,
//!   which runs without any allocation through the hooks.
//! - Exit: an ELF destructor writes the final dump after the program's own atexit handlers.

use crate::config;
use crate::dump;
use crate::stack::modules;
use crate::state::{self, State};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use offheap_core::stack::store::Store;
use offheap_core::table::{intervals::Intervals, live::LiveTable};

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = on_load;

#[used]
#[link_section = ".fini_array"]
static DESTRUCTOR: extern "C" fn() = on_unload;

static THREAD_KEY: AtomicU32 = AtomicU32::new(u32::MAX);
static EXITING: AtomicBool = AtomicBool::new(false);

pub fn exiting() -> bool {
    EXITING.load(Ordering::Relaxed)
}

/// 16 KiB of counters: small enough to stay in L1 next to the allocator's own data, while
/// the few sampled blocks alive at a time (one per 512 KiB live at the usual rate) keep false
/// positives, which only cost a table lookup, rare.
const SAMPLE_FILTER_SLOTS: usize = 1 << 14;

extern "C" fn on_load() {
    crate::track::as_busy(|| {
        // Which allocator to forward to matters even when we do not track (bad configuration,
        // secure execution): decide first.
        crate::hooks::real::decide();
        // SAFETY: getauxval has no preconditions.
        if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
            return;
        }
        if !config::load() {
            return;
        }
        let cfg = config::get();
        if let Err(msg) = dump::writer::prepare_dir(cfg) {
            crate::diag!("{msg}; offheap is disabled for this process");
            return;
        }
        let Some(state) = build_state(cfg) else {
            crate::diag!(
                "cannot reserve memory for the tables; offheap is disabled for this process"
            );
            return;
        };
        crate::hooks::dl::init();
        crate::stack::sidestack::init();
        modules::rebuild();
        // SAFETY: the key destructor frees only the per-thread unwinder cache.
        unsafe {
            let mut key: libc::pthread_key_t = 0;
            if libc::pthread_key_create(&mut key, Some(on_thread_exit)) == 0 {
                THREAD_KEY.store(key, Ordering::Release);
            }
            libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
        }
        if !cfg.follow_children {
            strip_self_from_preload();
        }
        state::publish(state);
        dump::dumper::start();
    });
}

fn build_state(cfg: &'static config::Config) -> Option<Box<State>> {
    let store = Store::new(cfg.max_stacks)?;
    let (filter, mask) = if cfg.sample_bytes > 0 {
        let p = offheap_core::sys::map_own(SAMPLE_FILTER_SLOTS) as *const AtomicU8;
        if p.is_null() {
            return None;
        }
        (p, SAMPLE_FILTER_SLOTS - 1)
    } else {
        (core::ptr::null(), 0)
    };
    let now_ms = offheap_core::sys::coarse_ms();
    Some(Box::new(State {
        config: cfg,
        live: LiveTable::new(),
        intervals: Intervals::new(),
        store,
        start_ms: now_ms,
        start_mono_ns: offheap_core::sys::monotonic_ns(),
        start_wall_ns: offheap_core::sys::wall_ns(),
        generation: AtomicU32::new(0),
        epoch: AtomicU8::new(0),
        sample_filter: filter,
        sample_filter_mask: mask,
        lost_records: AtomicU64::new(0),
        // SAFETY: getpid has no preconditions.
        pid: AtomicU32::new(unsafe { libc::getpid() } as u32),
        clock_ms: AtomicU32::new(0),
    }))
}

/// OFFHEAP_FOLLOW_CHILDREN=0: take our library out of LD_PRELOAD so exec'd children run
/// without it.
fn strip_self_from_preload() {
    let Some(v) = std::env::var_os("LD_PRELOAD") else {
        return;
    };
    let v = v.to_string_lossy().into_owned();
    let kept: Vec<&str> = v
        .split([':', ' '])
        .filter(|p| !p.is_empty() && !p.ends_with("liboffheap.so"))
        .collect();
    // SAFETY: called from the constructor, before the host's main runs and before we start
    // any thread of our own, so no other thread reads the environment concurrently.
    unsafe {
        if kept.is_empty() {
            std::env::remove_var("LD_PRELOAD");
        } else {
            std::env::set_var("LD_PRELOAD", kept.join(":"));
        }
    }
}

/// Remember this thread's unwinder cache so the key destructor can free it.
///
/// # Safety
/// `cache` must be the calling thread's own cache from `unwind::thread_cache`.
pub unsafe fn register_thread_cleanup(cache: *mut core::ffi::c_void) {
    let key = THREAD_KEY.load(Ordering::Acquire);
    if key != u32::MAX {
        // SAFETY: key was created by pthread_key_create; keys below 32 never allocate.
        unsafe { libc::pthread_setspecific(key, cache) };
    }
}

unsafe extern "C" fn on_thread_exit(cache: *mut libc::c_void) {
    if cache.is_null() {
        return;
    }
    crate::track::as_busy(|| {
        let ts = c_shim::thread_state();
        ts.unwind_cache = core::ptr::null_mut();
        // SAFETY: the value stored under our key is this thread's cache from
        // unwind::thread_cache, and the thread is exiting.
        unsafe { crate::stack::unwind::free_thread_cache(cache) };
    });
}

extern "C" fn on_unload() {
    EXITING.store(true, Ordering::Relaxed);
    if state::get().is_none() {
        return;
    }
    // The exiting thread may have a tiny stack (exit from a PTHREAD_STACK_MIN thread): the
    // dump runs on our own.
    crate::track::as_busy(|| crate::stack::sidestack::run(dump::dumper::final_dump));
}

extern "C" fn fork_prepare() {
    let Some(st) = state::get() else { return };
    c_shim::thread_state().busy += 1;
    modules::fork_prepare();
    crate::stack::sidestack::fork_prepare();
    st.store.fork_prepare();
    st.intervals.fork_prepare();
    st.live.fork_prepare();
    crate::OWN_ALLOCATOR.fork_prepare();
    offheap_core::sys::OWN_MAPS.lock_forever();
}

fn release_all(st: &State) {
    // SAFETY: the locks were taken in fork_prepare by this thread (or, in the child, by the
    // thread that is now the only one).
    unsafe {
        offheap_core::sys::OWN_MAPS.force_unlock();
        crate::OWN_ALLOCATOR.fork_release();
        st.live.fork_release();
        st.intervals.fork_release();
        st.store.fork_release();
        crate::stack::sidestack::fork_release();
        modules::fork_release();
    }
}

extern "C" fn fork_parent() {
    let Some(st) = state::get() else { return };
    release_all(st);
    c_shim::thread_state().busy -= 1;
}

extern "C" fn fork_child() {
    let Some(st) = state::get() else { return };
    release_all(st);
    // SAFETY: getpid has no preconditions.
    st.pid
        .store(unsafe { libc::getpid() } as u32, Ordering::Relaxed);
    dump::dumper::after_fork_in_child();
    c_shim::thread_state().busy -= 1;
}
