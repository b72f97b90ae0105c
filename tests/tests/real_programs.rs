//! Programs we did not write, with and without liboffheap (issue 2 "Done when 2").
//!
//! python3 (json, regex, dicts, threads), the sqlite3 CLI (a few thousand
//! statements), git (init, add, commit, log in a scratch repository), gcc
//! compiling a C file (driver, cc1, as, collect2, ld: all preloaded) and
//! perl must give byte-identical stdout and stderr and the same exit status
//! with and without the library, and the top process must leave an exit
//! dump whose totals are non-zero and that the reporter reads back with the
//! same pid and totals.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use offheap_tests::*;

/// Runs each step's command twice (without, then with the library; in two
/// working directories prepared alike by `setup`), in order, compares
/// behaviour step by step and checks each step's exit dump.
fn compare_steps(name: &str, setup: &dyn Fn(&Path), steps: &[&dyn Fn(&Path) -> Cmd]) {
    let tmp = TempDir::new(name);
    let plain_dir = tmp.subdir("plain");
    let traced_dir = tmp.subdir("traced");
    setup(&plain_dir);
    setup(&traced_dir);

    for (i, step) in steps.iter().enumerate() {
        let what = format!("{name} step {i}");
        let dumps = tmp.subdir(&format!("dumps{i}"));
        let without = run(step(&plain_dir).timeout(Duration::from_secs(120)));
        let cmd = step(&traced_dir)
            .offheap(&dumps)
            .env("OFFHEAP_INTERVAL", "0")
            .timeout(Duration::from_secs(240));
        let what = format!("{what} (`{}`)", cmd.describe());
        let with = run(cmd);
        assert_same_behaviour(&what, &without, &with);

        let dump = exit_dump(&dumps, with.pid);
        let (bytes, count) = dump.totals("malloc");
        assert!(
            bytes > 0 && count > 0,
            "{what}: exit dump totals.malloc is zero: {}",
            dump.json["totals"]
        );

        let report = report_for_pid(&dumps, with.pid);
        assert_eq!(
            report["process"]["pid"].as_u64(),
            Some(with.pid as u64),
            "{what}: report process.pid"
        );
        for kind in ["malloc", "mmap"] {
            let t = &report["totals"][kind];
            assert_eq!(
                (t["bytes"].as_u64(), t["count"].as_u64()),
                (Some(dump.totals(kind).0), Some(dump.totals(kind).1)),
                "{what}: report totals.{kind} vs the exit dump"
            );
        }
        // Children's dumps are readable too (read_dumps asserts it).
        let all = read_dumps(&dumps);
        eprintln!(
            "[{what}] {} dump files; top process totals.malloc = {bytes} bytes in {count}",
            all.len()
        );
    }
}

fn compare(name: &str, setup: &dyn Fn(&Path), make_cmd: &dyn Fn(&Path) -> Cmd) {
    compare_steps(name, setup, &[make_cmd]);
}

fn python3() -> PathBuf {
    // Debian's interpreter: a pyenv shim is a shell script that execs more processes.
    let p = PathBuf::from("/usr/bin/python3");
    assert!(
        p.exists(),
        "/usr/bin/python3 missing: apt-get install python3"
    );
    p
}

const PY_SCRIPT: &str = r#"
import json, re, threading, collections, sys
data = {"k%d" % i: {"n": i, "s": "x" * (i % 50), "l": list(range(i % 20))} for i in range(20000)}
text = json.dumps(data, sort_keys=True)
back = json.loads(text)
assert back == data
words = re.findall(r"[a-z]\d+", text)
counts = collections.Counter(w[0] for w in words)
results = [None] * 8
def work(t):
    d = {}
    for i in range(30000):
        d[(t, i)] = str(i) * (i % 7)
        if i % 3 == 0:
            del d[(t, i)]
    results[t] = sum(len(v) for v in d.values())
threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
for th in threads: th.start()
for th in threads: th.join()
print(len(text), len(words), sorted(counts.items())[:5], results)
sys.stderr.write("python done\n")
sys.exit(3)
"#;

#[test]
fn python3_allocation_heavy_script() {
    compare(
        "python3",
        &|d| fs::write(d.join("script.py"), PY_SCRIPT).unwrap(),
        &|d| {
            Cmd::new(python3())
                .arg(d.join("script.py"))
                .env("PYTHONHASHSEED", "0")
        },
    );
}

fn sqlite_script() -> String {
    let mut s =
        String::from("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);\nBEGIN;\n");
    for i in 0..3000 {
        s.push_str(&format!(
            "INSERT INTO t(name, v) VALUES ('name{i}', {i}.5);\n"
        ));
    }
    s.push_str("COMMIT;\nCREATE INDEX ti ON t(name);\n");
    for i in 0..200 {
        s.push_str(&format!("UPDATE t SET v = v * 2 WHERE id % 200 = {i};\n"));
    }
    s.push_str("SELECT count(*), sum(v), min(name), max(name) FROM t;\n");
    s.push_str("SELECT name, v FROM t WHERE id % 500 = 0 ORDER BY id;\n");
    s.push_str("DELETE FROM t WHERE id % 2 = 0;\nVACUUM;\nSELECT count(*) FROM t;\n");
    s.push_str("SELECT nosuchcolumn FROM t;\n"); // an error on stderr, on purpose
    s
}

#[test]
fn sqlite3_cli_thousands_of_statements() {
    compare(
        "sqlite3",
        &|d| fs::write(d.join("script.sql"), sqlite_script()).unwrap(),
        &|d| {
            Cmd::new("sqlite3")
                .arg(d.join("db.sqlite"))
                .stdin(sqlite_script())
                .cwd(d)
        },
    );
}

/// A git command with fixed identity, dates and config, so output is identical.
fn git(d: &Path, args: &[&str]) -> Cmd {
    Cmd::new("git")
        .args(args)
        .cwd(d)
        .env("HOME", d)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Offheap Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Offheap Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .env("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z")
}

#[test]
fn git_init_add_commit_log() {
    let setup = |d: &Path| {
        for i in 0..40 {
            fs::write(d.join(format!("file{i}.txt")), format!("line {i}\n")).unwrap();
        }
    };
    compare_steps(
        "git",
        &setup,
        &[
            &|d| git(d, &["init", "-q", "-b", "main", "."]),
            &|d| git(d, &["add", "."]),
            &|d| git(d, &["commit", "-q", "-m", "first commit"]),
            &|d| {
                fs::write(d.join("file1.txt"), "changed\n").unwrap();
                git(d, &["commit", "-q", "-am", "second commit"])
            },
            &|d| git(d, &["log", "--stat", "--format=%H %an %s"]),
            &|d| git(d, &["status", "--short"]),
            &|d| git(d, &["cat-file", "-p", "HEAD"]),
        ],
    );
}

const C_FILE: &str = r#"
#include <stdio.h>
static int unused_variable_warning(void) { int x; return 0; }
int main(void) { printf("hello from gcc test\n"); return 0; }
"#;

#[test]
fn gcc_compiles_a_c_file() {
    compare(
        "gcc",
        &|d| fs::write(d.join("hello.c"), C_FILE).unwrap(),
        // Relative paths: the two runs live in different directories but
        // must print identical diagnostics.
        &|d| {
            Cmd::new("gcc")
                .args(["-O2", "-Wall", "-g", "-o", "hello", "hello.c"])
                .cwd(d)
        },
    );
}

const PERL_SCRIPT: &str = r#"
use strict; use warnings;
my %h;
for my $i (1..50000) { $h{"key$i"} = "v" x ($i % 40); }
my @k = sort { length($h{$a}) <=> length($h{$b}) or $a cmp $b } keys %h;
my $joined = join(",", @k[0..9]);
(my $r = $joined) =~ s/key(\d+)/K$1/g;
my @m = ($joined =~ /key(\d+)/g);
printf "%d %s %d\n", scalar(@k), $r, scalar(@m);
print STDERR "perl done\n";
exit 5;
"#;

#[test]
fn perl_script() {
    compare(
        "perl",
        &|d| fs::write(d.join("script.pl"), PERL_SCRIPT).unwrap(),
        &|d| Cmd::new("perl").arg(d.join("script.pl")),
    );
}
