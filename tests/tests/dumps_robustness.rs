//! Dump robustness (issue 4 "Done when" 2, 3 and 4).
//!
//! 2. `kill -9` at random moments, 50 runs of a churning program with a dump every 0.1 s:
//!    every file under a dump name is complete and parses (the harness's `read_dumps`
//!    panics otherwise), the sequence is contiguous from 0, nothing else is left but
//!    temporary files, and `offheap report` reads the directory.
//! 3. `offheap snapshot <pid>` on a running Go service under load yields a dump within 1 s,
//!    every time; `offheap mark <pid>` starts an epoch the next dump shows, and allocations
//!    made after it are counted in the new epoch. Asking a process without the library
//!    fails cleanly.
//! 4. A dump directory that cannot be created, is a file, is on a read-only mount, is not
//!    writable by the user, is on a full tmpfs (64 KiB), or has a symlink planted at the
//!    dump's name: exactly one clear stderr line, nothing corrupted or overwritten, the
//!    host's stdout and exit status unchanged. The full disk also recovers: once space is
//!    freed, later dumps are complete.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use offheap_tests::*;

/// The host's stdout ("host output") and exit status (7) are unchanged, its stderr line is
/// there, and exactly one line of ours was added; returns that line.
fn one_added_line(what: &str, out: &Outcome) -> String {
    assert_eq!(out.status.code(), Some(7), "{what}: exit status");
    assert_eq!(out.stdout_str(), "host output\n", "{what}: stdout");
    let err = out.stderr_str();
    let ours: Vec<&str> = err.lines().filter(|l| *l != "host diagnostics").collect();
    assert_eq!(
        err.lines().filter(|l| *l == "host diagnostics").count(),
        1,
        "{what}: the host's stderr line"
    );
    assert_eq!(
        ours.len(),
        1,
        "{what}: exactly one added stderr line, got:\n{err}"
    );
    assert!(
        ours[0].starts_with("offheap: "),
        "{what}: the line says who speaks: {:?}",
        ours[0]
    );
    ours[0].to_string()
}

// ---------------------------------------------------------------------------
// Done when 2: kill -9
// ---------------------------------------------------------------------------

#[test]
fn kill_9_at_random_moments_leaves_only_complete_dumps() {
    let tmp = TempDir::new("d-kill9");
    let exe = cc(
        tmp.path(),
        "killme",
        &[hostile_src("killme.c")],
        &["-O1", "-g", "-pthread", "-fno-optimize-sibling-calls"],
    );
    const RUNS: u32 = 50;
    // Two runs at a time (2 cores); delays from a fixed LCG so a failure can be replayed.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut delays = Vec::new();
    for _ in 0..RUNS {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        delays.push(150 + (seed >> 33) % 700); // 150..850 ms: several dumps, then mid-write
    }
    let total_dumps = std::sync::atomic::AtomicUsize::new(0);
    let leftover_tmp = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for lane in 0..2u32 {
            let (tmp, exe, delays) = (&tmp, &exe, &delays);
            let (total_dumps, leftover_tmp) = (&total_dumps, &leftover_tmp);
            s.spawn(move || {
                for run_no in (lane..RUNS).step_by(2) {
                    let dir = tmp.subdir(&format!("run{run_no}"));
                    let r = Running::start(
                        &Cmd::new(exe)
                            .arg(run_no.to_string())
                            .offheap(&dir)
                            .env("OFFHEAP_INTERVAL", "0.1")
                            .timeout(Duration::from_secs(30)),
                        false,
                    );
                    std::thread::sleep(Duration::from_millis(delays[run_no as usize]));
                    // SAFETY: kill(2) of our own child.
                    unsafe { libc::kill(r.pid as i32, libc::SIGKILL) };
                    let out = r.wait();
                    assert_eq!(
                        std::os::unix::process::ExitStatusExt::signal(&out.status),
                        Some(libc::SIGKILL),
                        "run {run_no}: killed"
                    );
                    // Parses every dump-named file completely (panics on a partial one).
                    let dumps = read_dumps(&dir);
                    for (i, d) in dumps.iter().enumerate() {
                        assert_eq!(d.pid, out.pid, "run {run_no}: foreign dump");
                        assert_eq!(d.seq, i as u64, "run {run_no}: contiguous seq");
                    }
                    for n in names_in(&dir) {
                        if n == format!("offheap.{}.stacks.gz", out.pid) {
                            continue;
                        }
                        if parse_dump_name(&n).is_none() {
                            assert!(
                                n.starts_with(&format!(".offheap.{}.", out.pid))
                                    && n.ends_with(".tmp"),
                                "run {run_no}: unexpected file {n}"
                            );
                            leftover_tmp.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    if !dumps.is_empty() {
                        total_dumps.fetch_add(dumps.len(), std::sync::atomic::Ordering::Relaxed);
                        // The reporter reads the directory despite the temporary leftovers.
                        let rep = run(Cmd::new(offheap_bin())
                            .args(["report", "--format", "json"])
                            .arg(&dir)
                            .timeout(Duration::from_secs(60)));
                        rep.assert_success(&format!("offheap report on run {run_no}"));
                    }
                }
            });
        }
    });
    let total = total_dumps.into_inner();
    eprintln!(
        "kill -9: {RUNS} runs, {total} complete dumps, {} temporary leftovers",
        leftover_tmp.into_inner()
    );
    assert!(
        total >= RUNS as usize,
        "the runs lasted long enough for dumps: only {total}"
    );
}

// ---------------------------------------------------------------------------
// Done when 3: snapshot and mark on a running Go service
// ---------------------------------------------------------------------------

#[test]
fn snapshot_within_a_second_and_mark_on_a_go_service_under_load() {
    if !GoToolchain::Machine.require() {
        return;
    }
    let tmp = TempDir::new("d-demand");
    let exe = go_build(
        GoToolchain::Machine,
        "hostile/soak",
        tmp.path(),
        "soak",
        &[],
    );
    let dir = tmp.subdir("dumps");
    let svc = Running::start(
        &Cmd::new(&exe)
            .args(["-duration", "60s", "-workers", "32", "-ops", "1000"])
            .offheap(&dir)
            .env("OFFHEAP_INTERVAL", "0")
            .timeout(Duration::from_secs(90)),
        false,
    );
    let pid = svc.pid;
    let pid_s = pid.to_string();
    // The control socket exists once the dumper thread runs.
    let t0 = Instant::now();
    let sock = format!("@offheap.{pid}");
    while !fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .any(|l| l.ends_with(&sock))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no control socket {sock}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500)); // under load by now

    // One demand dump: time from starting `offheap snapshot` to the complete file.
    let snapshot = |expect_seq: u64| -> (Dump, Duration) {
        let t = Instant::now();
        run(Cmd::new(offheap_bin())
            .args(["snapshot", pid_s.as_str()])
            .timeout(Duration::from_secs(10)))
        .assert_success("offheap snapshot <pid>");
        loop {
            if let Some(d) = dumps_of(&dir, pid)
                .into_iter()
                .find(|d| d.seq == expect_seq)
            {
                assert_eq!(d.trigger(), "demand");
                return (d, t.elapsed());
            }
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "no dump seq {expect_seq} within 1 s of `offheap snapshot {pid}`"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let mut worst = Duration::ZERO;
    let mut last = None;
    for seq in 0..5 {
        let (d, took) = snapshot(seq);
        worst = worst.max(took);
        last = Some(d);
    }
    let before = last.unwrap();
    let epoch0 = before.header()["epoch"].as_u64().unwrap();
    let out = run(Cmd::new(offheap_bin())
        .args(["mark", pid_s.as_str()])
        .timeout(Duration::from_secs(10)));
    out.assert_success("offheap mark <pid>");
    std::thread::sleep(Duration::from_millis(300)); // allocations of the new epoch
    let (after, took) = snapshot(5);
    worst = worst.max(took);
    assert_eq!(
        after.header()["epoch"].as_u64(),
        Some(epoch0 + 1),
        "the dump after mark shows the new epoch"
    );
    let new_epoch_rows = after
        .outstanding()
        .iter()
        .flat_map(|o| o["by_epoch"].as_array().cloned().unwrap_or_default())
        .filter(|row| row[0].as_u64() == Some(epoch0 + 1) && row[1].as_u64() > Some(0))
        .count();
    assert!(
        new_epoch_rows > 0,
        "allocations made after the mark are counted in epoch {}",
        epoch0 + 1
    );
    // Two snapshots at once are both served.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                run(Cmd::new(offheap_bin())
                    .args(["snapshot", pid_s.as_str()])
                    .timeout(Duration::from_secs(10)))
                .assert_success("concurrent offheap snapshot");
            });
        }
    });
    let seqs: Vec<u64> = dumps_of(&dir, pid).iter().map(|d| d.seq).collect();
    assert_eq!(
        seqs,
        (0..8).collect::<Vec<_>>(),
        "every demand dump, in order"
    );
    eprintln!("snapshot: worst time to a complete dump under load {worst:?}");
    drop(svc); // kills the service (Go: no exit dump to wait for)

    // A process without the library: a clean failure, quickly.
    let mut plain = Running::start(
        &Cmd::new("sleep").arg("30").timeout(Duration::from_secs(40)),
        false,
    );
    let t = Instant::now();
    let out = run(Cmd::new(offheap_bin())
        .args(["snapshot", &plain.pid.to_string()])
        .timeout(Duration::from_secs(10)));
    assert_eq!(
        out.status.code(),
        Some(1),
        "snapshot of an untracked process fails"
    );
    assert!(
        out.stderr_str().contains("control socket"),
        "{}",
        out.stderr_str()
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(plain.is_running());
}

// ---------------------------------------------------------------------------
// Done when 4: unusable dump directories
// ---------------------------------------------------------------------------

#[test]
fn dump_dir_below_a_regular_file() {
    let tmp = TempDir::new("d-underfile");
    let host = build_host(&tmp);
    let file = tmp.path().join("file");
    fs::write(&file, "not a directory\n").unwrap();
    let out = run(Cmd::new(&host).offheap(&file.join("dumps")));
    let line = one_added_line("OFFHEAP_DIR below a file", &out);
    assert!(line.contains("OFFHEAP_DIR"), "{line}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "not a directory\n");
}

#[test]
fn dump_dir_is_a_regular_file() {
    let tmp = TempDir::new("d-isfile");
    let host = build_host(&tmp);
    let file = tmp.path().join("file");
    fs::write(&file, "precious\n").unwrap();
    let out = run(Cmd::new(&host).offheap(&file));
    let line = one_added_line("OFFHEAP_DIR is a file", &out);
    assert!(line.contains(file.to_str().unwrap()), "{line}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "precious\n");
}

#[test]
fn dump_dir_not_writable_by_the_user() {
    if !needs_root("run the host as nobody") {
        return;
    }
    let tmp = TempDir::new("d-unwritable");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let host = build_host(&tmp);
    let dir = tmp.subdir("rootonly");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(Cmd::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "env",
        ])
        .arg(format!("LD_PRELOAD={}", liboffheap().display()))
        .arg(format!("OFFHEAP_DIR={}", dir.display()))
        .arg(&host));
    let line = one_added_line("OFFHEAP_DIR not writable", &out);
    assert!(line.contains("not writable"), "{line}");
    assert!(names_in(&dir).is_empty());
}

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(at: PathBuf, opts: &str) -> Tmpfs {
        let out = run(Cmd::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(&at));
        out.assert_success("mount -t tmpfs");
        Tmpfs(at)
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run(Cmd::new("umount").arg(&self.0));
    }
}

#[test]
fn dump_dir_on_a_read_only_mount() {
    if !needs_root("mount a tmpfs") {
        return;
    }
    let tmp = TempDir::new("d-ro");
    let host = build_host(&tmp);
    let m = Tmpfs::mount(tmp.subdir("ro"), "ro,size=64k");
    let out = run(Cmd::new(&host).offheap(&m.0));
    let line = one_added_line("OFFHEAP_DIR read-only", &out);
    assert!(line.contains(m.0.to_str().unwrap()), "{line}");
    // And a directory that would have to be created on it.
    let out = run(Cmd::new(&host).offheap(&m.0.join("sub")));
    one_added_line("OFFHEAP_DIR to create on a read-only mount", &out);
}

/// Fills the filesystem of `dir` completely with `dir/filler`.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = fs::File::create(dir.join("filler")).unwrap();
    let block = [0x55u8; 1024];
    loop {
        if f.write_all(&block).is_err() {
            break;
        }
        if f.flush().is_err() {
            break;
        }
    }
    // Byte by byte for the last partial block.
    while f.write_all(&[1]).is_ok() {}
    drop(f);
}

#[test]
fn full_tmpfs_one_line_nothing_partial_then_recovery() {
    if !needs_root("mount a tmpfs") {
        return;
    }
    let tmp = TempDir::new("d-full");
    let host = build_host(&tmp);
    let m = Tmpfs::mount(tmp.subdir("full"), "size=64k");
    fill(&m.0);
    let filler_len = fs::metadata(m.0.join("filler")).unwrap().len();

    // Periodic dumps every 0.1 s for about a second, all failing: one line, not ten. The host
    // sleeps single-threaded, so the periodic dumps need a dumper thread on request.
    let ready = tmp.path().join("ready");
    let mut r = Running::start(
        &Cmd::new(&host)
            .arg("wait")
            .offheap(&m.0)
            .env("OFFHEAP_INTERVAL", "0.1")
            .env("OFFHEAP_THREAD", "always")
            .env("READY_FILE", &ready)
            .timeout(Duration::from_secs(30)),
        true,
    );
    std::thread::sleep(Duration::from_millis(1000));
    // Nothing partial and no temporary file while the disk is full. The series' stacks file
    // may exist if a member of it fitted: then it holds only complete members (the harness
    // reads it whole; a cut member would raise).
    let stacks = format!("offheap.{}.stacks.gz", r.pid);
    let names: Vec<String> = names_in(&m.0)
        .into_iter()
        .filter(|n| *n != stacks)
        .collect();
    assert_eq!(
        names,
        vec!["filler".to_string()],
        "nothing partial, no leftover temporary file while the disk is full"
    );
    if m.0.join(&stacks).exists() {
        let bytes = fs::metadata(m.0.join(&stacks)).unwrap().len();
        assert!(bytes > 0, "an empty stacks file is a leftover");
        gunzip(&m.0.join(&stacks));
    }
    // Free the space: the following dumps succeed and are complete.
    fs::remove_file(m.0.join("filler")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    r.close_stdin();
    let out = r.wait();
    let line = one_added_line("full tmpfs", &out);
    assert!(
        line.contains("No space left on device") || line.contains("space"),
        "{line}"
    );
    let dumps = read_dumps(&m.0);
    assert!(
        dumps.len() >= 2,
        "dumps resume once there is space: {:?}",
        names_in(&m.0)
    );
    assert_eq!(dumps.last().unwrap().trigger(), "exit");
    for n in names_in(&m.0) {
        assert!(
            parse_dump_name(&n).is_some() || n == format!("offheap.{}.stacks.gz", out.pid),
            "leftover {n}"
        );
    }
    assert!(filler_len > 0);
}

#[test]
fn symlink_planted_at_the_dump_name() {
    let tmp = TempDir::new("d-symlink");
    let host = build_host(&tmp);
    let dir = tmp.subdir("dumps");
    let victim = tmp.path().join("victim");
    fs::write(&victim, "victim\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    // OFFHEAP_INTERVAL=0: the only dump is the exit dump, seq 0, whose name is planted.
    let out = run(Cmd::new(&host)
        .arg("symlink")
        .arg(&victim)
        .offheap(&dir)
        .env("OFFHEAP_INTERVAL", "0"));
    // The name is taken, so this process writes under the next free stem instead: nothing is
    // followed or replaced, nothing is lost, and there is nothing to complain about.
    assert_eq!(out.status.code(), Some(7), "exit status");
    assert_eq!(out.stdout_str(), "host output\n", "stdout");
    assert_eq!(
        out.stderr_str(),
        "host diagnostics\n",
        "no diagnostic expected: the host's stderr is its own"
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "victim\n");
    assert_eq!(
        fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let link = dir.join(format!("offheap.{}.000000.json.gz", out.pid));
    assert_eq!(fs::read_link(&link).unwrap(), victim, "the symlink is kept");
    assert_eq!(
        names_in(&dir),
        vec![
            format!("offheap.{}.000000.json.gz", out.pid),
            format!("offheap.{}_2.000000.json.gz", out.pid),
            format!("offheap.{}_2.stacks.gz", out.pid)
        ],
        "the dump under the next stem, no temporary file left"
    );
    let dump: serde_json::Value = serde_json::from_slice(&gunzip(
        &dir.join(format!("offheap.{}_2.000000.json.gz", out.pid)),
    ))
    .expect("the dump is complete JSON");
    assert_eq!(dump["header"]["trigger"], "exit");
    assert_eq!(dump["header"]["pid"], out.pid);
}

#[test]
fn dump_dir_with_a_newline_in_its_name_still_gives_one_line() {
    let tmp = TempDir::new("d-newline");
    let host = build_host(&tmp);
    let file = tmp.path().join("file");
    fs::write(&file, "x\n").unwrap();
    // Unusable (below a regular file) and with a newline: the message must stay one line.
    let dir = file.join("a\noffheap: forged line");
    let out = run(Cmd::new(&host).offheap(&dir));
    one_added_line("OFFHEAP_DIR with a newline", &out);
}

#[test]
fn same_pid_in_a_later_run_still_gets_its_dumps() {
    if !needs_root("create a pid namespace (unshare --pid)") {
        return;
    }
    let tmp = TempDir::new("d-pidreuse");
    let host = build_host(&tmp);
    let dir = tmp.subdir("dumps");
    // Like two runs of a containerised service sharing a dump volume: pid 1 both times.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let out = run(Cmd::new("unshare")
            .args(["--pid", "--fork", "env"])
            .arg(format!("LD_PRELOAD={}", liboffheap().display()))
            .arg(format!("OFFHEAP_DIR={}", dir.display()))
            .arg("OFFHEAP_INTERVAL=0")
            .arg(&host)
            .timeout(Duration::from_secs(30)));
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(out.stdout_str(), "host output\n");
        runs.push(out);
    }
    assert_eq!(
        runs[1].stderr_str(),
        "host diagnostics\n",
        "the second run's stderr is the host's own"
    );
    let exits: Vec<Dump> = read_dumps(&dir)
        .into_iter()
        .filter(|d| d.trigger() == "exit")
        .collect();
    assert_eq!(
        exits.len(),
        2,
        "both runs have their exit dump: {:?}",
        names_in(&dir)
    );
}

#[test]
fn a_new_process_does_not_list_a_directory_full_of_other_processes_dumps() {
    // A script that execs many children fills its dump directory; a child that listed it to
    // pick its file names paid for every file there (6.5 ms with 20,000).
    let tmp = TempDir::new("d-nolist");
    let host = build_host(&tmp);
    let dir = tmp.subdir("dumps");
    // Other processes' series, named as docs/dump-format.md says.
    for pid in 4_000_000..4_000_300u32 {
        fs::write(dir.join(format!("offheap.{pid}.stacks.gz")), b"").unwrap();
        fs::write(dir.join(format!("offheap.{pid}.000000.json.gz")), b"").unwrap();
    }
    let trace = tmp.path().join("trace");
    let out = run(Cmd::new("strace")
        .args(["-f", "-qq", "-e", "trace=getdents64", "-o"])
        .arg(&trace)
        .arg("env")
        .arg(format!("LD_PRELOAD={}", liboffheap().display()))
        .arg(format!("OFFHEAP_DIR={}", dir.display()))
        .arg("OFFHEAP_INTERVAL=0")
        .arg(&host)
        .timeout(Duration::from_secs(60)));
    assert_eq!(out.status.code(), Some(7), "{}", out.stderr_str());
    let calls = fs::read_to_string(&trace).unwrap();
    assert!(
        !calls.contains("getdents64"),
        "the directory was listed:\n{calls}"
    );
    // The host's own series, under its pid's first stem.
    let mut ours: Vec<String> = names_in(&dir)
        .into_iter()
        .filter(|n| !n.starts_with("offheap.4000"))
        .collect();
    ours.sort();
    assert_eq!(ours.len(), 2, "{ours:?}");
    let stem = ours[1].strip_suffix(".stacks.gz").expect("a stacks file");
    assert_eq!(ours[0], format!("{stem}.000000.json.gz"));
    assert!(!stem.contains('_'), "the pid's first stem: {stem}");
}
