//! OFFHEAP_* configuration, read once in the constructor and then immutable.
//!
//! Parsing is strict: a value that does not parse exactly is reported on one stderr line that
//! names the variable and the accepted form, and the library then stays inert for the whole
//! process (the host runs as if we were not there) rather than guessing what was meant.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where dumps go; absolute (relative values are resolved against the start-up cwd).
    pub dir: PathBuf,
    /// Whether `dir` came from the default rather than OFFHEAP_DIR.
    pub dir_is_default: bool,
    /// Milliseconds between periodic dumps; 0 = only on demand and at exit.
    pub interval_ms: u64,
    pub keep: usize,
    pub warmup_ms: u64,
    pub max_frames: usize,
    /// OFFHEAP_MAX_STACKS, when set; otherwise the store is sized at start-up
    /// (`lifecycle::stack_capacity`).
    pub max_stacks: Option<usize>,
    /// Mean bytes between sampled allocations; 0 = track every allocation.
    pub sample_bytes: u64,
    pub stacks: bool,
    pub follow_children: bool,
    /// Walk every frame with framehop instead of the compact rule cache (for comparison).
    pub framehop_only: bool,
    /// When the library runs a thread of its own.
    pub thread: ThreadMode,
    /// A forked child younger than this (ms) at exit writes no dump.
    pub child_min_ms: u64,
    /// The effective uid the dump directory was prepared for.
    pub uid: u32,
    /// Divert the Go runtime's raw system calls and exit paths into the library.
    pub go_probes: bool,
    /// Testing aid (OFFHEAP_TEST_PARK): a thread named `offheap-park` stops this long (ms)
    /// in the middle of its first stack walk, holding the module set it loaded.
    pub test_park_ms: u64,
    /// Testing aid (OFFHEAP_TEST_RECLAIM=unsafe): free replaced module sets at once, ignoring
    /// walks in flight — the unsound behaviour the park test must be able to catch.
    pub test_reclaim_unsafe: bool,
}

/// OFFHEAP_THREAD: whether and when the library has a thread of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadMode {
    /// The dumper thread starts when the program starts a thread of its own; a single-threaded
    /// program gets a thread only while a dump is written.
    Auto,
    /// A dumper thread from the start (on-demand snapshots of single-threaded programs).
    Always,
    /// Never a thread: periodic dumps are written by the program's own thread, in the
    /// allocation call during which they fall due; no control socket.
    Never,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

pub fn try_get() -> Option<&'static Config> {
    CONFIG.get()
}

pub const DEFAULT_INTERVAL_S: u64 = 30;
pub const DEFAULT_KEEP: usize = 500;
pub const DEFAULT_MAX_FRAMES: usize = 64;
pub const DEFAULT_MAX_STACKS: usize = 262_144;
pub const DEFAULT_CHILD_MIN_MS: u64 = 1_000;

const KNOWN: &[&str] = &[
    "OFFHEAP_DIR",
    "OFFHEAP_INTERVAL",
    "OFFHEAP_KEEP",
    "OFFHEAP_WARMUP",
    "OFFHEAP_MAX_FRAMES",
    "OFFHEAP_MAX_STACKS",
    "OFFHEAP_SAMPLE_BYTES",
    "OFFHEAP_STACKS",
    "OFFHEAP_VERBOSE",
    "OFFHEAP_FOLLOW_CHILDREN",
    "OFFHEAP_LIB",
    "OFFHEAP_UNWINDER",
    "OFFHEAP_THREAD",
    "OFFHEAP_CHILD_MIN",
    "OFFHEAP_GO_PROBES",
    "OFFHEAP_DIRECT",
    "OFFHEAP_TEST_PARK",
    "OFFHEAP_TEST_RECLAIM",
];

/// A configuration error: the variable and what it accepts.
pub struct BadValue {
    pub var: &'static str,
    pub value: String,
    pub expected: &'static str,
}

fn var(name: &'static str) -> Option<OsString> {
    std::env::var_os(name)
}

fn text(name: &'static str, expected: &'static str) -> Result<Option<String>, BadValue> {
    match var(name) {
        None => Ok(None),
        Some(v) => v.into_string().map(Some).map_err(|v| BadValue {
            var: name,
            value: v.to_string_lossy().into_owned(),
            expected,
        }),
    }
}

fn integer(
    name: &'static str,
    expected: &'static str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, BadValue> {
    let Some(s) = text(name, expected)? else {
        return Ok(None);
    };
    let bad = || BadValue {
        var: name,
        value: s.clone(),
        expected,
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = s.parse().map_err(|_| bad())?;
    if n < min || n > max {
        return Err(bad());
    }
    Ok(Some(n))
}

/// A duration in ms from seconds (`30`, `0.5`, to the ms) or with a unit as `offheap run
/// --interval` takes it (`2s`, `500ms`, `1m`, `1h`).
fn seconds(name: &'static str, expected: &'static str) -> Result<Option<u64>, BadValue> {
    let Some(s) = text(name, expected)? else {
        return Ok(None);
    };
    let bad = || BadValue {
        var: name,
        value: s.clone(),
        expected,
    };
    if let Some(ms) = s.strip_suffix("ms") {
        if ms.is_empty() || ms.len() > 12 || !ms.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        return ms.parse().map(Some).map_err(|_| bad());
    }
    let (number, unit_s) = [("s", 1), ("m", 60), ("h", 3600)]
        .iter()
        .find_map(|&(suffix, k)| s.strip_suffix(suffix).map(|n| (n, k)))
        .unwrap_or((s.as_str(), 1));
    let ms = fixed_point_ms(number).ok_or_else(bad)?;
    ms.checked_mul(unit_s).map(Some).ok_or_else(bad)
}

/// `12.345` (at most 9 digits, then at most 3) as 12,345 ms.
fn fixed_point_ms(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty()
        || whole.len() > 9
        || frac.len() > 3
        || (s.contains('.') && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let w: u64 = whole.parse().ok()?;
    let mut f: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..3 {
        f *= 10;
    }
    Some(w * 1000 + f)
}

fn flag(name: &'static str) -> Result<Option<bool>, BadValue> {
    const EXPECTED: &str = "0 or 1";
    match text(name, EXPECTED)?.as_deref() {
        None => Ok(None),
        Some("0") => Ok(Some(false)),
        Some("1") => Ok(Some(true)),
        Some(other) => Err(BadValue {
            var: name,
            value: other.to_string(),
            expected: EXPECTED,
        }),
    }
}

/// Whether the unsampled exits may be rewritten into direct jumps (`OFFHEAP_DIRECT`, default
/// 1; `hooks::direct`). Asked by the constructor before the configuration is loaded: a value
/// other than `0` lets it go ahead, and `load` reports a malformed one.
pub fn direct_jumps_wanted() -> bool {
    !matches!(flag("OFFHEAP_DIRECT"), Ok(Some(false)))
}

/// `OFFHEAP_DIR` made absolute, or the per-user default (and whether it is the default).
fn dump_dir() -> Result<(PathBuf, bool), BadValue> {
    Ok(match text("OFFHEAP_DIR", "a directory path")? {
        Some(d) if d.is_empty() => {
            return Err(BadValue {
                var: "OFFHEAP_DIR",
                value: d,
                expected: "a non-empty directory path",
            })
        }
        Some(d) => {
            let p = PathBuf::from(&d);
            let abs = if p.is_absolute() {
                p
            } else {
                std::env::current_dir()
                    .map_err(|_| BadValue {
                        var: "OFFHEAP_DIR",
                        value: d.clone(),
                        expected: "an absolute path (the current directory is unreadable)",
                    })?
                    .join(p)
            };
            (normalise(&abs), false)
        }
        None => {
            // SAFETY: getuid has no preconditions.
            let uid = unsafe { libc::getuid() };
            (PathBuf::from(offheap_format::names::default_dir(uid)), true)
        }
    })
}

/// `OFFHEAP_INTERVAL` in ms: 0, or at least 100.
fn interval() -> Result<u64, BadValue> {
    let interval_ms = seconds(
        "OFFHEAP_INTERVAL",
        "seconds between dumps, e.g. 30, 0.5, 2s, 500ms or 1m (0 = only on demand and at exit)",
    )?
    .unwrap_or(DEFAULT_INTERVAL_S * 1000);
    if interval_ms != 0 && interval_ms < 100 {
        return Err(BadValue {
            var: "OFFHEAP_INTERVAL",
            value: format!("{}.{:03}", interval_ms / 1000, interval_ms % 1000),
            expected: "0, or at least 0.1 seconds",
        });
    }
    Ok(interval_ms)
}

/// One of a variable's words, or `unset`.
fn choice<T: Copy>(
    name: &'static str,
    expected: &'static str,
    unset: T,
    words: &[(&str, T)],
) -> Result<T, BadValue> {
    let Some(value) = text(name, expected)? else {
        return Ok(unset);
    };
    match words.iter().find(|(w, _)| *w == value) {
        Some(&(_, v)) => Ok(v),
        None => Err(BadValue {
            var: name,
            value,
            expected,
        }),
    }
}

fn parse() -> Result<Config, BadValue> {
    let verbose = flag("OFFHEAP_VERBOSE")?.unwrap_or(false);
    crate::diag::set_verbose(verbose);
    let (dir, dir_is_default) = dump_dir()?;
    let interval_ms = interval()?;
    let keep = integer(
        "OFFHEAP_KEEP",
        "an integer from 3 to 1000000 (dumps kept per process)",
        3,
        1_000_000,
    )?
    .map_or(DEFAULT_KEEP, |n| n as usize);
    let warmup_ms = seconds("OFFHEAP_WARMUP", "seconds, e.g. 60, 2.5, 90s or 2m")?.unwrap_or(0);
    let max_frames = integer(
        "OFFHEAP_MAX_FRAMES",
        "an integer from 1 to 256",
        1,
        offheap_core::stack::MAX_FRAMES_LIMIT as u64,
    )?
    .map_or(DEFAULT_MAX_FRAMES, |n| n as usize);
    let max_stacks = integer(
        "OFFHEAP_MAX_STACKS",
        "an integer from 1024 to 4194304",
        1024,
        4_194_304,
    )?
    .map(|n| n as usize);
    let sample_bytes = integer(
        "OFFHEAP_SAMPLE_BYTES",
        "an integer number of bytes, 0 (track everything) to 1073741824",
        0,
        1 << 30,
    )?
    .unwrap_or(0);
    let stacks = flag("OFFHEAP_STACKS")?.unwrap_or(true);
    let follow_children = flag("OFFHEAP_FOLLOW_CHILDREN")?.unwrap_or(true);
    let framehop_only = choice(
        "OFFHEAP_UNWINDER",
        "compact (default) or framehop",
        false,
        &[("compact", false), ("framehop", true)],
    )?;
    let thread = choice(
        "OFFHEAP_THREAD",
        "auto (default), always or never",
        ThreadMode::Auto,
        &[
            ("auto", ThreadMode::Auto),
            ("always", ThreadMode::Always),
            ("never", ThreadMode::Never),
        ],
    )?;
    let go_probes = flag("OFFHEAP_GO_PROBES")?.unwrap_or(true);
    // Read by the constructor before the rest (`direct_jumps_wanted`); checked here so that a
    // bad value is reported like any other.
    flag("OFFHEAP_DIRECT")?;
    let child_min_ms = seconds(
        "OFFHEAP_CHILD_MIN",
        "seconds a forked child must live to write an exit dump, e.g. 1 or 0.2 (0 = always)",
    )?
    .unwrap_or(DEFAULT_CHILD_MIN_MS);
    let test_park_ms = seconds(
        "OFFHEAP_TEST_PARK",
        "seconds a thread named offheap-park stops in its first stack walk (testing aid)",
    )?
    .unwrap_or(0);
    let test_reclaim_unsafe = choice(
        "OFFHEAP_TEST_RECLAIM",
        "epochs (default) or unsafe (testing aid)",
        false,
        &[("epochs", false), ("unsafe", true)],
    )?;
    Ok(Config {
        dir,
        dir_is_default,
        interval_ms,
        keep,
        warmup_ms,
        max_frames,
        max_stacks,
        sample_bytes,
        stacks,
        follow_children,
        framehop_only,
        thread,
        child_min_ms,
        // SAFETY: geteuid has no preconditions.
        uid: unsafe { libc::geteuid() },
        go_probes,
        test_park_ms,
        test_reclaim_unsafe,
    })
}

/// The known variable a mistyped name most likely meant: within two edits.
fn closest_known(name: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance (names are short: the quadratic table is a few hundred cells).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            if let Some(c) = cur.get_mut(j + 1) {
                *c = sub.min(del).min(ins);
            }
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// Lexically resolve `.` and `..` so the directory we report is the one we use.
fn normalise(p: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Read the environment once. On a bad value, print one line and return false: the caller
/// leaves the library inert.
pub fn load() -> bool {
    // One line at most (the library never says more than one line to a host): a bad value
    // first, since it turns the library off; else the first unknown OFFHEAP_ name.
    match parse() {
        Ok(c) => {
            let _ = CONFIG.set(c);
            warn_unknown();
            true
        }
        Err(b) => {
            let value: String = b.value.chars().take(64).collect();
            crate::diag!(
                "{}={:?} is invalid: expected {}; offheap is disabled for this process",
                b.var,
                value,
                b.expected
            );
            false
        }
    }
}

fn warn_unknown() {
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if k.starts_with("OFFHEAP_") && !KNOWN.contains(&k) {
            match closest_known(k) {
                Some(m) => crate::diag!("ignoring unknown variable {k}: did you mean {m}?"),
                None => crate::diag!(
                    "ignoring unknown variable {k} (known: {})",
                    KNOWN.join(", ")
                ),
            }
            return;
        }
    }
}
