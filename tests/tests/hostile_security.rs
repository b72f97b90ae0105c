//! Hostile world, security (issue 7).
//!
//! - Dumps are 0600 in a directory created 0700, even under umask 0.
//! - Nothing planted in the dump directory is followed or overwritten: planted before the
//!   first dump, a name under the plain stem makes the library pick the next free stem
//!   (`offheap.<pid>_2`); planted after it, under the chosen stem (a symlink and a hard link
//!   at dump names, a regular file at a dump name, symlinks at every temporary name the
//!   library tries), each write refuses it with one line per kind of failure. Retention
//!   (OFFHEAP_KEEP) deletes only the library's own dumps.
//! - A relative OFFHEAP_DIR with `.` and `..` is resolved against the start-up directory once
//!   (`header.config.dir` shows the absolute normalised path), so a later chdir moves nothing.
//! - Secure execution: a setuid-root copy of a program, run by an unprivileged user, with the
//!   library preloaded the only way ld.so allows then (a setuid library in a system
//!   directory, named without a slash): the library is mapped but stays inert (no dump, no
//!   directory). The same setup without the setuid bit does dump, so the test can fail.
//! - Malicious dumps fed to `offheap report` under a 1 GiB address-space limit: rejected with
//!   exit status 1 and an error message, never a panic, an abort or a hang.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use offheap_tests::*;

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Host output must be untouched: stdout, exit status 7, and stderr = the host's line plus
/// only lines of ours ("offheap: ..."); returns our lines.
fn host_unchanged(what: &str, out: &Outcome) -> Vec<String> {
    assert_eq!(out.status.code(), Some(7), "{what}: exit status");
    assert_eq!(out.stdout_str(), "host output\n", "{what}: stdout");
    let err = out.stderr_str();
    let mut ours = Vec::new();
    let mut host = 0;
    for l in err.lines() {
        if l == "host diagnostics" {
            host += 1;
        } else {
            assert!(
                l.starts_with("offheap: "),
                "{what}: foreign stderr line {l:?}"
            );
            ours.push(l.to_string());
        }
    }
    assert_eq!(host, 1, "{what}: host's stderr line");
    ours
}

#[test]
fn dumps_0600_in_a_directory_created_0700_even_under_umask_0() {
    let tmp = TempDir::new("h-perms");
    let host = build_host(&tmp);
    let dir = tmp.path().join("a/b/dumps");
    // umask 0 is set by sh, which then execs env (not preloaded) to preload the host only.
    // The host is single-threaded and sleeps: periodic dumps need a dumper thread on request.
    let script = format!(
        "umask 0; exec env LD_PRELOAD={} OFFHEAP_DIR={} OFFHEAP_INTERVAL=0.1 OFFHEAP_THREAD=always {} wait",
        liboffheap().display(),
        dir.display(),
        host.display()
    );
    let mut r = Running::start(
        &Cmd::new("sh")
            .args(["-c", script.as_str()])
            .timeout(Duration::from_secs(30)),
        true,
    );
    // Until two periodic dumps are there (a fixed sleep gave too few on a loaded machine).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline
        && names_in(&dir)
            .iter()
            .filter(|n| n.ends_with(".json.gz"))
            .count()
            < 2
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    r.close_stdin();
    let out = r.wait();
    assert!(host_unchanged("host wait, umask 0", &out).is_empty());
    assert_eq!(mode_of(&dir), 0o700, "the dump directory is created 0700");
    for p in [tmp.path().join("a"), tmp.path().join("a/b")] {
        assert_eq!(
            mode_of(&p) & 0o022,
            0,
            "{}: created parents are not group/other writable",
            p.display()
        );
    }
    let dumps = read_dumps(&dir);
    assert!(dumps.len() >= 3, "periodic dumps and the exit dump");
    for d in &dumps {
        assert_eq!(mode_of(&d.path), 0o600, "{}", d.path.display());
    }
    assert!(
        names_in(&dir).iter().all(|n| n.starts_with("offheap.")),
        "no temporary file left: {:?}",
        names_in(&dir)
    );
}

#[test]
fn planted_links_and_files_are_never_followed_overwritten_or_deleted() {
    let tmp = TempDir::new("h-planted");
    let host = build_host(&tmp);
    let dir = tmp.subdir("dumps");
    let victim = tmp.path().join("victim");
    let linked = tmp.path().join("linked");
    fs::write(&victim, "victim: must stay as it is\n").unwrap();
    fs::write(&linked, "linked: must stay as it is\n").unwrap();
    let ready = tmp.path().join("ready");
    let go = tmp.path().join("go");
    let ready2 = tmp.path().join("ready2");
    // OFFHEAP_KEEP=3 (the least allowed): retention runs, and must only ever delete the
    // library's own dumps.
    let mut r = Running::start(
        &Cmd::new(&host)
            .arg("all")
            .arg(&victim)
            .arg(&linked)
            .offheap(&dir)
            .env("OFFHEAP_INTERVAL", "0")
            // Snapshots on demand reach a single-threaded host only through a dumper thread.
            .env("OFFHEAP_THREAD", "always")
            .env("OFFHEAP_KEEP", "3")
            .env("READY_FILE", &ready)
            .env("GO_FILE", &go)
            .env("READY2_FILE", &ready2)
            .timeout(Duration::from_secs(30)),
        true,
    );
    let t0 = Instant::now();
    let wait_for = |p: &Path| {
        while !p.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "host never made {p:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for(&ready);
    let pid = r.pid;
    // The dumper thread opens the control socket asynchronously; wait for it, so that each
    // of the snapshots below reaches the process and the sequence numbers are known.
    let sock = format!("@offheap.{pid}");
    while !fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .any(|l| l.ends_with(&sock))
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "no control socket");
        std::thread::sleep(Duration::from_millis(5));
    }
    let snapshot = || {
        let _ = run(Cmd::new(offheap_bin())
            .args(["snapshot", &pid.to_string()])
            .timeout(Duration::from_secs(10)));
    };
    // First dump: the plain stem is taken by the planted symlink, so the library picks
    // offheap.<pid>_2 and writes seq 0 there.
    snapshot();
    let stem = format!("offheap.{pid}_2");
    assert!(
        dir.join(format!("{stem}.000000.json.gz")).exists(),
        "first dump under the next free stem: {:?}",
        names_in(&dir)
    );
    // Now that the names are predictable, plant under that stem (an attacker racing the
    // process): seq 1..3 names taken (symlink, hard link, file); seq 4: every temporary
    // name taken; seq 5..7 written. Then the exit dump, seq 8.
    fs::write(&go, "").unwrap();
    wait_for(&ready2);
    for _ in 0..7 {
        snapshot();
    }
    r.close_stdin();
    let out = r.wait();
    let ours = host_unchanged("host all", &out);
    assert!(
        !ours.is_empty() && ours.len() <= 3,
        "one clear line per kind of failure, not one per attempt: {ours:?}"
    );

    let name = |seq: u32| dir.join(format!("{stem}.{seq:06}.json.gz"));
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "victim: must stay as it is\n"
    );
    assert_eq!(
        fs::read_to_string(&linked).unwrap(),
        "linked: must stay as it is\n"
    );
    assert_eq!(
        fs::read_link(dir.join(format!("offheap.{pid}.000000.json.gz"))).unwrap(),
        victim,
        "planted symlink at the plain stem kept"
    );
    assert_eq!(
        fs::read_link(name(1)).unwrap(),
        victim,
        "planted symlink kept"
    );
    assert_eq!(
        fs::metadata(name(2)).unwrap().nlink(),
        2,
        "hard link kept, not replaced"
    );
    assert_eq!(
        fs::read_to_string(name(2)).unwrap(),
        "linked: must stay as it is\n"
    );
    assert_eq!(fs::read_to_string(name(3)).unwrap(), "precious\n");
    for a in 0..4 {
        let t = dir.join(format!(".{stem}.{:06}.json.gz.{a}.tmp", 4));
        assert_eq!(
            fs::read_link(&t).unwrap(),
            victim,
            "planted temporary-name symlink {a} kept"
        );
    }
    // The library's own dumps: seq 0 and 5..8 written; retention (OFFHEAP_KEEP=3) keeps the
    // first, the last and one between; they parse. (The harness's read_dumps would rightly
    // refuse this directory: planted files have dump names.)
    let planted: Vec<String> = std::iter::once(format!("offheap.{pid}.000000.json.gz"))
        .chain((1..4).map(|s| format!("{stem}.{s:06}.json.gz")))
        .collect();
    let own: Vec<String> = names_in(&dir)
        .into_iter()
        .filter(|n| {
            n.starts_with("offheap.") && !planted.contains(n) && n != &format!("{stem}.stacks.gz")
        })
        .collect();
    assert_eq!(
        own.len(),
        3,
        "own dumps after retention: {:?}\nstderr:\n{}",
        names_in(&dir),
        out.stderr_str()
    );
    assert_eq!(own[0], format!("{stem}.000000.json.gz"));
    assert_eq!(own[2], format!("{stem}.000008.json.gz"));
    for n in &own {
        let d: serde_json::Value = serde_json::from_slice(&gunzip(&dir.join(n))).unwrap();
        assert_eq!(d["header"]["pid"], pid, "{n}");
    }
    let last: serde_json::Value = serde_json::from_slice(&gunzip(&dir.join(&own[2]))).unwrap();
    assert_eq!(last["header"]["trigger"], "exit");
    assert_eq!(last["header"]["seq"], 8);
}

#[test]
fn relative_dot_dot_dump_dir_is_resolved_once_at_start() {
    let tmp = TempDir::new("h-reldir");
    let host = build_host(&tmp);
    let cwd = tmp.subdir("work/sub");
    tmp.subdir("x/y");
    let out = run(Cmd::new(&host)
        .arg("chdir")
        .cwd(&cwd)
        .env("LD_PRELOAD", liboffheap())
        .env("OFFHEAP_DIR", "../../x/./y/../dumps"));
    assert!(host_unchanged("host chdir", &out).is_empty());
    let expected = fs::canonicalize(tmp.path()).unwrap().join("x/dumps");
    let d = exit_dump(&expected, out.pid);
    assert_eq!(
        d.header()["config"]["dir"].as_str(),
        Some(expected.to_str().unwrap()),
        "header.config.dir is the absolute normalised directory"
    );
    // Re-resolving after the host's chdir("/") would have meant /x/dumps.
    assert!(
        !Path::new("/x/dumps").exists(),
        "the dump directory followed the chdir"
    );
}

/// Removes a file when dropped (the setuid library copy in a system directory).
struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn secure_execution_keeps_the_library_inert() {
    if !needs_root("make setuid copies for the secure-execution test") {
        return;
    }
    let tmp = TempDir::new("h-secure");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let src = tmp.path().join("probe.c");
    // Prints whether liboffheap is mapped and the effective uid: the test must know the
    // library really was loaded under AT_SECURE, or it would prove nothing.
    fs::write(
        &src,
        r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    char line[4096]; int loaded = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    while (f && fgets(line, sizeof line, f)) if (strstr(line, "liboffheap")) loaded = 1;
    void *p = malloc(1000); free(malloc(50));
    printf("loaded=%d euid=%d\n", loaded, (int)geteuid());
    return p ? 0 : 1;
}
"#,
    )
    .unwrap();
    let probe = cc(tmp.path(), "probe", std::slice::from_ref(&src), &["-O2"]);
    let suid = tmp.path().join("probe-suid");
    fs::copy(&probe, &suid).unwrap();
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o755)).unwrap();

    // Under AT_SECURE ld.so preloads only libraries from its system directories, named
    // without a slash, that are themselves set-user-ID.
    let sysdir = [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
    ]
    .iter()
    .map(Path::new)
    .find(|d| d.join("libc.so.6").exists())
    .expect("glibc's system library directory");
    let libname = format!("liboffheap-hostile-{}.so", std::process::id());
    let installed = RemoveOnDrop(sysdir.join(&libname));
    fs::copy(liboffheap(), &installed.0).unwrap();
    fs::set_permissions(&installed.0, fs::Permissions::from_mode(0o4755)).unwrap();

    let shared = tmp.subdir("shared");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let as_nobody = |exe: &Path, dumps: &Path| {
        run(Cmd::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "env",
            ])
            .arg(format!("LD_PRELOAD={libname}"))
            .arg(format!("OFFHEAP_DIR={}", dumps.display()))
            .arg(exe)
            .timeout(Duration::from_secs(30)))
    };

    // Control: not setuid, so not secure: the library works and dumps.
    let ctl_dir = shared.join("control");
    let ctl = as_nobody(&probe, &ctl_dir);
    ctl.assert_success("probe as nobody");
    assert_eq!(ctl.stdout_str(), "loaded=1 euid=65534\n", "control run");
    assert_eq!(
        read_dumps(&ctl_dir).len(),
        1,
        "control: the exit dump is written"
    );

    // Secure: setuid root, run by nobody.
    let sec_dir = shared.join("secure");
    let sec = as_nobody(&suid, &sec_dir);
    sec.assert_success("setuid probe as nobody");
    assert_eq!(
        sec.stdout_str(),
        "loaded=1 euid=0\n",
        "the library must be loaded under AT_SECURE for this test to mean anything"
    );
    assert_eq!(sec.stderr_str(), "", "inert means silent too");
    assert!(
        !sec_dir.exists(),
        "under secure execution the library creates no directory and writes no dump"
    );
}

// ---------------------------------------------------------------------------
// Malicious dumps
// ---------------------------------------------------------------------------

/// A valid dump to mutate: the exit dump of the host.
fn valid_dump(tmp: &TempDir) -> serde_json::Value {
    let host = build_host(tmp);
    let dir = tmp.subdir("valid");
    let out = run(Cmd::new(&host).offheap(&dir));
    assert_eq!(out.status.code(), Some(7));
    exit_dump(&dir, out.pid).json
}

/// `offheap report FILE` under a 1 GiB address-space limit: exit 1 with a short message
/// (`reject`), or for inputs that are odd but representable, either that or a successful
/// report; never a signal, a panic, an allocation failure or a hang. Returns the report
/// when one was produced.
fn assert_handled(what: &str, file: &Path, reject: bool) -> Option<serde_json::Value> {
    let script = format!(
        "ulimit -v 1048576; exec {} report --format json {}",
        offheap_bin().display(),
        file.display()
    );
    let out = run(Cmd::new("sh")
        .args(["-c", script.as_str()])
        .timeout(Duration::from_secs(60)));
    let err = out.stderr_str();
    if !reject && out.status.code() == Some(0) {
        let report = serde_json::from_str(&out.stdout_str())
            .unwrap_or_else(|e| panic!("{what}: accepted, but the report is not JSON: {e}"));
        return Some(report);
    }
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit status (signal {:?})\nstderr:\n{}",
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        &err[..err.len().min(2000)]
    );
    assert!(!err.trim().is_empty(), "{what}: no error message");
    for bad in [
        "panicked",
        "memory allocation",
        "stack overflow",
        "RUST_BACKTRACE",
    ] {
        assert!(
            !err.contains(bad),
            "{what}: not a clean rejection:\n{}",
            &err[..err.len().min(2000)]
        );
    }
    assert!(
        err.lines().count() <= 5,
        "{what}: a clean error is short:\n{}",
        &err[..err.len().min(2000)]
    );
    None
}

#[test]
fn malicious_dumps_are_rejected_cleanly_under_a_memory_limit() {
    let tmp = TempDir::new("h-malicious");
    let base = valid_dump(&tmp);
    let cases = tmp.subdir("cases");
    let n = std::cell::Cell::new(0);
    // Each case in a directory of its own (the reporter groups a directory by process).
    let write = |text: &str| -> PathBuf {
        n.set(n.get() + 1);
        let d = cases.join(format!("case{}", n.get()));
        fs::create_dir_all(&d).unwrap();
        let p = d.join("offheap.4242.000000.json");
        fs::write(&p, text).unwrap();
        p
    };
    let mutate = |f: &dyn Fn(&mut serde_json::Value)| -> String {
        let mut v = base.clone();
        f(&mut v);
        serde_json::to_string(&v).unwrap()
    };
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let nested = |field: &dyn Fn(&mut serde_json::Value)| -> String {
        mutate(&|v| field(v)).replace("\"NEST\"", &deep)
    };
    let sparse = {
        // A sparse file just under the reader's 1 GiB file limit: costs no disk, and a
        // reader that slurps it whole needs more than the address space allows.
        let d = cases.join("sparse");
        fs::create_dir_all(&d).unwrap();
        let p = d.join("offheap.4242.000000.json");
        fs::File::create(&p)
            .unwrap()
            .set_len((1 << 30) - 1)
            .unwrap();
        p
    };
    // (what, file, must be rejected): invalid input must be rejected; odd but representable
    // input may also be reported, as long as nothing wraps around or crashes.
    let files: Vec<(&str, PathBuf, bool)> = vec![
        (
            "count beyond u64",
            write(&mutate(&|v| {
                v["outstanding"][0]["count"] = serde_json::json!(1e300)
            })),
            true,
        ),
        (
            "negative bytes",
            write(&mutate(&|v| {
                v["outstanding"][0]["bytes"] = serde_json::json!(-5)
            })),
            true,
        ),
        (
            "200,000-deep nesting in header.cmdline",
            write(&nested(&|v| {
                v["header"]["cmdline"] = serde_json::json!("NEST")
            })),
            true,
        ),
        (
            "a stack of 1,000,000 frames",
            write(&mutate(&|v| {
                v["stacks"][0]["frames"] = serde_json::json!(vec![4096u64; 1_000_000])
            })),
            true,
        ),
        (
            "age_hist of 3,000,000 buckets",
            write(&mutate(&|v| {
                v["outstanding"][0]["age_hist"] = serde_json::json!(vec![1u8; 3_000_000])
            })),
            true,
        ),
        (
            "truncated JSON",
            write("{\"format\": \"offheap-dump\", \"ver"),
            true,
        ),
        ("sparse file of 1 GiB - 1 bytes", sparse, true),
        (
            "200,000-deep nesting in an unknown field",
            write(&nested(&|v| v["extra"] = serde_json::json!("NEST"))),
            false,
        ),
        (
            "u64::MAX counts and bytes that overflow when summed",
            write(&mutate(&|v| {
                let o = v["outstanding"][0].clone();
                let arr = v["outstanding"].as_array_mut().unwrap();
                for _ in 0..3 {
                    let mut e = o.clone();
                    e["count"] = serde_json::json!(u64::MAX);
                    e["bytes"] = serde_json::json!(u64::MAX);
                    arr.push(e);
                }
                v["totals"]["malloc"]["bytes"] = serde_json::json!(u64::MAX);
            })),
            false,
        ),
        (
            "stack id 2^63",
            write(&mutate(&|v| {
                v["stacks"][0]["id"] = serde_json::json!(1u64 << 63);
                v["outstanding"][0]["stack"] = serde_json::json!(1u64 << 63);
            })),
            false,
        ),
        (
            "uptime and seq at u64::MAX, interval 1e308",
            write(&mutate(&|v| {
                v["header"]["uptime_ms"] = serde_json::json!(u64::MAX);
                v["header"]["seq"] = serde_json::json!(u64::MAX);
                v["header"]["config"]["interval_s"] = serde_json::json!(1e308);
            })),
            false,
        ),
    ];

    let mut failures = Vec::new();
    for (what, f, reject) in &files {
        match std::panic::catch_unwind(|| assert_handled(what, f, *reject)) {
            Ok(Some(report)) => {
                // Accepted: sums saturate instead of wrapping to small numbers.
                if what.starts_with("u64::MAX") {
                    let t = report["tracked"]["bytes"].as_u64().unwrap_or(0);
                    if t != u64::MAX {
                        failures.push(format!("{what}: tracked bytes wrapped to {t}"));
                    }
                }
            }
            Ok(None) => {}
            Err(e) => failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            ),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malicious dumps not handled cleanly:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n----\n")
    );
}

/// Removes a path (file, symlink or directory tree) when dropped.
struct RemovePath(PathBuf);
impl Drop for RemovePath {
    fn drop(&mut self) {
        if fs::symlink_metadata(&self.0).is_ok_and(|m| m.is_dir()) {
            let _ = fs::remove_dir_all(&self.0);
        } else {
            let _ = fs::remove_file(&self.0);
        }
    }
}

#[test]
fn default_dump_dir_planted_by_another_user_is_refused() {
    // The default directory /tmp/offheap-<uid> lives in a world-writable directory: another
    // user can create it first, as a symlink to a directory they control or as an open
    // directory of their own. The library must refuse it (one line, no dump), not write the
    // victim's allocation stacks where the attacker can read them.
    if !needs_root("act as two users") {
        return;
    }
    let default = PathBuf::from("/tmp/offheap-65534");
    if fs::symlink_metadata(&default).is_ok() {
        eprintln!(
            "[offheap-tests] SKIP: {} exists already; not touching it",
            default.display()
        );
        return;
    }
    let tmp = TempDir::new("h-default-dir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let host = build_host(&tmp);
    let attacker = tmp.subdir("attacker");
    fs::set_permissions(&attacker, fs::Permissions::from_mode(0o777)).unwrap();
    let run_as_nobody = || {
        run(Cmd::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "env",
            ])
            .arg(format!("LD_PRELOAD={}", liboffheap().display()))
            .arg(&host)
            .timeout(Duration::from_secs(30)))
    };

    // 1. A symlink to the attacker's directory.
    {
        let _planted = RemovePath(default.clone());
        std::os::unix::fs::symlink(&attacker, &default).unwrap();
        let out = run_as_nobody();
        let ours = host_unchanged("default dir is a symlink", &out);
        assert_eq!(ours.len(), 1, "one line: {ours:?}");
        assert!(
            names_in(&attacker).is_empty(),
            "nothing written through the symlink"
        );
    }
    // 2. A directory owned by someone else (root here), open to all.
    {
        let _planted = RemovePath(default.clone());
        fs::create_dir(&default).unwrap();
        fs::set_permissions(&default, fs::Permissions::from_mode(0o777)).unwrap();
        let out = run_as_nobody();
        let ours = host_unchanged("default dir owned by another user", &out);
        assert_eq!(ours.len(), 1, "one line: {ours:?}");
        assert!(names_in(&default).is_empty(), "nothing written there");
    }
    // Control: with no planted directory the default works and is created private.
    {
        let _made = RemovePath(default.clone());
        let out = run_as_nobody();
        assert!(host_unchanged("default dir fresh", &out).is_empty());
        let meta = fs::symlink_metadata(&default).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.uid(), 65534);
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(read_dumps(&default).len(), 1, "the exit dump");
    }
}

#[test]
fn control_socket_refuses_other_users() {
    // `offheap snapshot`/`mark` reach a process through an abstract unix socket, which any
    // local user can connect to: only the process's own uid (or root) may be served.
    if !needs_root("act as two users") {
        return;
    }
    let tmp = TempDir::new("h-control");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let host = build_host(&tmp);
    // The reporter, where nobody can run it.
    let reporter = tmp.path().join("offheap");
    fs::copy(offheap_bin(), &reporter).unwrap();
    fs::set_permissions(&reporter, fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.subdir("dumps");
    let r = Running::start(
        &Cmd::new(&host)
            .arg("wait")
            .offheap(&dir)
            .env("OFFHEAP_INTERVAL", "0")
            .env("OFFHEAP_THREAD", "always")
            .timeout(Duration::from_secs(30)),
        true,
    );
    let pid = r.pid.to_string();
    let sock = format!("@offheap.{pid}");
    let t0 = Instant::now();
    while !fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .any(|l| l.ends_with(&sock))
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "no control socket");
        std::thread::sleep(Duration::from_millis(5));
    }
    for cmd in ["snapshot", "mark", "snapshot"] {
        let out = run(Cmd::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&reporter)
            .args([cmd, pid.as_str()])
            .timeout(Duration::from_secs(10)));
        assert_eq!(out.status.code(), Some(1), "nobody's `offheap {cmd}` fails");
    }
    // The owner is served; nobody's requests left no dump and no new epoch behind.
    run(Cmd::new(offheap_bin())
        .args(["snapshot", pid.as_str()])
        .timeout(Duration::from_secs(10)))
    .assert_success("owner's offheap snapshot");
    let mut r = r;
    r.close_stdin();
    let out = r.wait();
    assert!(host_unchanged("host wait", &out).is_empty());
    let dumps = read_dumps(&dir);
    let got: Vec<(u64, String, u64)> = dumps
        .iter()
        .map(|d| {
            (
                d.seq,
                d.trigger().to_string(),
                d.header()["epoch"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(0, "demand".to_string(), 0), (1, "exit".to_string(), 0)],
        "only the owner's snapshot and the exit dump, epoch unchanged"
    );
}
