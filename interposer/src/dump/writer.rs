//! One dump on disk: the stacks-file member for what is new, then the dump itself.
//!
//! Order matters for readers and crashes: the member is appended (and, for periodic dumps,
//! fsynced) before the dump that refers to it is renamed into place, so a complete dump never
//! refers to a stack the stacks file does not hold. Everything is streamed from the snapshot
//! through gzip into the file; memory stays what the snapshot copy holds.

use super::files::{self, Fd, FdWriter, StacksFile, WriteError};
use super::rows::{Creators, NewStacks, Outstanding};
use super::snapshot::Snapshot;
use crate::config::Config;
use crate::stack::modules;
use crate::state::State;
use offheap_format::names;
use offheap_format::schema::{self, ExitInfo, Header, Module, SelfStats};
use offheap_format::write::{self as fw, DumpParts};
use offheap_format::Trigger;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Create the dump directory if needed (0700) and check we can write into it.
pub fn prepare_dir(cfg: &Config) -> Result<(), String> {
    prepare(&cfg.dir, cfg.dir_is_default)
}

/// The default dump directory of `uid`.
pub fn default_dir(uid: u32) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/tmp/offheap-{uid}"))
}

/// Create `dir` if needed (0700) and check we can write into it; a default directory must
/// also be a private directory of ours (not one planted by another user).
pub fn prepare(dir: &Path, is_default: bool) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            if is_default {
                use std::os::unix::fs::MetadataExt;
                // SAFETY: getuid has no preconditions.
                let uid = unsafe { libc::getuid() };
                if !meta.file_type().is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
                    return Err(format!(
                        "default dump directory {} is not a private directory owned by uid {uid}; set OFFHEAP_DIR",
                        dir.display()
                    ));
                }
            }
        }
        Err(_) => {
            let mut builder = std::fs::DirBuilder::new();
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.recursive(true);
            builder.create(dir).map_err(|e| {
                format!(
                    "cannot create dump directory OFFHEAP_DIR={}: {e}",
                    dir.display()
                )
            })?;
        }
    }
    let meta = std::fs::metadata(dir).map_err(|e| {
        format!(
            "cannot use dump directory OFFHEAP_DIR={}: {e}",
            dir.display()
        )
    })?;
    if !meta.is_dir() {
        return Err(format!("OFFHEAP_DIR={} is not a directory", dir.display()));
    }
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| "OFFHEAP_DIR contains a NUL byte".to_string())?;
    // SAFETY: c is NUL-terminated.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(format!(
            "dump directory OFFHEAP_DIR={} is not writable: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The stem of this process's files: `offheap.<pid>`, or `offheap.<pid>_<n>` with the first
/// free n from 2 when files of an earlier process with the same pid are there (exec keeps the
/// pid; containers reuse pids): a process never collides with another's files.
pub fn choose_stem(dir: &Fd, pid: u32) -> String {
    // Every series that wrote a dump has its stacks file (written first; retention never
    // deletes it) and started at seq 0: with neither there, no earlier process with this pid
    // left a series here, and the directory need not be listed. Listing it cost every new
    // process time in proportion to the files there: 6.5 ms with 20,000, so a script that
    // execs many children paid more for each. (Were both deleted by hand and later dumps
    // kept, our writes still never replace a file: see `write_atomic`.)
    let first = names::stem(pid, 1);
    if files::absent(dir, &names::stacks(&first)) && files::absent(dir, &names::dump(&first, 0)) {
        return first;
    }
    let taken = files::list(dir).unwrap_or_default();
    let used = |stem: &str| taken.iter().any(|n| names::belongs_to(n, stem));
    (1u32..)
        .map(|n| names::stem(pid, n))
        .find(|s| !used(s))
        .unwrap_or_else(|| names::stem(pid, u32::MAX))
}

/// What a series remembers between dumps about its stacks file.
#[derive(Default)]
pub struct StacksProgress {
    pub file: StacksFile,
    /// Stacks with ids below this are in the file.
    pub ids_below: u32,
    /// Modules (in `modules::images_for_dump` order) already in the file.
    pub modules: usize,
}

/// Everything one dump needs besides the snapshot.
pub struct DumpJob<'a> {
    pub st: &'a State,
    /// The directory this dump goes to (the configured one, or the default one of the uid
    /// the process runs as now).
    pub dir: &'a Path,
    pub stem: &'a str,
    pub seq: u64,
    pub trigger: Trigger,
    pub exit: Option<ExitInfo>,
    pub pid: u32,
    pub previous_dump_ms: f64,
    pub previous_peak_bytes: u64,
}

fn module_of(i: &modules::Image) -> Module {
    Module {
        path: i.path.clone(),
        build_id: i.build_id.clone(),
        base: i.base,
        ranges: i.ranges.clone().into(),
    }
}

/// Appends the stacks and modules this dump meets first. Periodic dumps fsync it.
fn write_stacks(
    dir: &Fd,
    job: &DumpJob<'_>,
    progress: &mut StacksProgress,
    sync: bool,
) -> Result<u32, WriteError> {
    let st = job.st;
    let limit = st.store.id_limit();
    let images = modules::images_for_dump();
    let new_modules: Vec<Module> = images
        .get(progress.modules..)
        .unwrap_or(&[])
        .iter()
        .map(module_of)
        .collect();
    if limit <= progress.ids_below && new_modules.is_empty() && progress.file.identity.is_some() {
        return Ok(limit);
    }
    let stacks = NewStacks::new(st, progress.ids_below, limit);
    files::append_stacks(
        dir,
        &names::stacks(job.stem),
        &mut progress.file,
        sync,
        |fd| {
            // Fast: only new stacks are here, and the first dump (or the exit dump) of a
            // large process carries all of them while the host waits.
            let mut gz = fw::gzip_buffered(FdWriter(fd), fw::Level::Fast);
            fw::write_stacks_member(&mut gz, job.seq, &new_modules, &stacks)?;
            fw::finish_gzip(gz)?.flush()
        },
    )?;
    progress.ids_below = limit;
    progress.modules = images.len();
    Ok(limit)
}

fn cmdline() -> Vec<String> {
    std::fs::read("/proc/self/cmdline")
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn header(job: &DumpJob<'_>, snap: &Snapshot, ids_below: u32) -> Header {
    let st = job.st;
    let cfg = st.config;
    let images = modules::images_for_dump();
    Header {
        pid: job.pid as u64,
        // SAFETY: getppid and geteuid have no preconditions.
        ppid: unsafe { libc::getppid() } as u64,
        // SAFETY: as above.
        uid: unsafe { libc::geteuid() } as u64,
        exe: images.first().map(|i| i.path.clone()).unwrap_or_default(),
        exe_build_id: images.first().and_then(|i| i.build_id.clone()),
        cmdline: cmdline().into(),
        seq: job.seq,
        trigger: job.trigger,
        start_wall_ns: st.start_wall_ns,
        wall_ns: offheap_core::sys::wall_ns(),
        uptime_ms: snap.uptime_ms,
        epoch: st.epoch.load(std::sync::atomic::Ordering::Relaxed) as u64,
        generation: job.seq,
        config: schema::Config {
            interval_s: cfg.interval_ms as f64 / 1000.0,
            keep: cfg.keep as u64,
            warmup_s: cfg.warmup_ms as f64 / 1000.0,
            max_frames: if cfg.stacks { cfg.max_frames as u64 } else { 0 },
            sample_bytes: cfg.sample_bytes,
            dir: job.dir.to_string_lossy().into_owned(),
            max_stacks: st.store.capacity() as u64,
            address_limit: st.address_limit,
        },
        library_version: env!("CARGO_PKG_VERSION").to_string(),
        stacks_file: Some(names::stacks(job.stem)),
        stack_ids_below: ids_below as u64,
        exit: job.exit.clone(),
        go: crate::probes::facts::go_info(),
    }
}

/// Writes the stacks member and the dump; returns the dump's file name.
pub fn write(
    job: &DumpJob<'_>,
    snap: &Snapshot,
    snapshot_ms: f64,
    progress: &mut StacksProgress,
) -> Result<String, WriteError> {
    let st = job.st;
    let cfg = st.config;
    let dir = files::open_dir(job.dir).map_err(WriteError::Directory)?;
    // An exit dump is not fsynced: the process ending does not lose the page cache, and a
    // host that forks and exits often must not pay a disk flush per child.
    let sync = job.trigger != Trigger::Exit;
    let ids_below = write_stacks(&dir, job, progress, sync)?;
    let (read, own, measured) = measure_process(snap, cfg.sample_bytes, &st.threads.stacks());
    let outstanding = Outstanding::new(
        snap,
        cfg.sample_bytes,
        measured.as_ref().map(|m| m.resident.as_slice()),
    );
    let totals = outstanding.totals();
    let (creators, threads_created) = st.threads.by_creator();
    let self_ = self_stats(job, snap, snapshot_ms, &read, &own);
    let (process, threads_live) = (read.process, read.threads_live);
    let untracked = measured
        .as_ref()
        .map(|m| m.untracked.clone())
        .unwrap_or_default();
    let h = header(job, snap, ids_below);
    let parts = DumpParts {
        header: &h,
        outstanding: &outstanding,
        cumulative: &snap.cumulative,
        threads_live,
        threads_created,
        thread_creators: &Creators(creators),
        totals: &totals,
        process: &process,
        ledger: measured.as_ref().map(|m| &m.ledger),
        self_: &self_,
        untracked: &untracked,
    };
    let name = names::dump(job.stem, job.seq);
    files::write_atomic(&dir, &name, sync, |fd| {
        let mut gz = fw::gzip_buffered(FdWriter(fd), fw::Level::Small);
        fw::write_dump(&mut gz, &parts)?;
        fw::finish_gzip(gz)?.flush()
    })?;
    Ok(name)
}

/// VmRSS, the mappings and the ledger, read from one moment: the ledger must add up to
/// VmRSS. Also our own mappings, listed after the read.
fn measure_process(
    snap: &Snapshot,
    sample_bytes: u64,
    thread_stacks: &[(u64, u64)],
) -> (
    super::ledger::SteadyRead,
    Vec<(u64, u64)>,
    Option<super::ledger::Measured>,
) {
    let read = super::ledger::read_steady();
    // Our own mappings as of after the read, so that every one the read saw is in it. Listed
    // before it, a mapping of ours made in between (the read's own buffers; another thread's
    // walk cache, ~560 KiB, or a new stripe's counters, 512 KiB, at its first tracked call) counted
    // as the host's untracked memory: a Go program's exit dump under load once showed 540 KiB.
    let own = offheap_core::sys::own_maps_sorted();
    let measured = read.vmas.as_deref().and_then(|vmas| {
        super::ledger::measure(&super::ledger::Known {
            snap,
            vmas,
            read_ms: read.ms,
            own: &own,
            thread_stacks,
            threads_live: read.threads_live,
            sample_bytes,
        })
    });
    (read, own, measured)
}

/// What the library itself costs and did, as of this dump.
fn self_stats(
    job: &DumpJob<'_>,
    snap: &Snapshot,
    snapshot_ms: f64,
    read: &super::ledger::SteadyRead,
    own: &[(u64, u64)],
) -> SelfStats {
    let st = job.st;
    let (table_bytes, _) = st.live.footprint();
    let (walks, walk_cache_hits) = crate::stack::unwind::walk_counts();
    SelfStats {
        footprint_bytes: offheap_core::sys::FOOTPRINT.load(std::sync::atomic::Ordering::Relaxed)
            as u64,
        resident_bytes: read
            .vmas
            .as_deref()
            .map_or(0, |vmas| super::ledger::own_resident(vmas, own)),
        table_bytes: table_bytes as u64,
        live_records: snap.records.len() as u64,
        stacks: st.store.id_limit().saturating_sub(2) as u64,
        stack_store_bytes: st.store.bytes_used() as u64,
        stacks_dropped: st.store.dropped(),
        lost_records: st.lost_records.load(std::sync::atomic::Ordering::Relaxed),
        broken_stacks: st.store.broken(),
        walks,
        walk_cache_hits,
        snapshot_ms,
        max_shard_hold_us: snap.max_shard_hold_ns as f64 / 1e3,
        previous_dump_ms: job.previous_dump_ms,
        previous_dump_peak_bytes: job.previous_peak_bytes,
    }
}

/// Deletes our own dump `seq` (retention).
pub fn remove_dump(dir: &Path, stem: &str, seq: u64) {
    if let Ok(d) = files::open_dir(dir) {
        files::remove(&d, &names::dump(stem, seq));
    }
}
