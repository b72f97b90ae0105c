//! Harness for the offheap real-process test suite.
//!
//! Everything here drives real processes: it compiles the C examples with
//! gcc and the Go examples with real Go toolchains, runs them with and
//! without `LD_PRELOAD=target/release/liboffheap.so`, bounds every child by a
//! timeout (a hung child is killed with its whole process group and fails the
//! test), reads the JSON dumps the library writes and runs the real
//! `offheap report --format json`. Nothing is mocked.
//!
//! The library and the reporter are not built by these tests: run
//! `cargo build --release` first (the harness panics with that advice when
//! they are missing), or point `OFFHEAP_TESTS_LIBRARY` / `OFFHEAP_TESTS_REPORTER`
//! at other builds. Set `OFFHEAP_TESTS_KEEP=1` to keep the temporary
//! directories (their paths are printed) for a post-mortem.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Page size of the test machine; the mmap truths are expressed in pages.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert!(p > 0, "sysconf(_SC_PAGESIZE) failed");
    p as u64
}

/// True when running under CI (`CI=true`): missing toolchains fail instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// `examples/` of the workspace.
pub fn examples_dir() -> PathBuf {
    workspace_root().join("examples")
}

fn release_artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let p = target.join("release").join(name);
    assert!(
        p.is_file(),
        "{} not found: run `cargo build --release` in {} first",
        p.display(),
        workspace_root().display()
    );
    p
}

fn overridden(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "{var}={} is not a file", p.display());
            p
        }
        None => release_artifact(default),
    }
}

/// Path of the preloadable library (`OFFHEAP_TESTS_LIBRARY` overrides).
pub fn liboffheap() -> PathBuf {
    overridden("OFFHEAP_TESTS_LIBRARY", "liboffheap.so")
}

/// Path of the reporter binary (`OFFHEAP_TESTS_REPORTER` overrides).
pub fn offheap_bin() -> PathBuf {
    overridden("OFFHEAP_TESTS_REPORTER", "offheap")
}

// ---------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop unless
/// `OFFHEAP_TESTS_KEEP=1`.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("offheap-test-{}-{}-{}", tag, std::process::id(), n));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        if keep_temps() {
            eprintln!("[offheap-tests] keeping {}", path.display());
        }
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new empty subdirectory.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::create_dir_all(&p).expect("create subdir");
        p
    }
}

/// A directory for results shared by several tests of one binary (kept in a
/// `static`, which is never dropped): `<target>/offheap-tests/<tag>`, emptied
/// when created, left for a post-mortem and for `cargo clean`.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let p = target.join("offheap-tests").join(tag);
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).expect("create scratch dir");
    p
}

fn keep_temps() -> bool {
    std::env::var("OFFHEAP_TESTS_KEEP")
        .map(|v| v == "1")
        .unwrap_or(false)
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !keep_temps() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------
// Building the examples
// ---------------------------------------------------------------------------

/// Compiles C sources with gcc into `out_dir/name`; panics with gcc's output on failure.
pub fn cc(out_dir: &Path, name: &str, sources: &[PathBuf], flags: &[&str]) -> PathBuf {
    let out = out_dir.join(name);
    let res = Command::new("gcc")
        .args(flags)
        .args(sources)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("gcc must be installed (apt-get install gcc)");
    assert!(
        res.status.success(),
        "gcc {:?} failed:\n{}",
        sources,
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

/// Path of a test program's source (tests/programs).
pub fn test_program(file: &str) -> PathBuf {
    workspace_root().join("tests/programs").join(file)
}

/// Path of a C example source.
pub fn c_example(file: &str) -> PathBuf {
    examples_dir().join("c").join(file)
}

/// groundtruth, built as examples/README.md says.
pub fn build_groundtruth(dir: &Path) -> PathBuf {
    cc(
        dir,
        "groundtruth",
        &[c_example("groundtruth.c")],
        &["-O2", "-g", "-pthread"],
    )
}

/// chain5, built `-O2 -fomit-frame-pointer -g` (issue 3 "Done when 3").
pub fn build_chain5(dir: &Path) -> PathBuf {
    cc(
        dir,
        "chain5",
        &[c_example("chain5.c")],
        &["-O2", "-fomit-frame-pointer", "-g"],
    )
}

/// stress and its plugin: returns (stress, plugin.so).
pub fn build_stress(dir: &Path) -> (PathBuf, PathBuf) {
    let plugin = cc(
        dir,
        "libstressplugin.so",
        &[c_example("plugin.c")],
        &["-O2", "-g", "-fPIC", "-shared"],
    );
    let stress = cc(
        dir,
        "stress",
        &[c_example("stress.c")],
        &["-O2", "-g", "-pthread", "-ldl"],
    );
    (stress, plugin)
}

/// deepstack, built `-O2 -fomit-frame-pointer -g`.
pub fn build_deepstack(dir: &Path) -> PathBuf {
    cc(
        dir,
        "deepstack",
        &[c_example("deepstack.c")],
        &["-O2", "-fomit-frame-pointer", "-g", "-pthread"],
    )
}

/// The Go toolchains the suite covers (issue 3 "Done when 1").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoToolchain {
    /// `go` on PATH, with `GOTOOLCHAIN=local` (1.26 on this machine kind).
    Machine,
    /// `GOTOOLCHAIN=go1.27.3 go`, fetched through the module proxy.
    Go1_27_3,
    /// Debian's `golang-1.19-go`: `/usr/lib/go-1.19/bin/go`.
    Go1_19,
}

impl GoToolchain {
    fn command(self) -> Command {
        let mut c = match self {
            GoToolchain::Machine | GoToolchain::Go1_27_3 => Command::new("go"),
            GoToolchain::Go1_19 => Command::new("/usr/lib/go-1.19/bin/go"),
        };
        match self {
            GoToolchain::Machine => c.env("GOTOOLCHAIN", "local"),
            GoToolchain::Go1_27_3 => c.env("GOTOOLCHAIN", "go1.27.3"),
            // go1.19 predates GOTOOLCHAIN; make sure a newer go's setting does not leak in.
            GoToolchain::Go1_19 => c.env_remove("GOTOOLCHAIN"),
        };
        c.env("GOFLAGS", "-mod=mod").env("CGO_ENABLED", "1");
        c
    }

    /// What CI must install for this toolchain (for messages).
    pub fn install_hint(self) -> &'static str {
        match self {
            GoToolchain::Machine => "a Go toolchain on PATH",
            GoToolchain::Go1_27_3 => {
                "`GOTOOLCHAIN=go1.27.3 go version` (downloads go1.27.3 through the module proxy)"
            }
            GoToolchain::Go1_19 => "`apt-get install -y golang-1.19-go`",
        }
    }

    /// `go version` output when the toolchain works, else None.
    pub fn version(self) -> Option<String> {
        let out =
            run(Cmd::from_command(self.command().arg("version")).timeout(Duration::from_secs(300)));
        if out.status.success() {
            Some(out.stdout_str().trim().to_string())
        } else {
            None
        }
    }

    /// Whether a test needing this toolchain should run: true when it is
    /// available; false (skip, with a note) when it is missing outside CI;
    /// panics when it is missing and `CI=true`.
    pub fn require(self) -> bool {
        match self.version() {
            Some(v) => {
                eprintln!("[offheap-tests] using {v}");
                true
            }
            None if in_ci() => panic!(
                "Go toolchain {:?} is missing and CI=true: install it with {}",
                self,
                self.install_hint()
            ),
            None => {
                eprintln!(
                    "[offheap-tests] SKIP: Go toolchain {:?} missing; install it with {}",
                    self,
                    self.install_hint()
                );
                false
            }
        }
    }
}

/// Builds `examples/go/<pkg>` with the given toolchain into `out_dir/<out_name>`.
pub fn go_build(
    tc: GoToolchain,
    pkg: &str,
    out_dir: &Path,
    out_name: &str,
    extra: &[&str],
) -> PathBuf {
    let out = out_dir.join(out_name);
    let mut c = tc.command();
    c.current_dir(examples_dir().join("go"))
        .arg("build")
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(format!("./{pkg}"));
    let res = run(Cmd::from_command(&mut c).timeout(Duration::from_secs(600)));
    assert!(
        res.status.success(),
        "go build ({tc:?}) of {pkg} failed:\n{}",
        res.stderr_str()
    );
    out
}

// ---------------------------------------------------------------------------
// Running processes with a timeout
// ---------------------------------------------------------------------------

/// A command to run: program, arguments, environment changes, stdin, timeout.
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
    stdin: Vec<u8>,
    timeout: Duration,
}

impl Cmd {
    pub fn new(program: impl AsRef<Path>) -> Cmd {
        Cmd {
            program: program.as_ref().as_os_str().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdin: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }

    fn from_command(c: &mut Command) -> Cmd {
        let mut cmd = Cmd::new(c.get_program());
        cmd.args = c.get_args().map(|a| a.to_owned()).collect();
        cmd.env = c
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
            .collect();
        cmd.cwd = c.get_current_dir().map(|p| p.to_path_buf());
        cmd
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Cmd {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        for a in args {
            self.args.push(a.as_ref().to_owned());
        }
        self
    }

    pub fn env(mut self, k: impl AsRef<std::ffi::OsStr>, v: impl AsRef<std::ffi::OsStr>) -> Cmd {
        self.env
            .push((k.as_ref().to_owned(), Some(v.as_ref().to_owned())));
        self
    }

    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = data.into();
        self
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
        self
    }

    /// Preloads liboffheap and points OFFHEAP_DIR at `dir`.
    pub fn offheap(self, dir: &Path) -> Cmd {
        self.env("LD_PRELOAD", liboffheap()).env("OFFHEAP_DIR", dir)
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        // A clean slate: no preload and no OFFHEAP_* knob inherited from the
        // shell running the tests, so "without the library" really is without.
        c.env_remove("LD_PRELOAD");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OFFHEAP_") {
                c.env_remove(&k);
            }
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Own process group: a timeout kills the child and everything it spawned.
        c.process_group(0);
        // Default dispositions for the signals a shell ignores in its background jobs (a test
        // run started with `&` passes SIGINT and SIGQUIT on as ignored: a program under test
        // then survives the SIGINT a test sends it, with or without the library).
        // SAFETY: between fork and exec the closure only calls signal(2), which is
        // async-signal-safe, and allocates nothing.
        unsafe {
            c.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            });
        }
        c
    }

    /// Human-readable form for messages.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.env {
            if let Some(v) = v {
                s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
            }
        }
        s.push_str(&self.program.to_string_lossy());
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// What a finished process left behind.
#[derive(Debug)]
pub struct Outcome {
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// Panics (with the output) unless the exit status is 0.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what}: exit status {:?} (signal {:?})\nstdout:\n{}\nstderr:\n{}",
            self.status.code(),
            self.status.signal(),
            self.stdout_str(),
            self.stderr_str()
        );
        self
    }
}

/// A running child with its output being collected.
pub struct Running {
    child: Child,
    pub pid: u32,
    started: Instant,
    timeout: Duration,
    describe: String,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
    stdin: Option<std::process::ChildStdin>,
    stdout_so_far: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

/// Reads `r` to its end in a thread; what has arrived so far is in `seen`.
fn drain<R: Read + Send + 'static>(
    mut r: R,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
        let v = seen.lock().unwrap().clone();
        v
    })
}

impl Running {
    /// Starts `cmd`; writes its stdin data and keeps stdin open if `keep_stdin`.
    pub fn start(cmd: &Cmd, keep_stdin: bool) -> Running {
        let mut c = cmd.command();
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", cmd.describe()));
        let pid = child.id();
        let stdout_so_far = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = drain(
            child.stdout.take().expect("stdout piped"),
            stdout_so_far.clone(),
        );
        let err = drain(
            child.stderr.take().expect("stderr piped"),
            Default::default(),
        );
        let mut stdin = child.stdin.take();
        if let Some(s) = stdin.as_mut() {
            // A child that exits without reading gives EPIPE: not our concern.
            let _ = s.write_all(&cmd.stdin);
        }
        Running {
            child,
            pid,
            started: Instant::now(),
            timeout: cmd.timeout,
            describe: cmd.describe(),
            out: Some(out),
            err: Some(err),
            stdin: if keep_stdin { stdin } else { None },
            stdout_so_far,
        }
    }

    /// Waits until the child has printed a line equal to `line` on stdout (panics after
    /// `within`).
    pub fn wait_for_stdout_line(&mut self, line: &str, within: Duration) {
        let start = Instant::now();
        loop {
            let text = String::from_utf8_lossy(&self.stdout_so_far.lock().unwrap()).into_owned();
            if text.lines().any(|l| l == line) {
                return;
            }
            assert!(
                start.elapsed() < within && self.is_running(),
                "`{}` did not print {line:?} (stdout so far: {text:?})",
                self.describe
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the child.
    pub fn signal(&mut self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid as i32, sig) };
    }

    /// Closes the child's stdin (e.g. to end `-wait-stdin`).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn kill_group(&mut self) {
        // SAFETY: kill(2) on our own child's process group (pgid == pid).
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the end within the timeout; on timeout kills the whole
    /// process group and panics (a hang is a failure).
    pub fn wait(mut self) -> Outcome {
        self.stdin = None;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    let elapsed = self.started.elapsed();
                    let stdout = self.out.take().unwrap().join().unwrap_or_default();
                    let stderr = self.err.take().unwrap().join().unwrap_or_default();
                    return Outcome {
                        pid: self.pid,
                        status,
                        stdout,
                        stderr,
                        elapsed,
                    };
                }
                Ok(None) => {}
                Err(e) => panic!("waiting for `{}`: {e}", self.describe),
            }
            if self.started.elapsed() > self.timeout {
                self.kill_group();
                let stderr = self.err.take().unwrap().join().unwrap_or_default();
                panic!(
                    "TIMEOUT after {:?}: `{}` hung and was killed\nstderr:\n{}",
                    self.timeout,
                    self.describe,
                    String::from_utf8_lossy(&stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that panics while a child runs must not leave it behind.
        if self.out.is_some() && matches!(self.child.try_wait(), Ok(None)) {
            self.kill_group();
        }
    }
}

/// Runs `cmd` to completion (stdin fed and closed), bounded by its timeout.
pub fn run(cmd: Cmd) -> Outcome {
    Running::start(&cmd, false).wait()
}

/// Asserts two runs are indistinguishable to a user: stdout, stderr, exit status.
pub fn assert_same_behaviour(what: &str, without: &Outcome, with: &Outcome) {
    assert_eq!(
        without.status.code(),
        with.status.code(),
        "{what}: exit status differs without/with liboffheap (signal with: {:?})\nstderr with:\n{}",
        with.status.signal(),
        with.stderr_str()
    );
    assert!(
        without.stdout == with.stdout,
        "{what}: stdout differs without/with liboffheap\n--- without ---\n{}\n--- with ---\n{}",
        without.stdout_str(),
        with.stdout_str()
    );
    assert!(
        without.stderr == with.stderr,
        "{what}: stderr differs without/with liboffheap\n--- without ---\n{}\n--- with ---\n{}",
        without.stderr_str(),
        with.stderr_str()
    );
}

// ---------------------------------------------------------------------------
// Dumps
// ---------------------------------------------------------------------------

/// One dump file, parsed.
#[derive(Clone, Debug)]
pub struct Dump {
    pub path: PathBuf,
    pub pid: u32,
    pub seq: u64,
    pub json: Value,
}

/// `offheap.<pid>.<seq 6 digits>.json.gz` → (pid, seq).
pub fn parse_dump_name(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix("offheap.")?.strip_suffix(".json.gz")?;
    let (stem, seq) = rest.split_once('.')?;
    if seq.len() < 6 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // `<pid>_<n>`: a later process that got the same pid (after exec, or pid reuse).
    let pid = match stem.split_once('_') {
        Some((pid, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => pid,
        Some(_) => return None,
        None => stem,
    };
    Some((pid.parse().ok()?, seq.parse().ok()?))
}

/// Decompresses a gzip file whole (every member).
pub fn gunzip(path: &Path) -> Vec<u8> {
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(f), &mut out)
        .unwrap_or_else(|e| panic!("{} is not a complete gzip file: {e}", path.display()));
    out
}

/// The JSON documents of a stacks file, one per gzip member, read the simple way: member by
/// member until the data ends (a member cut short by a crash ends the list).
pub fn stacks_members(path: &Path) -> Vec<Value> {
    let Ok(bytes) = fs::read(path) else {
        return Vec::new();
    };
    let mut rest: &[u8] = &bytes;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let mut d = flate2::bufread::GzDecoder::new(rest);
        let mut text = Vec::new();
        if std::io::Read::read_to_end(&mut d, &mut text).is_err() {
            break;
        }
        rest = d.into_inner();
        match serde_json::from_slice(&text) {
            Ok(v) => out.push(v),
            Err(_) => break,
        }
    }
    out
}

/// A column table (`{"col": [...], ...}`) as row objects; id columns given in `deltas` are
/// decoded from differences.
pub fn column_rows(table: &Value, deltas: &[&str]) -> Vec<Value> {
    let Some(cols) = table.as_object() else {
        return Vec::new();
    };
    let n = cols
        .values()
        .filter_map(|c| c.as_array())
        .map(|a| a.len())
        .max()
        .unwrap_or(0);
    let mut rows: Vec<serde_json::Map<String, Value>> = vec![serde_json::Map::new(); n];
    for (name, col) in cols {
        let Some(col) = col.as_array() else { continue };
        assert_eq!(
            col.len(),
            n,
            "column {name} has {} entries for {n} rows",
            col.len()
        );
        let mut acc = 0u64;
        for (row, v) in rows.iter_mut().zip(col) {
            let v = if deltas.contains(&name.as_str()) {
                acc += v.as_u64().expect("delta-encoded id");
                Value::from(acc)
            } else {
                v.clone()
            };
            row.insert(name.clone(), v);
        }
    }
    rows.into_iter().map(Value::Object).collect()
}

/// Stacks (`[{"id", "end", "frames"}]`) and modules of a stacks file, decoding the shared
/// outer frames (`keep`) of each row.
pub fn read_stacks_file(path: &Path) -> (Vec<Value>, Vec<Value>) {
    let mut stacks = Vec::new();
    let mut modules = Vec::new();
    for member in stacks_members(path) {
        assert_eq!(
            member["format"],
            "offheap-stacks",
            "{}: format",
            path.display()
        );
        modules.extend(member["modules"].as_array().cloned().unwrap_or_default());
        let mut previous: Vec<u64> = Vec::new();
        for row in column_rows(&member["stacks"], &[]) {
            let keep = row["keep"].as_u64().unwrap_or(0) as usize;
            let mut frames: Vec<u64> = row["frames"]
                .as_array()
                .map(|a| a.iter().filter_map(|f| f.as_u64()).collect())
                .unwrap_or_default();
            assert!(
                keep <= previous.len(),
                "{}: keep beyond the previous stack",
                path.display()
            );
            frames.extend_from_slice(&previous[previous.len() - keep..]);
            previous = frames.clone();
            stacks.push(serde_json::json!({"id": row["id"], "end": row["end"], "frames": frames}));
        }
    }
    (stacks, modules)
}

/// A dump as the tests read it: tables turned into arrays of row objects, stacks and
/// modules (from the stacks file) inline, as if the dump held them.
fn normalise(mut json: Value, dir: &Path) -> Value {
    json["outstanding"] = Value::Array(column_rows(&json["outstanding"], &["stack"]));
    json["cumulative"] = Value::Array(column_rows(&json["cumulative"], &["stack"]));
    json["threads"]["by_stack"] =
        Value::Array(column_rows(&json["threads"]["by_stack"], &["stack"]));
    if let Some(file) = json["header"]["stacks_file"].as_str() {
        let below = json["header"]["stack_ids_below"].as_u64().unwrap_or(0);
        let (stacks, modules) = read_stacks_file(&dir.join(file));
        let stacks: Vec<Value> = stacks
            .into_iter()
            .filter(|s| s["id"].as_u64().is_some_and(|id| id < below))
            .collect();
        json["stacks"] = Value::Array(stacks);
        json["modules"] = Value::Array(modules);
    }
    json
}

impl Dump {
    pub fn header(&self) -> &Value {
        &self.json["header"]
    }
    pub fn trigger(&self) -> &str {
        self.json["header"]["trigger"].as_str().unwrap_or("")
    }
    /// `totals.<kind>` as (bytes, count); a missing kind is (0, 0).
    pub fn totals(&self, kind: &str) -> (u64, u64) {
        let t = &self.json["totals"][kind];
        (
            t["bytes"].as_u64().unwrap_or(0),
            t["count"].as_u64().unwrap_or(0),
        )
    }
    pub fn outstanding(&self) -> &[Value] {
        self.json["outstanding"]
            .as_array()
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }
    pub fn stacks(&self) -> &[Value] {
        self.json["stacks"]
            .as_array()
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }
    /// Stack id → stack object.
    pub fn stack_map(&self) -> BTreeMap<u64, &Value> {
        self.stacks()
            .iter()
            .filter_map(|s| Some((s["id"].as_u64()?, s)))
            .collect()
    }
}

/// Reads and parses every dump in `dir`, sorted by (pid, seq). Panics on a
/// file with a dump name that does not parse (a reader must never see a
/// partial dump) or that is not an `offheap-dump` of version 2.
pub fn read_dumps(dir: &Path) -> Vec<Dump> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
        let e = e.expect("dir entry");
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((pid, seq)) = parse_dump_name(&name) else {
            continue;
        };
        let path = e.path();
        let text = gunzip(&path);
        let json: Value = serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("dump {} is not valid JSON: {e}", path.display()));
        assert_eq!(json["format"], "offheap-dump", "{}: format", path.display());
        assert_eq!(json["version"], 2, "{}: version", path.display());
        let json = normalise(json, dir);
        assert_eq!(
            json["header"]["pid"].as_u64(),
            Some(pid as u64),
            "{}: header.pid",
            path.display()
        );
        assert_eq!(
            json["header"]["seq"].as_u64(),
            Some(seq),
            "{}: header.seq",
            path.display()
        );
        v.push(Dump {
            path,
            pid,
            seq,
            json,
        });
    }
    // A pid can have several processes (exec keeps the pid): order them by start time.
    v.sort_by_key(|d| {
        let start = d.json["header"]["start_wall_ns"].as_u64().unwrap_or(0);
        (d.pid, start, d.seq)
    });
    v
}

/// Dumps of one process, by seq.
pub fn dumps_of(dir: &Path, pid: u32) -> Vec<Dump> {
    read_dumps(dir)
        .into_iter()
        .filter(|d| d.pid == pid)
        .collect()
}

/// The exit dump of `pid` (the last dump, whose trigger must be "exit").
pub fn exit_dump(dir: &Path, pid: u32) -> Dump {
    let dumps = dumps_of(dir, pid);
    let names: Vec<String> = read_dumps(dir)
        .iter()
        .map(|d| d.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let last = dumps
        .last()
        .unwrap_or_else(|| {
            panic!(
                "no dump of pid {pid} in {} (files: {names:?})",
                dir.display()
            )
        })
        .clone();
    assert_eq!(
        last.trigger(),
        "exit",
        "last dump of pid {pid} ({}) is not the exit dump",
        last.path.display()
    );
    last
}

/// The last dump of `pid` (for Go programs, which leave without an exit dump).
pub fn last_dump(dir: &Path, pid: u32) -> Dump {
    dumps_of(dir, pid)
        .pop()
        .unwrap_or_else(|| panic!("no dump of pid {pid} in {}", dir.display()))
}

// ---------------------------------------------------------------------------
// Reporter
// ---------------------------------------------------------------------------

/// Runs `offheap report --format json --all <inputs…>` and parses its stdout. `--all`: the
/// tests look at every stack (the default report lists the stacks beneath its top suspects
/// only).
pub fn report_json(inputs: &[&Path]) -> Value {
    let out = run(Cmd::new(offheap_bin())
        .args(["report", "--format", "json", "--all"])
        .args(inputs)
        .timeout(Duration::from_secs(120)));
    out.assert_success("offheap report --format json");
    serde_json::from_str(&out.stdout_str()).unwrap_or_else(|e| {
        panic!(
            "offheap report --format json printed invalid JSON ({e}):\n{}\nstderr:\n{}",
            out.stdout_str(),
            out.stderr_str()
        )
    })
}

/// Report over the dumps of one process.
pub fn report_for_pid(dir: &Path, pid: u32) -> Value {
    let dumps = dumps_of(dir, pid);
    assert!(
        !dumps.is_empty(),
        "no dump of pid {pid} in {}",
        dir.display()
    );
    let paths: Vec<&Path> = dumps.iter().map(|d| d.path.as_path()).collect();
    report_json(&paths)
}

/// The report's stacks.
pub fn report_stacks(report: &Value) -> &[Value] {
    report["stacks"]
        .as_array()
        .map(|v| v.as_slice())
        .unwrap_or(&[])
}

/// Function names of a report stack, innermost first ("" where unknown).
pub fn functions(stack: &Value) -> Vec<String> {
    stack["frames"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| f["function"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Index of the first frame whose function is `name`.
pub fn frame_index(stack: &Value, name: &str) -> Option<usize> {
    functions(stack).iter().position(|f| f == name)
}

/// A short printable form of a report stack for messages.
pub fn describe_stack(stack: &Value) -> String {
    let frames: Vec<String> = stack["frames"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    format!(
                        "{} ({}:{})",
                        f["function"].as_str().unwrap_or("?"),
                        f["file"].as_str().unwrap_or("?"),
                        f["line"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "kind={} origin={} verdict={} bytes={} count={}\n    {}",
        stack["kind"],
        stack["origin"],
        stack["verdict"],
        stack["bytes"],
        stack["count"],
        frames.join("\n    ")
    )
}

/// All report stacks, printed, for failure messages.
pub fn describe_report(report: &Value) -> String {
    report_stacks(report)
        .iter()
        .map(describe_stack)
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// valgrind and sources
// ---------------------------------------------------------------------------

/// "in use at exit" (bytes, blocks) of `exe args` under valgrind memcheck
/// with its defaults (glibc's internal blocks freed by `__libc_freeres`).
pub fn valgrind_in_use(exe: &Path, args: &[&str]) -> (u64, u64) {
    memcheck(exe, args, true).in_use
}

/// One valgrind loss record: bytes, blocks and the function names of its stack.
#[derive(Clone, Debug)]
pub struct LossRecord {
    pub bytes: u64,
    pub blocks: u64,
    pub functions: Vec<String>,
}

/// valgrind memcheck's view of a run.
#[derive(Clone, Debug)]
pub struct Memcheck {
    /// "in use at exit" as (bytes, blocks).
    pub in_use: (u64, u64),
    pub records: Vec<LossRecord>,
}

/// Runs `exe args` under memcheck with every leak kind listed.
///
/// `run_libc_freeres`: valgrind normally calls glibc's `__libc_freeres` at
/// exit, which frees glibc's internal blocks (e.g. the DTVs of cached thread
/// stacks). A preloaded library cannot do that, so the figure comparable with
/// an exit dump is the one with `run_libc_freeres = false`.
pub fn memcheck(exe: &Path, args: &[&str], run_libc_freeres: bool) -> Memcheck {
    let freeres = format!(
        "--run-libc-freeres={}",
        if run_libc_freeres { "yes" } else { "no" }
    );
    let out = run(Cmd::new("valgrind")
        .args([
            "--tool=memcheck",
            "--leak-check=full",
            "--show-leak-kinds=all",
            "--num-callers=50",
            freeres.as_str(),
        ])
        .arg(exe)
        .args(args)
        .timeout(Duration::from_secs(300)));
    let err = out.stderr_str();
    assert!(
        out.status.success(),
        "valgrind {} failed (is the valgrind package installed?):\n{err}",
        exe.display()
    );
    let in_use = parse_valgrind_in_use(&err)
        .unwrap_or_else(|| panic!("no 'in use at exit' line in valgrind output:\n{err}"));
    Memcheck {
        in_use,
        records: parse_loss_records(&err),
    }
}

fn parse_count(tok: &str) -> Option<u64> {
    tok.trim_start_matches('(').replace(',', "").parse().ok()
}

/// Parses memcheck's loss records ("N bytes in M blocks are ... in loss record").
pub fn parse_loss_records(text: &str) -> Vec<LossRecord> {
    let mut v: Vec<LossRecord> = Vec::new();
    let mut in_record = false;
    for raw in text.lines() {
        // Strip the "==pid== " prefix.
        let line = match raw.strip_prefix("==") {
            Some(r) => r.split_once("== ").map(|x| x.1).unwrap_or("").trim(),
            None => raw.trim(),
        };
        if line.contains(" in loss record ") {
            let toks: Vec<&str> = line.split_whitespace().collect();
            let bytes = toks.first().and_then(|t| parse_count(t));
            let blocks = toks
                .iter()
                .position(|t| *t == "in")
                .and_then(|i| toks.get(i + 1))
                .and_then(|t| parse_count(t));
            if let (Some(bytes), Some(blocks)) = (bytes, blocks) {
                v.push(LossRecord {
                    bytes,
                    blocks,
                    functions: Vec::new(),
                });
                in_record = true;
                continue;
            }
        }
        if in_record && (line.starts_with("at 0x") || line.starts_with("by 0x")) {
            if let Some((_, rest)) = line.split_once(": ") {
                let f = rest.split(" (").next().unwrap_or("").to_string();
                v.last_mut().unwrap().functions.push(f);
            }
        } else {
            in_record = false;
        }
    }
    v
}

/// glibc-internal allocations that stay live at exit, identified by a
/// function in their stack: the DTV of each cached thread stack
/// (`_dl_allocate_tls`), and what dlopen keeps (its `_dl_find_object`
/// segments). valgrind frees them through `__libc_freeres`; nothing does in a
/// normal exit. Only exported names are used: ld.so has no `.symtab`, so
/// without separate debug files (libc6-dbg, which valgrind uses) its local
/// functions have no names.
pub const LIBC_INTERNAL: &[&str] = &["_dl_allocate_tls", "dlopen"];

/// `dlopen@@GLIBC_2.34` (valgrind) and `dlopen` (symbol table) are one function.
fn base_name(f: &str) -> &str {
    f.split('@').next().unwrap_or(f)
}

/// The LIBC_INTERNAL function a stack goes through, if any.
pub fn libc_internal(functions: &[String]) -> Option<&'static str> {
    LIBC_INTERNAL
        .iter()
        .find(|f| functions.iter().any(|g| base_name(g) == **f))
        .copied()
}

/// Number of TLS modules liboffheap.so adds to a process (its PT_TLS
/// segments). Each one makes every DTV one `dtv_t` (16 bytes) longer than
/// in the same program under valgrind, whose preload has no TLS.
pub fn preload_tls_modules() -> u64 {
    let out = run(Cmd::new("readelf").args(["-lW"]).arg(liboffheap()));
    out.assert_success("readelf -lW liboffheap.so (binutils)");
    out.stdout_str()
        .lines()
        .filter(|l| l.split_whitespace().next() == Some("TLS"))
        .count() as u64
}

/// Size of one DTV slot (`dtv_t`) on 64-bit glibc.
pub const DTV_SLOT_BYTES: u64 = 16;

/// (bytes, count) per LIBC_INTERNAL function over valgrind's records, plus
/// the program's own (everything else) under the key "".
pub fn memcheck_buckets(m: &Memcheck) -> BTreeMap<&'static str, (u64, u64)> {
    let mut b: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    for r in &m.records {
        let e = b
            .entry(libc_internal(&r.functions).unwrap_or(""))
            .or_default();
        e.0 += r.bytes;
        e.1 += r.blocks;
    }
    b
}

/// The same buckets over a report's malloc stacks.
pub fn report_buckets(report: &Value) -> BTreeMap<&'static str, (u64, u64)> {
    let mut b: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    for s in report_stacks(report)
        .iter()
        .filter(|s| s["kind"] == "malloc")
    {
        let e = b
            .entry(libc_internal(&functions(s)).unwrap_or(""))
            .or_default();
        e.0 += s["bytes"].as_u64().unwrap_or(0);
        e.1 += s["count"].as_u64().unwrap_or(0);
    }
    b
}

/// What the exit dump's malloc figures must be, derived from valgrind's
/// `--run-libc-freeres=no` buckets: the same blocks, and the same bytes except
/// that each DTV is `DTV_SLOT_BYTES` longer per TLS module of the preload.
pub fn expected_under_offheap(
    vg: &BTreeMap<&'static str, (u64, u64)>,
) -> BTreeMap<&'static str, (u64, u64)> {
    let tls = preload_tls_modules();
    vg.iter()
        .map(|(k, (bytes, count))| {
            let extra = if *k == "_dl_allocate_tls" {
                DTV_SLOT_BYTES * tls * count
            } else {
                0
            };
            (*k, (bytes + extra, *count))
        })
        .collect()
}

/// Sum of all buckets.
pub fn bucket_total(b: &BTreeMap<&'static str, (u64, u64)>) -> (u64, u64) {
    b.values().fold((0, 0), |(x, y), (b, c)| (x + b, y + c))
}

/// Parses `==pid==     in use at exit: 326,743 bytes in 21 blocks`.
pub fn parse_valgrind_in_use(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.contains("in use at exit:"))?;
    let rest = line.split("in use at exit:").nth(1)?.trim();
    let mut it = rest.split_whitespace();
    let bytes = it.next()?.replace(',', "").parse().ok()?;
    if it.next()? != "bytes" || it.next()? != "in" {
        return None;
    }
    let blocks = it.next()?.replace(',', "").parse().ok()?;
    Some((bytes, blocks))
}

/// The number a program printed as `name=N` (a word of `text`, its truth line); panics,
/// showing the text, when there is none.
pub fn printed_value(text: &str, name: &str) -> u64 {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {text:?}"))
}

/// 1-based line of the unique line in `src` containing `@line <name>` as a
/// whole marker (the examples mark call sites this way instead of the tests
/// hard-coding line numbers).
pub fn marker_line(src: &Path, name: &str) -> u64 {
    let text = fs::read_to_string(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    let names_on = |l: &str| -> bool {
        l.split("@line ").skip(1).any(|rest| {
            let token: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '*')
                .collect();
            token == name
        })
    };
    let hits: Vec<u64> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| names_on(l))
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "marker `@line {name}` must occur exactly once in {}",
        src.display()
    );
    hits[0]
}

// ---------------------------------------------------------------------------
// Helpers shared by the hostile-world and dump-robustness suites.

/// A C source of `examples/c/hostile/`.
pub fn hostile_src(file: &str) -> PathBuf {
    examples_dir().join("c").join("hostile").join(file)
}

/// `examples/c/hostile/host.c`: prints "host output" on stdout, "host diagnostics" on stderr
/// and exits 7, with modes that plant files and links for the security tests.
pub fn build_host(tmp: &TempDir) -> PathBuf {
    cc(tmp.path(), "host", &[hostile_src("host.c")], &["-O2", "-g"])
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a root-only test can run: true as root. Otherwise a SKIP line, except in CI, which
/// runs as root: there a test that cannot run fails loudly instead of passing silently.
pub fn needs_root(why: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(!in_ci(), "CI must run as root: {why}");
    eprintln!("[offheap-tests] SKIP: needs root to {why}");
    false
}

/// The names in `dir`, sorted (empty when it cannot be read).
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// (bytes, count) the report attributes to malloc stacks going through `function`, for `pid`.
pub fn attributed(dir: &Path, pid: u32, function: &str) -> (u64, u64) {
    let report = report_for_pid(dir, pid);
    report_stacks(&report)
        .iter()
        .filter(|s| s["kind"] == "malloc" && frame_index(s, function).is_some())
        .fold((0, 0), |(b, c), s| {
            (
                b + s["bytes"].as_u64().unwrap_or(0),
                c + s["count"].as_u64().unwrap_or(0),
            )
        })
}

/// Function names of return addresses, by binutils' `addr2line` over `exe` (an oracle that
/// shares no code with the reporter): one call for all addresses; each frame is looked up at
/// `addr - 1` (the call instruction), inlined frames flattened.
pub fn addr2line_functions(exe: &Path, addrs: &[u64]) -> BTreeMap<u64, Vec<String>> {
    let mut uniq: Vec<u64> = addrs.to_vec();
    uniq.sort_unstable();
    uniq.dedup();
    let mut out = BTreeMap::new();
    if uniq.is_empty() {
        return out;
    }
    let args: Vec<String> = uniq.iter().map(|a| format!("{:#x}", a - 1)).collect();
    let res = run(Cmd::new("addr2line")
        .args(["-f", "-i", "-a", "-e"])
        .arg(exe)
        .args(&args));
    res.assert_success("addr2line");
    // Output: "0x<addr>" then (function, file:line) pairs, several when inlined.
    let text = res.stdout_str();
    let mut current: Option<u64> = None;
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if let Some(hex) = l.strip_prefix("0x") {
            current = u64::from_str_radix(hex, 16).ok().map(|a| a + 1);
            continue;
        }
        let _file = lines.next();
        if let Some(a) = current {
            out.entry(a).or_insert_with(Vec::new).push(l.to_string());
        }
    }
    out
}

/// The rows among `rows` (each with a "stack" id) whose stack has a frame in `function`,
/// named by `addr2line` over `exe`.
fn rows_in_function<'a>(
    d: &Dump,
    exe: &Path,
    function: &str,
    rows: Vec<&'a Value>,
) -> Vec<&'a Value> {
    let stacks = d.stack_map();
    let frames_of = |row: &Value| -> Vec<u64> {
        row["stack"]
            .as_u64()
            .and_then(|id| stacks.get(&id))
            .and_then(|s| s["frames"].as_array())
            .map(|fr| fr.iter().filter_map(|f| f.as_u64()).collect())
            .unwrap_or_default()
    };
    let addrs: Vec<u64> = rows.iter().flat_map(|r| frames_of(r)).collect();
    let names = addr2line_functions(exe, &addrs);
    rows.into_iter()
        .filter(|r| {
            frames_of(r).iter().any(|a| {
                names
                    .get(a)
                    .is_some_and(|n| n.iter().any(|f| f == function))
            })
        })
        .collect()
}

/// (bytes, count) of the dump's outstanding rows of `kind` and `via` whose stack contains
/// `function` (by addr2line over `exe`).
pub fn attributed_in_dump(
    d: &Dump,
    exe: &Path,
    function: &str,
    kind: &str,
    via: &str,
) -> (u64, u64) {
    let rows: Vec<&Value> = d
        .outstanding()
        .iter()
        .filter(|o| o["kind"] == kind && o["via"] == via)
        .collect();
    rows_in_function(d, exe, function, rows)
        .iter()
        .fold((0, 0), |(b, c), o| {
            (
                b + o["bytes"].as_u64().unwrap_or(0),
                c + o["count"].as_u64().unwrap_or(0),
            )
        })
}

/// The dump's cumulative counters, [allocs, frees, alloc bytes, free bytes], summed over the
/// stacks that have a frame in `function` (named by `addr2line` over `exe`).
pub fn cumulative_in_dump(d: &Dump, exe: &Path, function: &str) -> [u64; 4] {
    let rows: Vec<&Value> = d.json["cumulative"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut sum = [0u64; 4];
    for r in rows_in_function(d, exe, function, rows) {
        for (k, col) in ["allocs", "frees", "alloc_bytes", "free_bytes"]
            .iter()
            .enumerate()
        {
            sum[k] += r[*col].as_u64().unwrap_or(0);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valgrind_summary() {
        let t = "==5429== HEAP SUMMARY:\n==5429==     in use at exit: 326,743 bytes in 21 blocks\n";
        assert_eq!(parse_valgrind_in_use(t), Some((326_743, 21)));
        assert_eq!(
            parse_valgrind_in_use("==1==     in use at exit: 0 bytes in 0 blocks"),
            Some((0, 0))
        );
        assert_eq!(parse_valgrind_in_use("nothing"), None);
    }

    #[test]
    fn parses_loss_records() {
        let t = "==1== 1,088 bytes in 4 blocks are possibly lost in loss record 2 of 14\n\
                 ==1==    at 0x48465EF: calloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)\n\
                 ==1==    by 0x401171D: _dl_allocate_tls (dl-tls.c:670)\n\
                 ==1== \n\
                 ==1== 777 bytes in 1 blocks are still reachable in loss record 1 of 14\n\
                 ==1==    by 0x1094FA: site_realloc_leak (groundtruth.c:74)\n";
        let r = parse_loss_records(t);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].bytes, r[0].blocks), (1088, 4));
        assert_eq!(r[0].functions, vec!["calloc", "_dl_allocate_tls"]);
        assert_eq!(libc_internal(&r[0].functions), Some("_dl_allocate_tls"));
        assert_eq!((r[1].bytes, r[1].blocks), (777, 1));
        assert_eq!(r[1].functions, vec!["site_realloc_leak"]);
    }

    #[test]
    fn parses_dump_names() {
        assert_eq!(
            parse_dump_name("offheap.123.000007.json.gz"),
            Some((123, 7))
        );
        assert_eq!(
            parse_dump_name("offheap.123_2.000007.json.gz"),
            Some((123, 7))
        );
        assert_eq!(parse_dump_name(".offheap.123.000007.json.gz.0.tmp"), None);
        assert_eq!(parse_dump_name("offheap.123.000007.json"), None);
        assert_eq!(parse_dump_name("offheap.123.stacks.gz"), None);
        assert_eq!(parse_dump_name("offheap.123.7.json.gz"), None);
        assert_eq!(parse_dump_name("other.json"), None);
    }

    #[test]
    fn timeout_kills_and_fails() {
        let r = std::panic::catch_unwind(|| {
            run(Cmd::new("sleep")
                .arg("30")
                .timeout(Duration::from_millis(200)))
        });
        let msg = r.expect_err("a hung child must fail");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("TIMEOUT"), "{msg}");
    }

    #[test]
    fn markers_are_found() {
        let l = marker_line(&c_example("chain5.c"), "chain_level5");
        assert!(l > 1);
    }
}
