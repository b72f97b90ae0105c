//! Serialise a snapshot and put it on disk atomically and safely.
//!
//! A dump is written to a fresh temporary file in the dump directory (O_EXCL|O_NOFOLLOW, mode
//! 0600), fsynced, then renamed into place with RENAME_NOREPLACE: a reader never sees a
//! partial file, a planted symlink is never followed and no existing file is ever replaced.
//! Retention deletes only files this process wrote.

use super::snapshot::Snapshot;
use crate::config::Config;
use crate::stack::modules;
use crate::state::State;
use serde_json::{json, Value};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Create the dump directory if needed (0700) and check we can write into it.
pub fn prepare_dir(cfg: &Config) -> Result<(), String> {
    let dir = &cfg.dir;
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            if cfg.dir_is_default {
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

/// `offheap.<pid>` — or, when dumps of an earlier process with the same pid are already in
/// the directory (after exec, or pid reuse in containers), `offheap.<pid>_<n>` with the first
/// free n from 2: a process never collides with another's files.
pub fn choose_stem(dir: &Path, pid: u32) -> String {
    let taken: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let used = |stem: &str| {
        let prefix = format!("{stem}.");
        let hidden = format!(".{stem}.");
        taken
            .iter()
            .any(|n| n.starts_with(&prefix) || n.starts_with(&hidden))
    };
    let plain = format!("offheap.{pid}");
    if !used(&plain) {
        return plain;
    }
    (2u32..)
        .map(|n| format!("offheap.{pid}_{n}"))
        .find(|s| !used(s))
        .expect("some suffix is free")
}

pub fn file_name(stem: &str, seq: u64) -> String {
    format!("{stem}.{seq:06}.json")
}

/// Build the JSON document of docs/dump-format.md.
pub fn render(st: &State, snap: &Snapshot, seq: u64, trigger: &str, pid: u32) -> Value {
    let cfg = st.config;
    let store = &st.store;
    let mut used: Vec<u32> = snap.outstanding.iter().map(|((s, _), _)| *s).collect();
    let mut cumulative = Vec::new();
    for id in 0..store.id_limit() {
        let t = store.totals(id);
        if t.allocs == 0 {
            continue;
        }
        used.push(id);
        cumulative.push(json!({
            "stack": id,
            "allocs": t.allocs,
            "frees": t.frees,
            "alloc_bytes": t.alloc_bytes,
            "free_bytes": t.free_bytes,
        }));
    }
    used.sort_unstable();
    used.dedup();
    let stacks: Vec<Value> = used
        .iter()
        .map(|&id| {
            let e = store.entry(id);
            json!({
                "id": id,
                "frames": store.frames(id),
                "end": offheap_core::stack::End::from_u8(e.end).name(),
            })
        })
        .collect();
    let outstanding: Vec<Value> = snap
        .outstanding
        .iter()
        .map(|((stack, kind), a)| {
            let mut v = json!({
                "stack": stack,
                "kind": kind.name(),
                "count": a.count,
                "bytes": a.bytes,
                "oldest_ms": a.oldest_ms,
                "newest_ms": a.newest_ms,
                "age_hist": a.age_hist,
                "by_generation": a.generation_rows().iter().map(|(g, c, b)| json!([g, c, b])).collect::<Vec<_>>(),
                "by_epoch": a.by_epoch.iter().map(|(e, (c, b))| json!([e, c, b])).collect::<Vec<_>>(),
            });
            if cfg.sample_bytes > 0 {
                v["est_count"] = json!(a.est_count);
                v["est_bytes"] = json!(a.est_bytes);
            }
            v
        })
        .collect();
    let totals: serde_json::Map<String, Value> = snap
        .totals
        .iter()
        .map(|(k, (c, b))| (k.name().to_string(), json!({"bytes": b, "count": c})))
        .collect();
    let images = modules::images_for_dump();
    let exe = images.first().map(|i| i.path.clone()).unwrap_or_default();
    let exe_build_id = images.first().and_then(|i| i.build_id.clone());
    let cmdline: Vec<String> = std::fs::read("/proc/self/cmdline")
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let (table_bytes, _) = st.live.footprint();
    let own = offheap_core::sys::own_maps_sorted();
    json!({
        "format": "offheap-dump",
        "version": super::FORMAT_VERSION,
        "header": {
            "pid": pid,
            // SAFETY: getppid has no preconditions.
            "ppid": unsafe { libc::getppid() },
            "exe": exe,
            "exe_build_id": exe_build_id,
            "cmdline": cmdline,
            "seq": seq,
            "trigger": trigger,
            "start_wall_ns": st.start_wall_ns,
            "wall_ns": offheap_core::sys::wall_ns(),
            "uptime_ms": snap.uptime_ms,
            "epoch": st.epoch.load(std::sync::atomic::Ordering::Relaxed),
            "generation": seq,
            "config": {
                "interval_s": cfg.interval_ms as f64 / 1000.0,
                "keep": cfg.keep,
                "warmup_s": cfg.warmup_ms as f64 / 1000.0,
                "max_frames": if cfg.stacks { cfg.max_frames } else { 0 },
                "sample_bytes": cfg.sample_bytes,
                "dir": cfg.dir.to_string_lossy(),
            },
            "library_version": env!("CARGO_PKG_VERSION"),
        },
        "modules": images.iter().map(|i| json!({
            "path": i.path,
            "build_id": i.build_id,
            "base": i.base,
            "ranges": i.ranges.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "stacks": stacks,
        "outstanding": outstanding,
        "cumulative": cumulative,
        "totals": totals,
        "process": super::procfs::process_memory(),
        "self": {
            "footprint_bytes": offheap_core::sys::FOOTPRINT.load(std::sync::atomic::Ordering::Relaxed),
            "resident_bytes": super::procfs::own_resident_bytes(&own),
            "table_bytes": table_bytes,
            "live_records": snap.live_records,
            "stacks": store.id_limit().saturating_sub(2),
            "stack_store_bytes": store.bytes_used(),
            "stacks_dropped": store.dropped(),
            "lost_records": st.lost_records.load(std::sync::atomic::Ordering::Relaxed),
        },
        "untracked": super::procfs::untracked(&snap.intervals, &own, &snap.malloc_addrs_mmapped),
    })
}

/// Why a write failed, for one clear line (repeated failures of the same kind stay quiet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    Directory(i32),
    Create(i32),
    Write(i32),
    Exists,
    Rename(i32),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let os = |e: &i32| std::io::Error::from_raw_os_error(*e);
        match self {
            WriteError::Directory(e) => write!(f, "cannot open the dump directory: {}", os(e)),
            WriteError::Create(e) => write!(f, "cannot create a temporary dump file: {}", os(e)),
            WriteError::Write(e) => write!(f, "cannot write the dump: {}", os(e)),
            WriteError::Exists => write!(f, "a file already exists under the dump's name; it was left untouched and this dump skipped"),
            WriteError::Rename(e) => write!(f, "cannot move the dump into place: {}", os(e)),
        }
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("generated names have no NUL")
}

/// Write `bytes` as `name` inside `dir`, atomically, never replacing or following anything.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
    let dir_c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| WriteError::Directory(libc::EINVAL))?;
    // SAFETY: dir_c is NUL-terminated; the fd is closed below on every path.
    let dfd = unsafe {
        libc::open(
            dir_c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dfd < 0 {
        return Err(WriteError::Directory(offheap_core::sys::errno()));
    }
    let result = write_in(dfd, name, bytes);
    // SAFETY: dfd was opened above.
    unsafe { libc::close(dfd) };
    result
}

fn write_in(dfd: i32, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
    let mut tmp = String::new();
    let mut fd = -1;
    for attempt in 0..4 {
        tmp = format!(".{name}.{attempt}.tmp");
        let t = cstr(&tmp);
        // SAFETY: t is NUL-terminated; O_EXCL|O_NOFOLLOW refuses anything planted there.
        fd = unsafe {
            libc::openat(
                dfd,
                t.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd >= 0 || offheap_core::sys::errno() != libc::EEXIST {
            break;
        }
    }
    if fd < 0 {
        return Err(WriteError::Create(offheap_core::sys::errno()));
    }
    let t = cstr(&tmp);
    let unlink_tmp = || {
        // SAFETY: t names the temporary file we created.
        unsafe { libc::unlinkat(dfd, t.as_ptr(), 0) };
    };
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: the slice is valid for its length.
        let n = unsafe { libc::write(fd, bytes[off..].as_ptr().cast(), bytes.len() - off) };
        if n < 0 {
            let e = offheap_core::sys::errno();
            if e == libc::EINTR {
                continue;
            }
            // SAFETY: fd was opened above.
            unsafe { libc::close(fd) };
            unlink_tmp();
            return Err(WriteError::Write(e));
        }
        off += n as usize;
    }
    // SAFETY: fd was opened above.
    let synced = unsafe { libc::fsync(fd) };
    let sync_err = offheap_core::sys::errno();
    // SAFETY: fd was opened above.
    unsafe { libc::close(fd) };
    if synced != 0 {
        unlink_tmp();
        return Err(WriteError::Write(sync_err));
    }
    let f = cstr(name);
    const RENAME_NOREPLACE: u32 = 1;
    // SAFETY: both names are NUL-terminated and relative to dfd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            dfd,
            t.as_ptr(),
            dfd,
            f.as_ptr(),
            RENAME_NOREPLACE,
        )
    };
    if rc != 0 {
        let e = offheap_core::sys::errno();
        if e == libc::EEXIST {
            unlink_tmp();
            return Err(WriteError::Exists);
        }
        // Filesystems without RENAME_NOREPLACE: link(2) also refuses to replace.
        // SAFETY: as above.
        let linked = unsafe { libc::linkat(dfd, t.as_ptr(), dfd, f.as_ptr(), 0) };
        let le = offheap_core::sys::errno();
        unlink_tmp();
        if linked != 0 {
            return Err(if le == libc::EEXIST {
                WriteError::Exists
            } else {
                WriteError::Rename(le)
            });
        }
    }
    Ok(())
}

/// Delete our own dump `name` from `dir` (retention).
pub fn remove(dir: &Path, name: &str) {
    let path = dir.join(name);
    if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: c is NUL-terminated; unlink never follows a final symlink.
        unsafe { libc::unlink(c.as_ptr()) };
    }
}

/// Which of our dumps to drop when over the limit: never the first or the last; the interior
/// one whose neighbours are closest, so the survivors stay evenly spread in time.
pub fn retention_victim(times: &[u64]) -> Option<usize> {
    if times.len() < 3 {
        return None;
    }
    (1..times.len() - 1).min_by_key(|&i| (times[i + 1] - times[i - 1], i))
}
