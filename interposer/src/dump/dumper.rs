//! The dumper thread: periodic dumps, dumps and epoch marks on request, warm-up, and the
//! final dump at exit (written by the exiting thread itself).
//!
//! The thread is a raw pthread with every signal blocked and the busy flag set for its whole
//! life, so nothing it does is tracked or interrupted by the host's handlers.

use super::control::Control;
use super::files::WriteError;
use super::writer::StacksProgress;
use super::{snapshot, writer};
use crate::state;
use offheap_core::sync::SpinLock;
use offheap_format::schema::ExitInfo;
use offheap_format::Trigger;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

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
});
static RUNNING: AtomicBool = AtomicBool::new(false);
/// The listening socket's descriptor, so a forked child can close its inherited copy.
static CONTROL_FD: AtomicI32 = AtomicI32::new(-1);

pub fn start() {
    // SAFETY: a fresh pthread running `thread_main`; all signals are blocked for it by setting
    // the mask around pthread_create (the new thread inherits it) and restoring ours.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        libc::pthread_attr_setstacksize(&mut attr, 1 << 20);
        let mut tid: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut tid, &attr, thread_main, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        if rc == 0 {
            RUNNING.store(true, Ordering::Release);
        } else {
            crate::diag!(
                "cannot start the dumper thread (error {rc}); only the exit dump will be written"
            );
        }
    }
}

extern "C" fn thread_main(_: *mut libc::c_void) -> *mut libc::c_void {
    c_shim::thread_state().busy = 1;
    let name = c"offheap-dumper";
    // SAFETY: sets this thread's name; the string is NUL-terminated and short enough.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    run();
    core::ptr::null_mut()
}

fn run() {
    let Some(st) = state::get() else { return };
    let cfg = st.config;
    let mut pid = st.pid.load(Ordering::Relaxed);
    let mut control = Control::open(pid);
    CONTROL_FD.store(control.as_ref().map_or(-1, |c| c.fd()), Ordering::Relaxed);
    let mut next_due = if cfg.interval_ms > 0 {
        st.uptime_ms() + cfg.interval_ms
    } else {
        u64::MAX
    };
    let mut warm = cfg.warmup_ms == 0;
    loop {
        if crate::lifecycle::exiting() {
            return;
        }
        // After a fork the child's dumper is a new thread; this loop belongs to one pid.
        if st.pid.load(Ordering::Relaxed) != pid {
            return;
        }
        // Every thread of the program has exited (main called pthread_exit): without us the
        // process would be over. Leave too; as the last thread, our exit ends the process the
        // way the program's last thread would have (exit(0), destructors, our exit dump).
        if only_thread_left() {
            return;
        }
        let now = st.uptime_ms();
        let wait = next_due.saturating_sub(now).min(100) as i32;
        let mut pfd = libc::pollfd {
            fd: control.as_ref().map_or(-1, |c| c.fd()),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd (fd -1 is ignored by poll).
        let n = unsafe { libc::poll(&mut pfd, 1, wait) };
        if n > 0 {
            if pfd.revents & libc::POLLNVAL != 0 {
                // The host closed our descriptor; the number may be reused: do not close it.
                if let Some(c) = control.take() {
                    c.forget();
                }
                pid = st.pid.load(Ordering::Relaxed);
                control = Control::open(pid);
                CONTROL_FD.store(control.as_ref().map_or(-1, |c| c.fd()), Ordering::Relaxed);
            } else if let Some(c) = &control {
                match c.accept() {
                    Ok(Some((mut stream, cmd))) => {
                        let reply = handle(&cmd);
                        let _ = stream.write_all(reply.as_bytes());
                    }
                    Ok(None) => {}
                    Err(_) => {
                        if let Some(c) = control.take() {
                            c.forget();
                        }
                        control = Control::open(pid);
                        CONTROL_FD
                            .store(control.as_ref().map_or(-1, |c| c.fd()), Ordering::Relaxed);
                    }
                }
            }
        }
        let now = st.uptime_ms();
        if !warm && now >= cfg.warmup_ms {
            warm = true;
            st.epoch.fetch_add(1, Ordering::Relaxed);
        }
        if now >= next_due {
            let _ = dump(Trigger::Interval);
            next_due = st.uptime_ms() + cfg.interval_ms;
        }
        crate::stack::modules::reclaim();
    }
}

/// Whether the calling thread is the only live one in the process. A main thread that
/// called pthread_exit stays counted (a zombie thread-group leader) until the last thread
/// goes, so with at most two threads counted, look at their states.
fn only_thread_left() -> bool {
    let state_fields = |stat: &str| -> Option<Vec<String>> {
        // The command name (field 2) may contain spaces: split after its closing ')'.
        let rest = stat.rsplit_once(')')?.1;
        Some(rest.split_whitespace().map(str::to_owned).collect())
    };
    let Some(fields) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| state_fields(&s))
    else {
        return false;
    };
    match fields.get(17).map(String::as_str) {
        Some("1") => return true,
        Some("2") => {}
        _ => return false,
    }
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    let live = tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|s| state_fields(&s))
        .filter(|f| !matches!(f.first().map(String::as_str), Some("Z") | Some("X")))
        .count();
    live == 1
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
    let seq = series.next_seq;
    let pid = st.pid.load(Ordering::Relaxed);
    crate::OWN_ALLOCATOR.reset_peak();
    let base_use = crate::OWN_ALLOCATOR.in_use();
    let started = offheap_core::sys::monotonic_ns();
    let snap = snapshot::take(st, seq as u32);
    let snapshot_ms = (offheap_core::sys::monotonic_ns() - started) as f64 / 1e6;
    // Allocations from now on belong to the next generation.
    st.generation.store(seq as u32 + 1, Ordering::Relaxed);
    if series.stem.is_none() {
        let stem = match super::files::open_dir(&cfg.dir) {
            Ok(d) => writer::choose_stem(&d, pid),
            Err(_) => offheap_format::names::stem(pid, 1),
        };
        series.stem = Some(stem);
    }
    let stem = series.stem.clone().unwrap_or_default();
    series.next_seq += 1;
    let job = writer::DumpJob {
        st,
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
                writer::remove_dump(&cfg.dir, &stem, old_seq);
            }
            Ok(cfg.dir.join(name).to_string_lossy().into_owned())
        }
        Err(e) => {
            if series.last_error != Some(e) {
                crate::diag!("dump {seq} not written to {}: {e}", cfg.dir.display());
                series.last_error = Some(e);
            }
            Err(e.to_string())
        }
    }
}

/// Exit: one last dump of what is still outstanding, then no more.
pub fn final_dump() {
    let _ = dump_with(
        Trigger::Exit,
        Some(ExitInfo {
            path: "exit".into(),
            status: None,
            signal: None,
        }),
    );
}

/// In a forked child: its own dumper, its own socket; the parent's dump history is not ours.
pub fn after_fork_in_child() {
    // SAFETY: the child is single-threaded here; a dump in progress in the parent's dumper
    // thread left the lock held by a thread that does not exist in the child.
    unsafe { SERIES_force_unlock() };
    {
        let mut s = SERIES.lock();
        s.written.clear();
        s.last_error = None;
        s.stem = None;
        // The child's series is its own: its stacks file starts empty.
        s.stacks = StacksProgress::default();
    }
    let inherited = CONTROL_FD.swap(-1, Ordering::Relaxed);
    if inherited >= 0 {
        // SAFETY: the parent's listening socket, inherited by fork; the child never uses it.
        unsafe { libc::close(inherited) };
    }
    if RUNNING.load(Ordering::Relaxed) {
        start();
    }
}

#[allow(non_snake_case)]
unsafe fn SERIES_force_unlock() {
    // SAFETY: forwarded from after_fork_in_child.
    unsafe { SERIES.force_unlock() };
}
