//! `offheap run -- <cmd…>`: run a command with liboffheap preloaded into a fresh dump
//! directory, forward its exit status, then print the report.

use crate::read;
use crate::{ReportArgs, EXIT_POLICY};
use anyhow::{bail, Context, Result};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

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

fn fresh_dir(dir: Option<PathBuf>) -> Result<PathBuf> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            if read::discover(std::slice::from_ref(&d))
                .map(|f| !f.is_empty())
                .unwrap_or(false)
            {
                bail!(
                    "{} already holds dumps: give an empty or new --dir so the report shows this run only",
                    d.display()
                );
            }
            Ok(d)
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
                if std::fs::create_dir(&d).is_ok() {
                    return Ok(d);
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
        bail!("no command given after --")
    };
    if let Some(i) = interval {
        if !(i > 0.0 && i.is_finite()) {
            bail!("--interval must be a positive number of seconds");
        }
    }
    let path = which(prog).with_context(|| format!("{prog}: command not found"))?;
    if let Some(why) = static_reason(&path) {
        bail!("{why}");
    }
    let lib = find_library()?;
    let lib = lib.canonicalize().unwrap_or(lib);
    let dir = fresh_dir(dir)?;
    let abs_dir = dir.canonicalize().unwrap_or(dir.clone());
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", lib.display()),
        _ => lib.display().to_string(),
    };
    let mut c = Command::new(&path);
    c.args(&cmd[1..])
        .env("LD_PRELOAD", preload)
        .env("OFFHEAP_DIR", &abs_dir);
    if let Some(i) = interval {
        c.env("OFFHEAP_INTERVAL", format!("{i}"));
    }
    eprintln!("offheap: dumps go to {}", dir.display());
    let mut child = c.spawn().with_context(|| format!("cannot run {prog}"))?;
    let child_pid = child.id() as u64;
    // Like a shell with a foreground job: ^C is meant for the child, and we still report after
    // it. Ignored only after the spawn, because SIG_IGN would be inherited across exec.
    let old = ignore_interrupts();
    let status = child.wait();
    restore_interrupts(old);
    let status = status.with_context(|| format!("waiting for {prog}"))?;
    let code: u8 = match (status.code(), status.signal()) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        _ => 1,
    };
    let files = read::discover(std::slice::from_ref(&dir)).unwrap_or_default();
    if files.is_empty() {
        eprintln!(
            "offheap: no dumps were written to {} (did the command start? set --interval, or \
             let it exit normally so the library writes its exit dump)",
            dir.display()
        );
        return Ok(code);
    }
    let mut rargs = args.clone();
    if rargs.pid.is_none() {
        // The command itself when it wrote dumps; otherwise (it only forked workers) the
        // report's default, the process with the most dumps.
        let has_child = files.iter().any(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .and_then(read::parse_dump_name)
                .is_some_and(|(pid, _)| pid == child_pid)
        });
        rargs.pid = has_child.then_some(child_pid);
    }
    let rep = super::report::run(&rargs, &[dir]);
    match rep {
        Ok(r) if code == 0 && r == EXIT_POLICY => Ok(EXIT_POLICY),
        Ok(_) => Ok(code),
        Err(e) => {
            eprintln!("offheap: error: {e:#}");
            Ok(if code == 0 { crate::EXIT_ERROR } else { code })
        }
    }
}

fn ignore_interrupts() -> [libc::sighandler_t; 2] {
    // SAFETY: setting SIG_IGN touches no memory of ours; the old dispositions are returned
    // for `restore_interrupts`.
    unsafe {
        [
            libc::signal(libc::SIGINT, libc::SIG_IGN),
            libc::signal(libc::SIGQUIT, libc::SIG_IGN),
        ]
    }
}

fn restore_interrupts(old: [libc::sighandler_t; 2]) {
    // SAFETY: restores the dispositions that `ignore_interrupts` returned.
    unsafe {
        libc::signal(libc::SIGINT, old[0]);
        libc::signal(libc::SIGQUIT, old[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
