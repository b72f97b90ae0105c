//! `offheap run -- <cmd…>`: run a command with liboffheap preloaded into a fresh dump
//! directory, pass SIGINT/SIGTERM/SIGHUP sent to offheap on to it, then print the report and
//! return its exit status (1 when it left no dump to report on).

use crate::read;
use crate::{ReportArgs, EXIT_POLICY};
use anyhow::{bail, Context, Result};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

/// `2s`, `500ms`, `1.5m`, `1h`, or plain seconds (`2`, `0.5`) → seconds.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, scale) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
        .iter()
        .find_map(|(suffix, k)| t.strip_suffix(suffix).map(|n| (n, *k)))
        .unwrap_or((t, 1.0));
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (examples: 2s, 500ms, 1m, 10)"))?;
    let secs = v * scale;
    if !secs.is_finite() || secs < 0.1 {
        return Err(format!(
            "{s:?} is too short: the library dumps at most every 0.1 s"
        ));
    }
    Ok(secs)
}

/// OFFHEAP_LIB, else `liboffheap.so` next to this executable (both come out of the same
/// cargo target directory).
pub fn find_library() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("OFFHEAP_LIB") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("OFFHEAP_LIB={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot locate the offheap executable")?;
    let cand = exe.with_file_name("liboffheap.so");
    if cand.is_file() {
        return Ok(cand);
    }
    bail!(
        "cannot find liboffheap.so: set OFFHEAP_LIB=/path/to/liboffheap.so or put it next to {} \
         (cargo build --release -p interposer builds both into target/release)",
        exe.display()
    )
}

/// Resolves a command name like the shell does.
fn which(cmd: &str) -> Option<PathBuf> {
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// Why LD_PRELOAD cannot work for this file, if it cannot: an ELF executable without a
/// PT_INTERP is started by the kernel directly (static, or static-pie), so no dynamic loader
/// ever reads LD_PRELOAD. Scripts and unreadable files are not judged.
pub fn static_reason(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = vec![0u8; 64 * 1024];
    let n = f.read(&mut head).ok()?;
    head.truncate(n);
    if head.get(0..4)? != b"\x7fELF" {
        return None;
    }
    let class = *head.get(4)?;
    let little = *head.get(5)? == 1;
    let rd = |off: usize, len: usize| -> Option<u64> {
        let b = head.get(off..off + len)?;
        let mut v = 0u64;
        for i in 0..len {
            let byte = if little { b[len - 1 - i] } else { b[i] } as u64;
            v = (v << 8) | byte;
        }
        Some(v)
    };
    let (phoff, phentsize, phnum) = if class == 2 {
        (rd(0x20, 8)?, rd(0x36, 2)?, rd(0x38, 2)?)
    } else {
        (rd(0x1c, 4)?, rd(0x2a, 2)?, rd(0x2c, 2)?)
    };
    let e_type = rd(0x10, 2)?;
    if e_type != 2 && e_type != 3 {
        return None;
    }
    let (mut interp, mut dynamic) = (false, false);
    for i in 0..phnum {
        let off = usize::try_from(phoff + i * phentsize).ok()?;
        match rd(off, 4)? {
            3 => interp = true,
            2 => dynamic = true,
            _ => {}
        }
    }
    if interp {
        return None;
    }
    Some(format!(
        "{} is statically linked ({}), so LD_PRELOAD cannot work: no dynamic loader runs to load \
         liboffheap.so. Build it dynamically linked: for Go, with cgo and external linking \
         (CGO_ENABLED=1 go build -ldflags=-linkmode=external), which any program importing \"C\" \
         gets by default.",
        path.display(),
        if dynamic {
            "static-pie"
        } else {
            "no PT_INTERP, no PT_DYNAMIC"
        }
    ))
}

fn has_dumps(dir: &Path) -> bool {
    read::discover(&[dir.to_path_buf()], &mut read::Diagnostics::default())
        .map(|s| !s.is_empty())
        .unwrap_or(false)
}

/// Dumps hold the program's command line, addresses and stacks: a directory we create is the
/// user's alone (0700), as the library makes the ones it creates. An existing directory keeps the mode its owner gave it.
fn private_dir_builder() -> std::fs::DirBuilder {
    use std::os::unix::fs::DirBuilderExt;
    let mut b = std::fs::DirBuilder::new();
    b.mode(0o700);
    b
}

/// The dump directory and whether we created it (and may remove it again when empty).
fn fresh_dir(dir: Option<PathBuf>) -> Result<(PathBuf, bool)> {
    match dir {
        Some(d) => {
            let existed = d.exists();
            private_dir_builder()
                .recursive(true)
                .create(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            if has_dumps(&d) {
                bail!(
                    "{} already holds dumps: give an empty or new --dir so the report shows this run only",
                    d.display()
                );
            }
            Ok((d, !existed))
        }
        None => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            for i in 0..100 {
                let d = PathBuf::from(if i == 0 {
                    format!("offheap-{secs}")
                } else {
                    format!("offheap-{secs}-{i}")
                });
                if private_dir_builder().create(&d).is_ok() {
                    return Ok((d, true));
                }
            }
            bail!("cannot create a fresh dump directory in the current directory")
        }
    }
}

pub fn run(
    interval: Option<f64>,
    dir: Option<PathBuf>,
    args: &ReportArgs,
    cmd: &[String],
) -> Result<u8> {
    let Some(prog) = cmd.first() else {
        bail!("no command given")
    };
    let path = which(prog).with_context(|| format!("{prog}: command not found"))?;
    if let Some(why) = static_reason(&path) {
        if path.file_name().is_some_and(|n| n == "go") && cmd.get(1).is_some_and(|a| a == "run") {
            bail!(
                "{why}\n`go run` would track the go tool, not your program: build it \
                 (go build -o app .) and run `offheap run ./app`."
            );
        }
        bail!("{why}");
    }
    let lib = find_library()?;
    let lib = lib.canonicalize().unwrap_or(lib);
    let (dir, created) = fresh_dir(dir)?;
    let mut c = Command::new(&path);
    c.args(&cmd[1..]);
    preload(&mut c, &lib, &dir, interval);
    eprintln!("offheap: dumps go to {}", dir.display());
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            remove_if_empty(&dir, created);
            return Err(e).with_context(|| format!("cannot run {prog}"));
        }
    };
    let old = forward_signals(child.id() as i32);
    let status = child.wait();
    restore_signals(old);
    let status = status.with_context(|| format!("waiting for {prog}"))?;
    let code: u8 = match (status.code(), status.signal()) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        _ => 1,
    };
    if !has_dumps(&dir) {
        remove_if_empty(&dir, created);
        eprintln!(
            "offheap: {prog} wrote no dump (did it start? Is it statically linked, or were \
             the Go probes off? --interval 10s writes dumps while it runs){}",
            if created {
                "; the empty dump directory was removed"
            } else {
                ""
            }
        );
        return Ok(if code == 0 { crate::EXIT_ERROR } else { code });
    }
    report_after(args, dir, u64::from(child.id()), code)
}

/// The child's environment: the library first in LD_PRELOAD, the dump directory, the interval.
fn preload(c: &mut Command, lib: &Path, dir: &Path, interval: Option<f64>) {
    let abs_dir = dir.canonicalize().unwrap_or(dir.to_path_buf());
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", lib.display()),
        _ => lib.display().to_string(),
    };
    c.env("LD_PRELOAD", preload).env("OFFHEAP_DIR", abs_dir);
    if let Some(i) = interval {
        c.env("OFFHEAP_INTERVAL", format!("{i}"));
    }
}

/// Reports on the run's dumps; the command's status wins unless it was 0.
fn report_after(args: &ReportArgs, dir: PathBuf, child_pid: u64, code: u8) -> Result<u8> {
    let mut rargs = args.clone();
    if rargs.pid.is_none() {
        // The command itself when it wrote dumps; otherwise (it only forked workers) the
        // report's default, the process with the most dumps.
        let series = read::discover(
            std::slice::from_ref(&dir),
            &mut read::Diagnostics::default(),
        )
        .unwrap_or_default();
        rargs.pid = series
            .iter()
            .any(|s| s.pid == Some(child_pid))
            .then_some(child_pid);
    }
    match super::report::run(&rargs, &[dir]) {
        Ok(r) if code == 0 && r == EXIT_POLICY => Ok(EXIT_POLICY),
        Ok(_) => Ok(code),
        Err(e) => {
            eprintln!("offheap: error: {e:#}");
            Ok(if code == 0 { crate::EXIT_ERROR } else { code })
        }
    }
}

fn remove_if_empty(dir: &Path, created: bool) {
    if created {
        // Fails (and keeps the directory) when anything was written into it.
        let _ = std::fs::remove_dir(dir);
    }
}

/// The child that signals sent to offheap go to (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);

const FORWARDED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A terminal's ^C reaches the whole foreground process group, the child included: pass
    // on only signals sent to offheap itself (kill, timeout, systemd), so the child never
    // gets one twice.
    // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler.
    let from_kernel = unsafe { (*info).si_code } == libc::SI_KERNEL;
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 && !from_kernel {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

type Saved = [libc::sigaction; 3];

fn forward_signals(child: i32) -> Saved {
    CHILD.store(child, Ordering::Relaxed);
    // SAFETY: installs a handler that only reads an atomic and calls kill; the previous
    // actions are saved for `restore_signals`. Set after the spawn, so the child starts with
    // the default dispositions.
    unsafe {
        let mut old: Saved = std::mem::zeroed();
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = forward as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        for (i, &sig) in FORWARDED.iter().enumerate() {
            libc::sigaction(sig, &sa, &mut old[i]);
        }
        old
    }
}

fn restore_signals(old: Saved) {
    CHILD.store(0, Ordering::Relaxed);
    // SAFETY: restores the actions saved by `forward_signals`.
    unsafe {
        for (i, &sig) in FORWARDED.iter().enumerate() {
            libc::sigaction(sig, &old[i], std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        assert_eq!(parse_duration("2s").unwrap(), 2.0);
        assert_eq!(parse_duration("500ms").unwrap(), 0.5);
        assert_eq!(parse_duration("1.5m").unwrap(), 90.0);
        assert_eq!(parse_duration("10").unwrap(), 10.0);
        assert_eq!(parse_duration("1h").unwrap(), 3600.0);
        assert!(parse_duration("2 parsecs")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("10ms").unwrap_err().contains("too short"));
    }

    #[test]
    fn dynamic_binaries_pass_static_ones_are_refused() {
        assert!(static_reason(Path::new("/bin/sh")).is_none());
        // A pure-Go binary is statically linked.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.go"), "package main\nfunc main(){}\n").unwrap();
        std::fs::write(dir.path().join("go.mod"), "module x\ngo 1.20\n").unwrap();
        let st = Command::new("go")
            .args(["build", "-o", "static"])
            .current_dir(dir.path())
            .env("CGO_ENABLED", "0")
            .status()
            .unwrap();
        assert!(st.success());
        let why = static_reason(&dir.path().join("static")).unwrap();
        assert!(why.contains("LD_PRELOAD cannot work"), "{why}");
    }
}
