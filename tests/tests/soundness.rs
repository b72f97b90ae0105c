//! Issue 15 DW1: a thread stopped in the middle of a stack walk, for longer than the old
//! ten-second grace period, while libraries are closed and reopened: no crash, no stale read.
//!
//! The stop is the library's testing aid OFFHEAP_TEST_PARK: a thread named `offheap-park`
//! sleeps inside its first walk, holding the module set it loaded. Freed module sets are then
//! kept and poisoned instead of returned to the allocator, and the parked walk checks its set
//! when it wakes: a freed one is reported on stderr. The same program with
//! OFFHEAP_TEST_RECLAIM=unsafe (sets freed at once, the unsound behaviour) must be caught,
//! so the check is shown to be able to fail.

use offheap_tests::*;
use std::path::PathBuf;
use std::time::Duration;

const ROUNDS: &str = "60";

fn build(tmp: &TempDir) -> (PathBuf, PathBuf) {
    let plugin = cc(
        tmp.path(),
        "libparkplugin.so",
        &[hostile_src("parkplugin.c")],
        &["-O2", "-g", "-shared", "-fPIC"],
    );
    let exe = cc(
        tmp.path(),
        "parkwalk",
        &[hostile_src("parkwalk.c")],
        &["-O2", "-g", "-pthread", "-ldl"],
    );
    (exe, plugin)
}

fn expected_stdout() -> String {
    format!("parkwalk: rounds={ROUNDS} plugin unloaded\n")
}

#[test]
fn a_walk_stopped_past_any_grace_period_keeps_its_module_set() {
    let tmp = TempDir::new("sound-park");
    let (exe, plugin) = build(&tmp);
    let without = run(Cmd::new(&exe).arg(&plugin).arg(ROUNDS));
    assert_eq!(without.stdout_str(), expected_stdout());
    without.assert_success("parkwalk without the library");

    let dir = tmp.subdir("dumps");
    let with = run(Cmd::new(&exe)
        .arg(&plugin)
        .arg(ROUNDS)
        .offheap(&dir)
        .env("OFFHEAP_TEST_PARK", "11")
        .env("OFFHEAP_INTERVAL", "1")
        .env("OFFHEAP_VERBOSE", "1")
        .timeout(Duration::from_secs(90)));
    let err = with.stderr_str();
    assert_eq!(with.status.code(), Some(0), "status\n{err}");
    assert_eq!(with.stdout_str(), expected_stdout(), "stdout\n{err}");
    assert!(
        err.contains("the parked walk's module set is still intact"),
        "the walk parked and found its set intact:\n{err}"
    );
    assert!(
        !err.contains("freed under it"),
        "no walk read a freed module set:\n{err}"
    );
    assert!(
        err.contains("the dumper thread will unload the library"),
        "the closes met the parked walk (deferred, not waited for in the program's call):\n{err}"
    );
    assert!(
        err.contains("after the last dlclose the plugin is still mapped"),
        "the last close was deferred while the walk was parked:\n{err}"
    );
    // The process's own dumps are complete and its exit dump is there.
    exit_dump(&dir, with.pid);
}

#[test]
fn without_a_stopped_walk_dlclose_unmaps_before_it_returns() {
    let tmp = TempDir::new("sound-noplark");
    let (exe, plugin) = build(&tmp);
    let dir = tmp.subdir("dumps");
    let with = run(Cmd::new(&exe)
        .arg(&plugin)
        .arg(ROUNDS)
        .offheap(&dir)
        .timeout(Duration::from_secs(60)));
    let err = with.stderr_str();
    assert_eq!(with.stdout_str(), expected_stdout(), "stdout\n{err}");
    assert!(
        err.contains("after the last dlclose the plugin is unmapped"),
        "no walk in flight: the close happened in the call:\n{err}"
    );
    exit_dump(&dir, with.pid);
}

#[test]
fn the_check_catches_a_set_freed_under_a_walk() {
    let tmp = TempDir::new("sound-unsafe");
    let (exe, plugin) = build(&tmp);
    let dir = tmp.subdir("dumps");
    let with = run(Cmd::new(&exe)
        .arg(&plugin)
        .arg(ROUNDS)
        .offheap(&dir)
        .env("OFFHEAP_TEST_PARK", "1")
        .env("OFFHEAP_TEST_RECLAIM", "unsafe")
        .env("OFFHEAP_INTERVAL", "1")
        .timeout(Duration::from_secs(60)));
    assert!(
        with.stderr_str()
            .contains("a stack walk held a module set that was freed under it"),
        "freeing at once must be caught:\n{}",
        with.stderr_str()
    );
}
