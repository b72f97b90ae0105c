//! Bad OFFHEAP_* values (issue 2 "Done when 5").
//!
//! A host program with known stdout, stderr and exit status (7) runs with
//! the library and one malformed variable. Expected: stdout and exit status
//! unchanged, stderr unchanged except for exactly one added line, and that
//! line names the variable. Also checks a real program (sort) the same way.

use std::time::Duration;

use offheap_tests::*;

const HOST: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
    char *p = malloc(100);
    strcpy(p, "host output");
    printf("%s\n", p);
    fprintf(stderr, "host diagnostics\n");
    free(p);
    return 7;
}
"#;

/// (variable, malformed value): none of these is a valid setting.
const BAD: &[(&str, &str)] = &[
    ("OFFHEAP_INTERVAL", "abc"),
    ("OFFHEAP_INTERVAL", "-5"),
    ("OFFHEAP_INTERVAL", "1x"),
    ("OFFHEAP_INTERVAL", "1.5ms"),
    ("OFFHEAP_INTERVAL", "2sec"),
    ("OFFHEAP_KEEP", "lots"),
    ("OFFHEAP_KEEP", "-1"),
    ("OFFHEAP_WARMUP", "soon"),
    ("OFFHEAP_MAX_FRAMES", "many"),
    ("OFFHEAP_MAX_FRAMES", "99999999999999999999999999"),
    ("OFFHEAP_SAMPLE_BYTES", "1.5.5"),
    ("OFFHEAP_SAMPLE_BYTES", "-4096"),
    ("OFFHEAP_DIRECT", "yes"),
    ("OFFHEAP_THREAD", "sometimes"),
    ("OFFHEAP_UNWINDER", "libunwind"),
    ("OFFHEAP_TEST_RECLAIM", "never"),
    ("OFFHEAP_DIR", ""),
];

fn check(what: &str, var: &str, without: &Outcome, with: &Outcome) {
    assert_eq!(
        with.status.code(),
        without.status.code(),
        "{what}: exit status changed"
    );
    assert_eq!(
        with.stdout_str(),
        without.stdout_str(),
        "{what}: stdout changed"
    );
    let base = without.stderr_str();
    let got = with.stderr_str();
    let mut extra: Vec<String> = got.lines().map(String::from).collect();
    // Remove the host's own lines (in order); what remains is ours.
    for l in base.lines() {
        let i = extra
            .iter()
            .position(|e| e == l)
            .unwrap_or_else(|| panic!("{what}: host stderr line {l:?} missing:\n{got}"));
        extra.remove(i);
    }
    assert_eq!(
        extra.len(),
        1,
        "{what}: expected exactly one added stderr line, got {extra:?}"
    );
    assert!(
        extra[0].contains(var),
        "{what}: the stderr line does not name {var}: {:?}",
        extra[0]
    );
}

#[test]
fn bad_values_print_one_line_and_change_nothing_else() {
    let tmp = TempDir::new("badcfg");
    let src = tmp.path().join("host.c");
    std::fs::write(&src, HOST).unwrap();
    let host = cc(tmp.path(), "host", &[src], &["-O2"]);
    let without = run(Cmd::new(&host).timeout(Duration::from_secs(30)));
    assert_eq!(without.status.code(), Some(7));

    for (i, (var, val)) in BAD.iter().enumerate() {
        let dir = tmp.subdir(&format!("d{i}"));
        let with = run(Cmd::new(&host)
            .offheap(&dir)
            .env(var, val)
            .timeout(Duration::from_secs(30)));
        check(&format!("host with {var}={val}"), var, &without, &with);
    }
}

#[test]
fn durations_take_the_units_offheap_run_takes() {
    // `offheap run --interval 2s` works, so OFFHEAP_INTERVAL=2s must too (it was refused).
    let tmp = TempDir::new("badcfg-units");
    let src = tmp.path().join("host.c");
    std::fs::write(&src, HOST).unwrap();
    let host = cc(tmp.path(), "host", &[src], &["-O2"]);
    for (i, (value, seconds)) in [("2s", 2.0), ("500ms", 0.5), ("1m", 60.0), ("0.25", 0.25)]
        .into_iter()
        .enumerate()
    {
        let dir = tmp.subdir(&format!("u{i}"));
        let with = run(Cmd::new(&host)
            .offheap(&dir)
            .env("OFFHEAP_INTERVAL", value)
            .timeout(Duration::from_secs(30)));
        assert_eq!(with.status.code(), Some(7));
        assert_eq!(
            with.stderr_str(),
            "host diagnostics\n",
            "OFFHEAP_INTERVAL={value}"
        );
        let dumps = dumps_of(&dir, with.pid);
        let last = dumps.last().expect("an exit dump");
        assert_eq!(
            last.header()["config"]["interval_s"].as_f64(),
            Some(seconds),
            "OFFHEAP_INTERVAL={value}"
        );
    }
}

#[test]
fn bad_value_with_a_real_program() {
    let tmp = TempDir::new("badcfg-sort");
    let input = (0..5000)
        .map(|i| format!("{}\n", (i * 7919) % 5003))
        .collect::<String>();
    let without = run(Cmd::new("sort").arg("-n").stdin(input.clone()));
    let dir = tmp.subdir("d");
    let with = run(Cmd::new("sort")
        .arg("-n")
        .stdin(input)
        .offheap(&dir)
        .env("OFFHEAP_INTERVAL", "often"));
    check(
        "sort -n with OFFHEAP_INTERVAL=often",
        "OFFHEAP_INTERVAL",
        &without,
        &with,
    );
}
