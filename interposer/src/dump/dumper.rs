//! When dumps are written, and by which thread.
//!
//! - A program that starts threads of its own gets the resident dumper thread: periodic
//!   dumps, `offheap snapshot|mark` over the control socket, the warm-up epoch. It sleeps
//!   until the next of those is due; it does nothing periodic beyond what the interval needs.
//! - A single-threaded program stays single-threaded: a periodic dump falling due is noticed
//!   by a hook (the per-thread clock refresh), which starts a thread for that one dump; it
//!   leaves again afterwards. With `OFFHEAP_THREAD=never` the program's own thread writes the
//!   dump in that call instead; with `always` the resident thread runs from the start.
//! - The exit dump is written by the exiting thread itself (`dump::exit::exit_dump`).
//!
//! Our threads have every signal blocked, are inside the library for life (nothing they do
//! is tracked), and have a descriptor table of their own (see `private_descriptors_for`).

use super::control::Control;
use super::files::WriteError;
use super::writer::StacksProgress;
use super::{snapshot, writer};
use crate::state;
use offheap_core::sync::SpinLock;
use offheap_format::schema::ExitInfo;
use offheap_format::Trigger;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

struct Series {
    next_seq: u64,
    /// (seq, uptime_ms) of the dumps of this process still on disk.
    written: Vec<(u64, u64)>,
    last_error: Option<WriteError>,
    finished: bool,
    /// Wall time the previous dump took from snapshot to rename, for the next dump to report.
    previous_dump_ms: f64,
    /// Extra memory the previous dump needed beyond its snapshot copy.
    previous_peak_bytes: u64,
    /// File name stem of this process's files, chosen at its first dump.
    stem: Option<String>,
    stacks: StacksProgress,
    /// The directory dumps go to and the uid it is for (see `directory`).
    dir: Option<(std::path::PathBuf, u32)>,
}

static SERIES: SpinLock<Series> = SpinLock::new(Series {
    next_seq: 0,
    written: Vec::new(),
    last_error: None,
    finished: false,
    previous_dump_ms: 0.0,
    previous_peak_bytes: 0,
    stem: None,
    stacks: StacksProgress {
        file: super::files::StacksFile {
            identity: None,
            good_len: 0,
        },
        ids_below: 0,
        modules: 0,
    },
    dir: None,
});

/// Where this process's dumps go now. A process whose effective uid changed since start (a
/// worker dropping privileges, nginx-style) can no longer write into its first directory:
/// with the default directory it switches to the default of its new uid (a series of its
/// own); with a configured OFFHEAP_DIR it stays silent: no dump, no line on the host's
/// stderr.
fn directory(series: &mut Series, cfg: &crate::config::Config) -> Option<std::path::PathBuf> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if series.dir.is_none() {
        series.dir = Some((cfg.dir.clone(), cfg.uid));
    }
    match &series.dir {
        Some((d, u)) if *u == uid => Some(d.clone()),
        Some(_) if !cfg.dir_is_default => None,
        Some(_) => {
            let d = writer::default_dir(uid);
            writer::prepare(&d, true).ok()?;
            series.stem = None;
            series.stacks = StacksProgress::default();
            series.written.clear();
            series.dir = Some((d.clone(), uid));
            Some(d)
        }
        None => None,
    }
}
/// The seq a forked child's first dump takes: children continue their parent's numbering
/// (generations, which records keep, stay comparable).
static SERIES_SEQ_IN_CHILD: AtomicU64 = AtomicU64::new(0);

/// A resident dumper thread exists (or is being started).
static RESIDENT: AtomicBool = AtomicBool::new(false);
/// The resident thread (joinable), once started.
static RESIDENT_THREAD: AtomicUsize = AtomicUsize::new(0);
/// The resident thread is asked to leave (see `leave_before_the_last_thread`).
static QUIT: AtomicBool = AtomicBool::new(false);

/// What a dumper thread is started for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// For the rest of the process: periodic dumps, the control socket, warm-up.
    Resident,
    /// One due dump for a single-threaded program; stays only if the program has started
    /// threads meanwhile.
    OneDump,
}

pub fn resident() -> bool {
    RESIDENT.load(Ordering::Acquire)
}

/// Starts the resident dumper thread unless there is one.
pub fn start_resident() {
    if RESIDENT.swap(true, Ordering::AcqRel) {
        return;
    }
    match spawn(Mode::Resident) {
        Some(t) => RESIDENT_THREAD.store(t as usize, Ordering::Release),
        None => {
            RESIDENT.store(false, Ordering::Release);
            crate::diag!("cannot start the dumper thread; only the exit dump will be written");
        }
    }
}

/// The last thread of the program is leaving (the main thread called pthread_exit): the
/// resident thread must be gone before that thread's own exit ends the process, so that the
/// process ends on a thread of the program (its stdio flushed through the program's
/// descriptors, not through our thread's private table). Called on that last thread.
pub fn leave_before_the_last_thread() {
    let t = RESIDENT_THREAD.swap(0, Ordering::AcqRel);
    if t == 0 {
        return;
    }
    QUIT.store(true, Ordering::Release);
    if state::get().is_some() {
        super::control::tell_own_dumper(crate::process::tables_pid(), "quit\n");
    }
    // SAFETY: t is our resident thread, created joinable and joined only here (the swap
    // above hands it to one caller).
    unsafe { libc::pthread_join(t as libc::pthread_t, core::ptr::null_mut()) };
}

/// A one-dump thread is running: set before it starts, cleared as it leaves (or stays on as
/// the resident thread).
static ONE_DUMP_RUNNING: AtomicBool = AtomicBool::new(false);

/// Starts a thread that writes the due dump.
pub fn start_for_one_dump() {
    ONE_DUMP_RUNNING.store(true, Ordering::Release);
    if spawn(Mode::OneDump).is_none() {
        ONE_DUMP_RUNNING.store(false, Ordering::Release);
        if let Some(st) = state::get() {
            st.dump_starting.store(false, Ordering::Release);
        }
    }
}

/// Longest a program about to need being alone waits for a one-dump thread (a dump of
/// millions of blocks takes seconds).
const ALONE_WAIT_MS: u64 = 10_000;

/// For a single-threaded program about to do what only a single-threaded process may
/// (`unshare(CLONE_NEWUSER)`, `setns`): waits until a one-dump thread of ours has written its
/// dump and ended. Without it, such a call failed with EINVAL when a periodic dump happened
/// to be in progress (4 of 20 runs at OFFHEAP_INTERVAL=1 in a host-invisibility sweep).
pub fn let_the_program_be_alone() {
    if !ONE_DUMP_RUNNING.load(Ordering::Acquire) {
        return;
    }
    let start = offheap_core::sys::coarse_ms();
    let waited = |limit: u64| offheap_core::sys::coarse_ms().saturating_sub(start) < limit;
    while ONE_DUMP_RUNNING.load(Ordering::Acquire) && waited(ALONE_WAIT_MS) {
        offheap_core::sys::sleep_ms(1);
    }
    // Flag cleared: the thread's own end follows at once, unless it stayed on as the resident
    // thread of a program that has threads now (then the program is not alone anyway).
    if state::get().is_some_and(|st| st.threads.live_count() > 0) {
        return;
    }
    let ended = offheap_core::sys::coarse_ms();
    while crate::text::threads_now().is_some_and(|n| n > 1)
        && offheap_core::sys::coarse_ms().saturating_sub(ended) < ALONE_END_WAIT_MS
    {
        offheap_core::sys::sleep_ms(1);
    }
}

/// Longest wait, once a one-dump thread said it is done, for its end.
const ALONE_END_WAIT_MS: u64 = 100;

fn spawn(mode: Mode) -> Option<libc::pthread_t> {
    // The resident thread is joinable: the program's last thread waits for it to end.
    let detached = mode == Mode::OneDump;
    // SAFETY: `thread_main` reads `arg` as a Mode, which it is.
    unsafe { start_thread(thread_main, mode as usize as *mut libc::c_void, detached) }
}

/// Starts a thread of ours running `entry(arg)` on a 1 MiB stack, with every signal blocked
/// (set around pthread_create, which the new thread inherits, then ours restored). We are
/// inside, so our own pthread_create hook passes it straight through.
///
/// # Safety
/// `entry` must be sound to run with `arg` on another thread for as long as it runs.
unsafe fn start_thread(
    entry: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
    arg: *mut libc::c_void,
    detached: bool,
) -> Option<libc::pthread_t> {
    // SAFETY: sigset_t and pthread_attr_t are plain data initialised by the calls before use;
    // every pointer is to a local; the caller vouches for `entry` with `arg`.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        if detached {
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        }
        libc::pthread_attr_setstacksize(&mut attr, 1 << 20);
        let mut tid: libc::pthread_t = 0;
        let rc = crate::tls::as_inside(|| libc::pthread_create(&mut tid, &attr, entry, arg));
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        (rc == 0).then_some(tid)
    }
}

/// Gives the calling thread a descriptor table of its own: what our code opens from now on
/// is invisible to the program's threads, which can neither close it nor be handed its
/// number. The table starts as a copy of the process's; `close_copies` closes those copies
/// (our own thread needs none of them; an exiting thread keeps them for the program's last
/// flushes). Where the kernel or a seccomp profile refuses (containers without the
/// capability), our descriptors stay in the shared table: see README.
pub fn private_descriptors_for(close_copies: bool) -> bool {
    let r = offheap_core::raw_syscall!(libc::SYS_unshare, libc::CLONE_FILES);
    if offheap_core::sys::raw::error(r).is_some() {
        return false;
    }
    if close_copies {
        let r = offheap_core::raw_syscall!(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        if offheap_core::sys::raw::error(r).is_some() {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit fills the struct.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
            for fd in 0..lim.rlim_cur.min(1 << 20) {
                let _ = offheap_core::raw_syscall!(libc::SYS_close, fd);
            }
        }
    }
    true
}

/// Writes the exit dump on a thread of its own, with a descriptor table of its own, and waits
/// for it; false when no thread could be started (nothing was written).
///
/// For an `exit` while other threads run: the exiting thread cannot take a private table
/// itself, because the program's code still runs on it after our destructor (other
/// libraries' destructors, loaded before us, run after ours) and would then close only its
/// private copies: a library whose destructor `pclose`d a pipe left the shared write end
/// open in the other threads' table, and the process hung waiting for its child's EOF.
pub fn exit_dump_on_own_thread(info: ExitInfo) -> bool {
    let mut job = Some(info);
    let arg = &mut job as *mut Option<ExitInfo> as *mut libc::c_void;
    // SAFETY: `exit_dump_main` reads `arg` as the `Option<ExitInfo>` it points to, `job` on
    // this stack, which stays until the join below has seen the thread end.
    let Some(tid) = (unsafe { start_thread(exit_dump_main, arg, false) }) else {
        return false;
    };
    // SAFETY: `tid` is the joinable thread just started, joined once, here.
    unsafe { libc::pthread_join(tid, core::ptr::null_mut()) };
    true
}

extern "C" fn exit_dump_main(arg: *mut libc::c_void) -> *mut libc::c_void {
    crate::tls::enter_for_life();
    // SAFETY: `arg` is the `Option<ExitInfo>` of `exit_dump_on_own_thread`, whose thread
    // waits in pthread_join until this one ends and touches it no more meanwhile.
    let job = unsafe { &mut *(arg as *mut Option<ExitInfo>) };
    private_descriptors_for(true);
    if let Some(info) = job.take() {
        final_dump(info);
    }
    core::ptr::null_mut()
}

/// The exiting thread's own descriptor table, for the exit dump.
pub fn private_descriptors() {
    if crate::tls::flags() & c_shim::THREAD_DUMPER != 0 {
        return;
    }
    private_descriptors_for(false);
}

extern "C" fn thread_main(arg: *mut libc::c_void) -> *mut libc::c_void {
    crate::tls::enter_for_life();
    let name = c"offheap-dumper";
    // SAFETY: sets this thread's name; the string is NUL-terminated and short enough.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    private_descriptors_for(true);
    offheap_core::sys::name_own_maps();
    let mode = if arg as usize == Mode::OneDump as usize {
        Mode::OneDump
    } else {
        Mode::Resident
    };
    if mode == Mode::OneDump {
        due_dump();
        let Some(st) = state::get() else {
            ONE_DUMP_RUNNING.store(false, Ordering::Release);
            return core::ptr::null_mut();
        };
        // Still single-threaded: leave, and the program is single-threaded again. The flag
        // goes before `dump_starting` lets the next one-dump thread start, or clearing it
        // would hide that one.
        let leave = st.threads.live_count() == 0 || RESIDENT.swap(true, Ordering::AcqRel);
        ONE_DUMP_RUNNING.store(false, Ordering::Release);
        st.dump_starting.store(false, Ordering::Release);
        if leave {
            return core::ptr::null_mut();
        }
    }
    run();
    core::ptr::null_mut()
}

/// Whatever is due now: the warm-up's epoch, a periodic dump; then when the next is due.
pub fn due_dump() {
    let Some(st) = state::get() else { return };
    let cfg = st.config;
    let now = st.uptime_ms();
    let mut next = u64::MAX;
    if cfg.warmup_ms > 0 && st.epoch.load(Ordering::Relaxed) == 0 {
        if now >= cfg.warmup_ms {
            st.epoch.fetch_add(1, Ordering::Relaxed);
        } else {
            next = cfg.warmup_ms;
        }
    }
    if cfg.interval_ms > 0 {
        let due = st.next_due_ms.load(Ordering::Relaxed);
        if now >= due {
            let _ = dump(Trigger::Interval);
            next = next.min(st.uptime_ms() + cfg.interval_ms);
        } else {
            next = next.min(due);
        }
        // The periodic schedule is the interval one; the warm-up only adds a wake-up.
        st.next_due_ms.store(
            if now >= due {
                st.uptime_ms() + cfg.interval_ms
            } else {
                due
            }
            .min(next),
            Ordering::Relaxed,
        );
    } else {
        st.next_due_ms.store(next, Ordering::Relaxed);
    }
}

/// How often the resident thread looks whether any program thread is left.
const PROGRAM_GONE_CHECK_MS: u64 = 250;

/// Every program thread has ended without ending the process: each left with the raw `exit`
/// system call (no libc exit path, no pthread_exit: how a program under strict seccomp must
/// leave), and only threads of ours keep it alive. Plain, it would have ended when its last
/// thread did; with our resident thread it lived on for ever (a host-invisibility sweep).
/// Other threads are reaped as they end; only a leader that left early stays, a zombie,
/// until the whole group ends: so one task left (us), or two of which the leader is a zombie
/// and we are not it, means the program is gone. Returns the status the leader left with
/// (0 when it is not a zombie but gone). One `stat` per check otherwise.
fn program_gone() -> Option<i32> {
    match crate::text::threads_now()? {
        1 => Some(0),
        2 => {
            let pid = crate::process::own_pid();
            // SAFETY: gettid has no preconditions.
            let me = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
            if me == pid {
                return None;
            }
            super::procfs::zombie_task_status(pid)
        }
        _ => None,
    }
}

/// The program is gone (`program_gone`, `status` the leader's as waitpid reports it): the
/// exit dump, then this thread, the last, leaves with the code the program's last thread
/// left with, which the kernel makes the process's status: the code that thread gave
/// `syscall(SYS_exit, …)` when it went through libc's `syscall` (our hook notes it), else
/// the leader's (an exit in inline assembly, by a thread other than the leader and last,
/// is the one case this gets wrong).
fn leave_after_the_program(status: i32) -> ! {
    let code = crate::process::last_raw_exit_code().unwrap_or((status >> 8) & 0xff);
    // The exit dump, written here (this thread has its own stack and descriptor table, and
    // nothing of the program is left to run): what `exit::exit_dump` does for the program's
    // exits, without its checks for a program thread.
    crate::process::set_exiting();
    if crate::OWN_ALLOCATOR.ensure_room(64 * 1024) {
        final_dump(ExitInfo {
            path: "threads-exited".to_string(),
            status: Some(i64::from(code)),
            signal: None,
        });
    }
    loop {
        // SAFETY: ends this thread only; nothing of ours runs on it afterwards.
        let _ = offheap_core::raw_syscall!(libc::SYS_exit, code as usize);
    }
}

fn run() {
    let Some(st) = state::get() else { return };
    let mut pid = crate::process::tables_pid();
    let mut control = Control::open(pid);
    let mut checked_ms = st.uptime_ms();
    loop {
        if crate::process::exiting() || crate::process::process_sandboxed() {
            return;
        }
        // After a fork the child's dumper is a new thread; this loop belongs to one pid.
        if crate::process::tables_pid() != pid {
            return;
        }
        // The program's last thread is leaving and waits for us (it must be the one that
        // ends the process).
        if QUIT.load(Ordering::Acquire) {
            RESIDENT.store(false, Ordering::Release);
            return;
        }
        let now = st.uptime_ms();
        let due = st.next_due_ms.load(Ordering::Relaxed);
        let mut wait = due.saturating_sub(now).min(i32::MAX as u64) as i32;
        if due == u64::MAX {
            wait = -1;
        }
        // Look at QUIT (without a socket nobody can wake us to leave) and at whether the
        // program is still there at least every second.
        let check = PROGRAM_GONE_CHECK_MS as i32;
        wait = if wait < 0 { check } else { wait.min(check) };
        // A library close waits for us: look again soon.
        if crate::stack::modules::closes_deferred() {
            wait = if wait < 0 { 20 } else { wait.min(20) };
        }
        let mut pfd = libc::pollfd {
            fd: control.as_ref().map_or(-1, |c| c.fd()),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd (fd -1 is ignored by poll).
        let n = unsafe { libc::poll(&mut pfd, 1, wait) };
        if n > 0 {
            if let Some(c) = &control {
                match c.accept() {
                    Ok(Some((mut stream, cmd, from_self))) => {
                        if from_self && cmd == "quit" {
                            QUIT.store(true, Ordering::Release);
                        } else {
                            let reply = handle(&cmd);
                            let _ = stream.write_all(reply.as_bytes());
                        }
                    }
                    Ok(None) => {}
                    Err(_) => {
                        pid = crate::process::tables_pid();
                        control = Control::open(pid);
                    }
                }
            }
        }
        if st.uptime_ms() >= checked_ms + PROGRAM_GONE_CHECK_MS {
            checked_ms = st.uptime_ms();
            if let Some(status) = program_gone() {
                leave_after_the_program(status);
            }
        }
        if st.uptime_ms() >= st.next_due_ms.load(Ordering::Relaxed) {
            due_dump();
        }
        crate::stack::modules::run_deferred_closes();
        crate::stack::modules::reclaim();
        offheap_core::sys::name_own_maps();
    }
}

fn handle(cmd: &str) -> String {
    let Some(st) = state::get() else {
        return "err not tracking\n".into();
    };
    match cmd {
        "snapshot" => match dump(Trigger::Demand) {
            Ok(path) => format!("ok {path}\n"),
            Err(e) => format!("err {e}\n"),
        },
        "mark" => {
            let epoch = st.epoch.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            format!("ok epoch {epoch}\n")
        }
        other => format!("err unknown command {other:?} (expected snapshot or mark)\n"),
    }
}

/// Take and write one dump; returns its path.
pub fn dump(trigger: Trigger) -> Result<String, String> {
    dump_with(trigger, None)
}

/// Take and write one dump, with how the process is ending for an exit dump.
pub fn dump_with(trigger: Trigger, exit: Option<ExitInfo>) -> Result<String, String> {
    let _no_cancel = super::NoCancellation::new();
    let _no_xfsz = super::NoFileSizeSignal::new();
    let st = state::get().ok_or("not tracking")?;
    let cfg = st.config;
    let mut series = SERIES.lock();
    if series.finished {
        return Err("the process is exiting".into());
    }
    // The exit dump is the last: set under the same lock, so a periodic dump waiting for
    // the lock cannot slip in after it.
    if trigger == Trigger::Exit {
        series.finished = true;
    }
    let copy_bytes =
        st.live.total_capacity() * core::mem::size_of::<offheap_core::table::live::Record>();
    let previous_extra = usize::try_from(series.previous_peak_bytes).unwrap_or(usize::MAX);
    if let Err(short) = super::headroom::check(copy_bytes, previous_extra) {
        crate::verbose!("dump {} skipped: {short}", series.next_seq);
        // The message is a String: made only when the pools have room for it or can get it
        // (a refused mapping is a clean "no" there; the exit dump ignores the message).
        let room = crate::OWN_ALLOCATOR.ensure_room(4096);
        return Err(if room {
            short.to_string()
        } else {
            String::new()
        });
    }
    let Some(dir) = directory(&mut series, cfg) else {
        return Err("the process's uid changed and OFFHEAP_DIR is not its own".into());
    };
    let seq = series.next_seq;
    SERIES_SEQ_IN_CHILD.store(seq + 1, Ordering::Relaxed);
    let pid = crate::process::tables_pid();
    crate::OWN_ALLOCATOR.reset_peak();
    let base_use = crate::OWN_ALLOCATOR.in_use();
    let started = offheap_core::sys::monotonic_ns();
    let snap = snapshot::take(st, seq as u32);
    let snapshot_ms = (offheap_core::sys::monotonic_ns() - started) as f64 / 1e6;
    // Allocations from now on belong to the next generation.
    st.generation.store(seq as u32 + 1, Ordering::Relaxed);
    if series.stem.is_none() {
        let stem = match super::files::open_dir(&dir) {
            Ok(d) => writer::choose_stem(&d, pid),
            Err(_) => offheap_format::names::stem(pid, 1),
        };
        series.stem = Some(stem);
    }
    let stem = series.stem.clone().unwrap_or_default();
    series.next_seq += 1;
    let job = writer::DumpJob {
        st,
        dir: &dir,
        stem: &stem,
        seq,
        trigger,
        exit,
        pid,
        previous_dump_ms: series.previous_dump_ms,
        previous_peak_bytes: series.previous_peak_bytes,
    };
    let written = writer::write(&job, &snap, snapshot_ms, &mut series.stacks);
    let copy_bytes = snap.copy_bytes;
    drop(snap);
    series.previous_dump_ms = (offheap_core::sys::monotonic_ns() - started) as f64 / 1e6;
    series.previous_peak_bytes = crate::OWN_ALLOCATOR
        .peak()
        .saturating_sub(base_use + copy_bytes) as u64;
    match written {
        Ok(name) => {
            series.last_error = None;
            series.written.push((seq, st.uptime_ms()));
            while series.written.len() > cfg.keep {
                let times: Vec<u64> = series.written.iter().map(|w| w.1).collect();
                let Some(i) = offheap_core::retention::victim(&times) else {
                    break;
                };
                let (old_seq, _) = series.written.remove(i);
                writer::remove_dump(&dir, &stem, old_seq);
            }
            Ok(dir.join(name).to_string_lossy().into_owned())
        }
        Err(e) => {
            if e.host_caused() {
                // The host's limits or its moves: a line on its stderr would be ours, not its.
                crate::verbose!("dump {seq} not written to {}: {e}", dir.display());
            } else if series.last_error != Some(e) {
                crate::diag!("dump {seq} not written to {}: {e}", dir.display());
                series.last_error = Some(e);
            }
            Err(e.to_string())
        }
    }
}

/// Exit: one last dump of what is still outstanding, then no more.
pub fn final_dump(info: ExitInfo) {
    let _ = dump_with(Trigger::Exit, Some(info));
}

/// In a forked child: a series of its own, no dumper thread until one is due.
///
/// The series is not locked across fork (a dump holds it for its whole length, and forking
/// must not wait for a dump): the parent's dumper may have been in the middle of one, so the
/// child starts a fresh series over whatever it inherited, without touching (or freeing)
/// that half-updated state.
pub fn after_fork_in_child() {
    // SAFETY: the child has one thread, this one; whoever held the lock does not exist here.
    unsafe {
        SERIES.replace_forgetting(Series {
            next_seq: SERIES_SEQ_IN_CHILD.load(Ordering::Relaxed),
            written: Vec::new(),
            last_error: None,
            finished: false,
            previous_dump_ms: 0.0,
            previous_peak_bytes: 0,
            stem: None,
            stacks: StacksProgress::default(),
            dir: None,
        })
    };
    RESIDENT.store(false, Ordering::Release);
    RESIDENT_THREAD.store(0, Ordering::Release);
    QUIT.store(false, Ordering::Release);
    // A one-dump thread of the parent's does not exist here (every unshare and setns of the
    // child waited 10 s for it).
    ONE_DUMP_RUNNING.store(false, Ordering::Release);
    if let Some(st) = state::get() {
        st.dump_starting.store(false, Ordering::Release);
        let interval = st.config.interval_ms;
        st.next_due_ms.store(
            if interval > 0 {
                st.uptime_ms() + interval
            } else {
                u64::MAX
            },
            Ordering::Relaxed,
        );
    }
}

/// The main thread is calling pthread_exit: if no other thread of the program is alive,
/// ours must go first (see `dump::dumper::leave_before_the_last_thread`).
pub fn main_thread_exiting() {
    crate::process::set_main_exited();
    if crate::state::get().is_some_and(|st| st.threads.live_count() == 0) {
        crate::tls::as_inside(leave_before_the_last_thread);
    }
}

/// The program started a thread: a multi-threaded program gets the resident dumper thread.
pub fn program_thread_started() {
    let Some(st) = crate::state::get() else {
        return;
    };
    if st.config.thread == crate::config::ThreadMode::Auto && !crate::process::sandboxed() {
        crate::tls::as_inside(start_resident);
    }
}

/// A hook saw that a periodic dump is due and no dumper thread took care of it.
pub fn dump_due_seen() {
    let Some(st) = crate::state::get() else {
        return;
    };
    if resident() || crate::process::sandboxed() || st.dump_starting.swap(true, Ordering::AcqRel) {
        return;
    }
    if crate::process::orphaned() {
        st.dump_starting.store(false, Ordering::Release);
        return;
    }
    match st.config.thread {
        // A thread for this dump only, gone again afterwards if the program is still
        // single-threaded.
        crate::config::ThreadMode::Auto | crate::config::ThreadMode::Always => start_for_one_dump(),
        // No thread ever: the program's thread writes the dump itself, now. It is inside
        // one of its own allocation calls, so nothing of the program runs meanwhile; every
        // descriptor the dump opens is closed again before the call returns.
        crate::config::ThreadMode::Never => {
            crate::tls::as_inside(|| {
                crate::stack::sidestack::run(due_dump);
            });
            st.dump_starting.store(false, Ordering::Release);
        }
    }
}
