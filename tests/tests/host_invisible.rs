//! The host never notices us (issue 16): descriptors, threads, children without fork
//! handlers, seccomp sandboxes, the program's own allocator, uid changes.
//!
//! Each case is a real host (bash, unshare, python3) or a small program reproducing it
//! (examples/c/hostile/*.c), run without and with the library; output and exit status must
//! be identical, and where the program states a truth (wrong descriptors: 0, threads: 1) it
//! must hold in both runs. Dumps are read with the harness's own reader.

use std::path::{Path, PathBuf};
use std::time::Duration;

use offheap_tests::*;

fn build(tmp: &TempDir, file: &str, extra: &[&str]) -> PathBuf {
    let name = format!(
        "{}{}",
        file.trim_end_matches(".c"),
        extra.join("").replace(['-', '='], "_")
    );
    let mut flags = vec!["-O2", "-g", "-pthread"];
    flags.extend_from_slice(extra);
    cc(tmp.path(), &name, &[hostile_src(file)], &flags)
}

fn with_lib(cmd: Cmd, dir: &Path) -> Cmd {
    cmd.offheap(dir).env("OFFHEAP_INTERVAL", "0.1")
}

/// Same stdout and exit status (code and signal) without and with the library.
fn same(what: &str, without: &Outcome, with: &Outcome) {
    assert_eq!(
        (without.status.code(), signal(without)),
        (with.status.code(), signal(with)),
        "{what}: exit status differs without/with liboffheap\nstderr with:\n{}",
        with.stderr_str()
    );
    assert_eq!(
        without.stdout_str(),
        with.stdout_str(),
        "{what}: stdout differs\nstderr with:\n{}",
        with.stderr_str()
    );
}

fn signal(o: &Outcome) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(&o.status)
}

fn offheap_lines(o: &Outcome) -> Vec<String> {
    o.stderr_str()
        .lines()
        .filter(|l| l.starts_with("offheap:"))
        .map(str::to_string)
        .collect()
}

/// Issue 16 DW1: bash closing and reopening descriptor 3 200,000 times while dumps are
/// written every 0.1 s: never an abort, never a wrong result, in 20 runs.
#[test]
fn bash_descriptor_loop_never_breaks() {
    let tmp = TempDir::new("inv-bash");
    let script =
        "n=0; for i in $(seq 200000); do exec 3>/dev/null; exec 3>&-; n=$((n+1)); done; echo $n";
    // Two runs at a time (the machine has two cores).
    std::thread::scope(|s| {
        for half in 0..2 {
            let tmp = &tmp;
            s.spawn(move || {
                for run in (half..20).step_by(2) {
                    bash_run(tmp, script, run);
                }
            });
        }
    });
}

fn bash_run(tmp: &TempDir, script: &str, run: usize) {
    {
        let dir = tmp.subdir(&format!("dumps{run}"));
        let out = offheap_tests::run(
            with_lib(Cmd::new("bash").args(["-c", script]), &dir).timeout(Duration::from_secs(120)),
        );
        assert_eq!(
            (out.status.code(), out.stdout_str().trim().to_string()),
            (Some(0), "200000".to_string()),
            "run {run}: bash loop under liboffheap\nstderr:\n{}",
            out.stderr_str()
        );
        assert!(
            offheap_lines(&out).is_empty(),
            "run {run}: {:?}",
            offheap_lines(&out)
        );
        // Dumps happened while the loop ran (the race needs them).
        assert!(
            read_dumps(&dir).len() >= 3,
            "run {run}: only {} dumps",
            read_dumps(&dir).len()
        );
    }
}

/// Issue 16 DW1: a threaded program churning fds 0-2, dup2 and pipes in a tight loop while
/// the library's thread dumps every 0.1 s: 0 wrong descriptors in 10^6 iterations.
#[test]
fn descriptor_churn_sees_no_foreign_descriptor() {
    let tmp = TempDir::new("inv-fdchurn");
    let exe = build(&tmp, "fdchurn.c", &[]);
    let without = offheap_tests::run(
        Cmd::new(&exe)
            .arg("1000000")
            .timeout(Duration::from_secs(120)),
    );
    let want = "fdchurn: iterations=1000000 wrong=0\n";
    assert_eq!(
        without.stdout_str(),
        want,
        "the program's own check fails without the library"
    );
    let dir = tmp.subdir("dumps");
    let with = offheap_tests::run(
        with_lib(Cmd::new(&exe).arg("1000000"), &dir).timeout(Duration::from_secs(120)),
    );
    same("fdchurn", &without, &with);
    assert!(read_dumps(&dir).len() >= 5, "dumps ran during the loop");
}

/// Issue 16 DW1: the program's /proc/self/fd listing (and the number its next open() gets)
/// is the same with and without us, single-threaded and threaded, after dumps have run.
#[test]
fn proc_self_fd_listing_is_the_hosts() {
    let tmp = TempDir::new("inv-fdlist");
    let exe = build(&tmp, "fdlist.c", &[]);
    // Pipes get new inode numbers every run: compare the listing without them.
    let norm = |o: &Outcome| {
        o.stdout_str()
            .lines()
            .map(|l| match l.find("pipe:[") {
                Some(i) => format!("{}pipe", &l[..i]),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for mode in ["single", "threads"] {
        let without = offheap_tests::run(Cmd::new(&exe).arg(mode));
        let dir = tmp.subdir(&format!("dumps-{mode}"));
        let with = offheap_tests::run(with_lib(Cmd::new(&exe).arg(mode), &dir));
        assert_eq!(
            norm(&without),
            norm(&with),
            "{mode}: the program sees our descriptors"
        );
        assert!(read_dumps(&dir).len() >= 3, "{mode}: dumps ran meanwhile");
    }
}

/// Issue 16 DW2: a single-threaded program stays single-threaded (no dump is due in its
/// first 30 s); `unshare --user`, which requires a single thread, works; Python sees one
/// thread when it forks.
#[test]
fn single_threaded_programs_stay_single_threaded() {
    let tmp = TempDir::new("inv-single");
    let exe = build(&tmp, "singlethread.c", &[]);
    let dir = tmp.subdir("dumps");
    let without = offheap_tests::run(Cmd::new(&exe));
    let with = offheap_tests::run(Cmd::new(&exe).offheap(&dir));
    assert_eq!(without.stdout_str(), "singlethread: threads=1 then 1\n");
    same("singlethread", &without, &with);

    let unshare = |c: Cmd| c.args(["--user", "--map-root-user", "true"]);
    let without = offheap_tests::run(unshare(Cmd::new("unshare")));
    assert_eq!(without.status.code(), Some(0), "unshare --user works here");
    let with = offheap_tests::run(unshare(Cmd::new("unshare")).offheap(&dir));
    same("unshare --user --map-root-user true", &without, &with);

    let py = "import os,sys\n\
              t=[l for l in open('/proc/self/status') if l.startswith('Threads:')][0].split()[1]\n\
              pid=os.fork()\n\
              if pid==0: os._exit(0)\n\
              os.waitpid(pid,0); print('threads at fork', t)";
    let without = offheap_tests::run(Cmd::new("python3").args(["-W", "error", "-c", py]));
    assert_eq!(without.stdout_str(), "threads at fork 1\n");
    let with = offheap_tests::run(
        Cmd::new("python3")
            .args(["-W", "error", "-c", py])
            .offheap(&dir),
    );
    same("python fork", &without, &with);
    assert_eq!(
        with.stderr_str(),
        without.stderr_str(),
        "python printed a warning"
    );
}

/// Issue 16 DW3: an executable defining its own malloc family, with and without
/// reallocarray, behaves identically: every call reaches its own functions (the program
/// counts them), none reaches glibc's.
#[test]
fn an_allocator_defined_in_the_executable_is_used() {
    let tmp = TempDir::new("inv-ownalloc");
    for variant in [&[][..], &["-DWITH_REALLOCARRAY"][..]] {
        let exe = build(&tmp, "ownalloc.c", variant);
        let dir = tmp.subdir(&format!("dumps{}", variant.len()));
        let without = offheap_tests::run(Cmd::new(&exe));
        without.assert_success("ownalloc without the library");
        let with = offheap_tests::run(Cmd::new(&exe).offheap(&dir));
        same(&format!("ownalloc {variant:?}"), &without, &with);
    }
}

/// A non-PIE executable that takes malloc's address has an undefined `malloc` symbol whose
/// value is its PLT stub (CPython is built this way on Debian): that stub is not the
/// program's own allocator. Output identical, and the program's one kept block is tracked.
#[test]
fn a_canonical_plt_entry_is_not_taken_for_an_allocator() {
    let tmp = TempDir::new("inv-nopie");
    let exe = build(&tmp, "nopie_fnptr.c", &["-no-pie", "-fno-pie"]);
    let dir = tmp.subdir("dumps");
    let without = offheap_tests::run(Cmd::new(&exe));
    without.assert_success("nopie_fnptr without the library");
    let with = offheap_tests::run(Cmd::new(&exe).offheap(&dir));
    same("nopie_fnptr", &without, &with);
    exit_dump(&dir, with.pid);
    // The program's own truth: kept_block() mallocs 1234 bytes and keeps them.
    assert_eq!(attributed(&dir, with.pid, "kept_block"), (1234, 1));
}

/// Issue 16 DW4: 200 children made with a raw clone3 (no fork handlers run) while two
/// parent threads allocate: no hang, and every dump in the directory is the parent's.
#[test]
fn raw_clone3_children_never_hang_and_write_nothing() {
    let tmp = TempDir::new("inv-clone3");
    let exe = build(&tmp, "clone3kids.c", &[]);
    let dir = tmp.subdir("dumps");
    let mut parents: Vec<u32> = Vec::new();
    for _ in 0..3 {
        let without = offheap_tests::run(Cmd::new(&exe).timeout(Duration::from_secs(60)));
        let with =
            offheap_tests::run(with_lib(Cmd::new(&exe), &dir).timeout(Duration::from_secs(60)));
        assert_eq!(without.stdout_str(), "clone3kids: children=200 ok=200\n");
        same("clone3kids", &without, &with);
        // Every dump is the parent's own: no child wrote one, under its pid or the parent's.
        let foreign: Vec<u32> = read_dumps(&dir)
            .iter()
            .map(|d| d.pid)
            .filter(|&p| p != with.pid && !parents.contains(&p))
            .collect();
        assert!(
            foreign.is_empty(),
            "dumps under children's pids: {foreign:?}"
        );
        parents.push(with.pid);
        let exits = dumps_of(&dir, with.pid)
            .iter()
            .filter(|d| d.trigger() == "exit")
            .count();
        assert_eq!(exits, 1, "exactly the parent's exit dump");
    }
}

/// Issue 16 DW4: a vfork child that calls exit() (our destructor runs in the parent's
/// memory) leaves the parent's periodic dumps going.
#[test]
fn a_vfork_child_calling_exit_leaves_the_parent_dumping() {
    let tmp = TempDir::new("inv-vfork");
    let exe = build(&tmp, "vforkexit.c", &[]);
    let dir = tmp.subdir("dumps");
    let without = offheap_tests::run(Cmd::new(&exe));
    let with = offheap_tests::run(with_lib(Cmd::new(&exe), &dir));
    same("vforkexit", &without, &with);
    let dumps = dumps_of(&dir, with.pid);
    // The child exits after ~0.3 s; the parent runs another second at a 0.1 s interval.
    let late = dumps
        .iter()
        .filter(|d| d.header()["uptime_ms"].as_u64().unwrap_or(0) > 500)
        .count();
    assert!(
        late >= 4,
        "periodic dumps after the vfork: {late} of {}; files: {:?}; stderr: {}",
        dumps.len(),
        names_in(&dir),
        with.stderr_str()
    );
    assert!(
        read_dumps(&dir).iter().all(|d| d.pid == with.pid),
        "the vfork child wrote a dump"
    );
}

/// Issue 16 DW5: a program under a seccomp allowlist it installed itself, with a kill
/// action and with an EPERM action, behaves identically (no system call of ours on it).
#[test]
fn a_seccomp_sandbox_behaves_identically() {
    let tmp = TempDir::new("inv-seccomp");
    let exe = build(&tmp, "sandbox.c", &[]);
    for action in ["kill", "eperm"] {
        let dir = tmp.subdir(&format!("dumps-{action}"));
        let without = offheap_tests::run(Cmd::new(&exe).arg(action));
        assert_eq!(
            without.status.code(),
            Some(0),
            "{action}: the sandbox program itself works"
        );
        for interval in ["30", "0.1"] {
            let with = offheap_tests::run(
                Cmd::new(&exe)
                    .arg(action)
                    .offheap(&dir)
                    .env("OFFHEAP_INTERVAL", interval),
            );
            same(
                &format!("sandbox {action} interval {interval}"),
                &without,
                &with,
            );
        }
    }
}

/// A worker whose first tracked call comes after it put itself under a seccomp filter that
/// kills on mmap: its frees of the main thread's blocks must make no system call of ours
/// (a thread's first tracked call maps its stripe's counters when it is the stripe's first
/// owner, but not on a sandboxed thread), and still count.
#[test]
fn a_worker_sandboxed_before_its_first_free_makes_no_call_of_ours() {
    let tmp = TempDir::new("inv-sandbox-free");
    let exe = cc(
        tmp.path(),
        "sandbox_free",
        &[test_program("sandbox_free.c")],
        &["-O2", "-g", "-pthread", "-no-pie"],
    );
    let without = offheap_tests::run(Cmd::new(&exe));
    assert_eq!(
        without.stdout_str(),
        "sandbox_free: freed=200 bytes=26300\n",
        "the program itself works"
    );
    let dir = tmp.subdir("dumps");
    let with = offheap_tests::run(Cmd::new(&exe).offheap(&dir).env("OFFHEAP_INTERVAL", "0"));
    same("sandbox_free", &without, &with);
    let d = exit_dump(&dir, with.pid);
    assert_eq!(
        cumulative_in_dump(&d, &exe, "allocate_block"),
        [200, 200, 26300, 26300],
        "allocate_block: [allocs, frees, alloc bytes, free bytes]"
    );
    assert_eq!(
        attributed_in_dump(&d, &exe, "allocate_block", "malloc", "libc"),
        (0, 0)
    );
}

/// Issue 16 item 8: a worker that drops to another uid neither complains on the host's
/// stderr nor writes where it may not: with a configured directory it is silent; with the
/// default one its dumps go to the new uid's default directory.
#[test]
fn a_worker_that_drops_its_uid_is_silent_or_writes_its_own() {
    if !needs_root("drop a uid") {
        return;
    }
    let tmp = TempDir::new("inv-dropuid");
    let exe = build(&tmp, "dropuid.c", &[]);
    let dir = tmp.subdir("dumps");
    let without = offheap_tests::run(Cmd::new(&exe).arg("65534"));
    let with = offheap_tests::run(with_lib(Cmd::new(&exe).arg("65534"), &dir));
    same("dropuid", &without, &with);
    assert!(
        offheap_lines(&with).is_empty(),
        "{:?}",
        offheap_lines(&with)
    );
    assert!(
        read_dumps(&dir).is_empty(),
        "dumps in a directory the worker cannot write"
    );
    // Default directory: the worker's own uid's.
    let own = PathBuf::from("/tmp/offheap-65534");
    let with = offheap_tests::run(
        Cmd::new(&exe)
            .arg("65534")
            .env("LD_PRELOAD", liboffheap())
            .env("OFFHEAP_INTERVAL", "0.1"),
    );
    same("dropuid, default dir", &without, &with);
    assert!(
        offheap_lines(&with).is_empty(),
        "{:?}",
        offheap_lines(&with)
    );
    let mine = dumps_of(&own, with.pid);
    assert!(!mine.is_empty(), "no dump under {}", own.display());
    assert_eq!(
        mine.last().map(|d| d.trigger().to_string()),
        Some("exit".into())
    );
}

/// OFFHEAP_FOLLOW_CHILDREN=0 keeps exec'd children free of the library, including under
/// bash, which builds its children's environment from the array `main` received (an edit of a
/// copy of it would not reach them). Without the library the line is the same empty one.
#[test]
fn follow_children_off_reaches_a_shells_children() {
    let tmp = TempDir::new("inv-nofollow");
    let dir = tmp.subdir("dumps");
    let script = "echo \"[$LD_PRELOAD]\"; /usr/bin/env | grep -c '^LD_PRELOAD=' || true; exit 3";
    let with = offheap_tests::run(
        Cmd::new("bash")
            .args(["-c", script])
            .offheap(&dir)
            .env("OFFHEAP_FOLLOW_CHILDREN", "0"),
    );
    assert_eq!(with.stdout_str(), "[]\n0\n", "{}", with.stderr_str());
    assert_eq!(with.status.code(), Some(3));
    // bash itself was tracked (its exit dump), the child env was not (no dump of its pid).
    let dumps = read_dumps(&dir);
    assert_eq!(
        dumps
            .iter()
            .map(|d| d.pid)
            .collect::<std::collections::BTreeSet<_>>(),
        std::collections::BTreeSet::from([with.pid]),
        "only bash dumped"
    );
}

/// A profiler or crash handler unwinding from inside our malloc-family entry points reaches
/// their caller: each has unwind information, as glibc's have (tests/programs/unwind_entries.c
/// asks libgcc's `_Unwind_Find_FDE` for each). Our naked entries had none: `backtrace()` from
/// a profiling signal that landed in the assembly `free` stopped there in every sample.
#[test]
fn unwinders_find_our_entry_points() {
    let tmp = TempDir::new("inv-fde");
    let exe = cc(
        tmp.path(),
        "unwind_entries",
        &[test_program("unwind_entries.c")],
        &["-O2", "-g"],
    );
    let without = offheap_tests::run(Cmd::new(&exe));
    without.assert_success("unwind_entries without the library");
    assert!(
        without
            .stdout_str()
            .lines()
            .all(|l| l.ends_with(" fde=yes")),
        "glibc's entry points all have unwind information:\n{}",
        without.stdout_str()
    );
    for sample in ["0", "524288"] {
        let dir = tmp.subdir(&format!("dumps{sample}"));
        let with = offheap_tests::run(
            Cmd::new(&exe)
                .offheap(&dir)
                .env("OFFHEAP_SAMPLE_BYTES", sample),
        );
        same(
            &format!("unwind_entries, OFFHEAP_SAMPLE_BYTES={sample}"),
            &without,
            &with,
        );
    }
}
