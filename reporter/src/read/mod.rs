//! Reading dumps: finds dump files, parses them defensively, groups them by process and orders
//! them by `seq`.
//!
//! A bad file never stops the report: it becomes a [`ReadError`] naming the file and what is
//! wrong, and the caller warns about it while the other files are still used. Memory is bounded
//! on purpose (file size cap, array length caps in [`format`], stacks interned once per process
//! and per-generation detail kept for the newest dump only) because the tools we replace are
//! known for data files too large to load.

pub mod format;

use format::{Dump, Module, Probe, Stack, FORMAT, SUPPORTED_VERSION};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Files larger than this are refused before reading: a dump of even a very busy service is
/// orders of magnitude smaller.
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// Up to this size a file is read whole and parsed from memory (fastest); larger ones are
/// parsed from a buffered reader so their text never sits in memory.
const SLURP_BYTES: u64 = 64 << 20;

/// Something wrong with one input file.
#[derive(Debug, Clone)]
pub struct ReadError {
    pub path: PathBuf,
    pub what: String,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)
    }
}

impl std::error::Error for ReadError {}

/// All dumps of one process, ordered by `seq`.
#[derive(Debug, Default)]
pub struct ProcessDumps {
    pub pid: u64,
    /// Ordered by `header.seq`; `stacks` are moved into [`ProcessDumps::stacks`], and
    /// `by_generation`/`by_epoch` are kept for the last dump only.
    pub dumps: Vec<Dump>,
    pub paths: Vec<PathBuf>,
    /// Interned stacks of the whole series (ids are stable within a process).
    pub stacks: HashMap<u64, Stack>,
    /// Union of the module maps (a module dlopen'ed late appears in later dumps only).
    pub modules: Vec<Module>,
}

/// Everything read from the inputs.
#[derive(Debug, Default)]
pub struct Input {
    /// Ordered by pid.
    pub processes: Vec<ProcessDumps>,
    pub errors: Vec<ReadError>,
    pub warnings: Vec<String>,
}

/// Parses one dump document. The error text says what is wrong (not JSON, truncated,
/// foreign, unknown version, corrupt) without the file name, which the caller adds.
pub fn parse_dump(bytes: &[u8]) -> Result<Dump, String> {
    // The strict parse first: on the good path, the only one (a second pass would double the
    // cost of reading a thousand dumps).
    format::reset_budget();
    match serde_json::from_slice::<Dump>(bytes) {
        Ok(dump) => accept(dump),
        Err(e) => Err(explain_failure(|| Ok(bytes), bytes, &e)),
    }
}

/// Parses a large file without holding its text in memory: memory then grows with what the
/// dump holds (bounded by the array caps), not with the file size, so a 1 GiB file of junk
/// cannot exhaust a small address space.
fn parse_dump_streaming(path: &Path) -> Result<Dump, String> {
    let open = || std::fs::File::open(path).map(|f| std::io::BufReader::with_capacity(1 << 20, f));
    let mut head = Vec::with_capacity(4096);
    open()
        .and_then(|f| f.take(4096).read_to_end(&mut head))
        .map_err(|e| format!("cannot read: {e}"))?;
    let r = open().map_err(|e| format!("cannot read: {e}"))?;
    format::reset_budget();
    match serde_json::from_reader::<_, Dump>(r) {
        Ok(dump) => accept(dump),
        Err(e) => Err(explain_failure(open, &head, &e)),
    }
}

fn accept(dump: Dump) -> Result<Dump, String> {
    check_identity(dump.format.as_str(), Some(dump.version))?;
    validate(&dump)?;
    Ok(dump)
}

/// A failed strict parse: tell foreign or future files from corrupt ones, so a version 2 dump
/// is not reported as "missing field" noise. `open` re-reads the input; `head` is its start.
fn explain_failure<R: Read>(
    open: impl Fn() -> std::io::Result<R>,
    head: &[u8],
    strict: &serde_json::Error,
) -> String {
    let reread = |what: std::io::Error| format!("cannot read: {what}");
    let first = head.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first.is_some() && first != Some(b'{') {
        // Valid JSON that is not an object is someone else's file; anything else is not JSON.
        let r = match open() {
            Ok(r) => r,
            Err(e) => return reread(e),
        };
        return match serde_json::from_reader::<_, serde::de::IgnoredAny>(r) {
            Ok(_) => "foreign JSON: the top level is not an object, so not a dump".into(),
            Err(e) => describe_json_error(&e, head),
        };
    }
    let r = match open() {
        Ok(r) => r,
        Err(e) => return reread(e),
    };
    let probe: Probe = match serde_json::from_reader(r) {
        Ok(p) => p,
        Err(e) => return describe_json_error(&e, head),
    };
    let format = match probe.format.as_ref() {
        Some(v) => v.as_str().unwrap_or("(not a string)"),
        None => return format!("foreign JSON: no \"format\": \"{FORMAT}\" field"),
    };
    if let Err(e) = check_identity(format, probe.version.as_ref().and_then(|v| v.as_u64())) {
        return e;
    }
    format!("corrupt dump: {}", clean(strict))
}

fn check_identity(format: &str, version: Option<u64>) -> Result<(), String> {
    if format != FORMAT {
        return Err(format!(
            "foreign JSON: \"format\" is {format:?}, expected \"{FORMAT}\""
        ));
    }
    match version {
        Some(SUPPORTED_VERSION) => Ok(()),
        Some(v) => Err(format!(
            "unknown dump version {v} (this reporter reads version {SUPPORTED_VERSION}); \
             upgrade offheap"
        )),
        None => Err("corrupt dump: \"version\" is missing or not an integer".into()),
    }
}

/// Semantic checks serde cannot express.
fn validate(d: &Dump) -> Result<(), String> {
    for m in &d.modules {
        for &(s, e) in &m.ranges {
            if e < s {
                return Err(format!(
                    "corrupt dump: module {} has a range ending before it starts",
                    m.path
                ));
            }
        }
    }
    Ok(())
}

fn clean(e: &serde_json::Error) -> String {
    // serde_json messages are already precise ("missing field `header` at line 1 column 40");
    // only the recursion guard deserves plain words.
    let s = e.to_string();
    if s.contains("recursion limit exceeded") {
        format!("nesting too deep ({s})")
    } else {
        s
    }
}

fn describe_json_error(e: &serde_json::Error, bytes: &[u8]) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => {
            if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                "empty file".to_string()
            } else {
                format!("truncated JSON ({e})")
            }
        }
        Category::Syntax => {
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            if matches!(first, Some(b'{') | Some(b'[')) {
                format!("corrupt JSON ({})", clean(e))
            } else {
                format!("not JSON ({e})")
            }
        }
        Category::Data => format!("foreign JSON: not a dump object ({})", clean(e)),
        Category::Io => format!("read error ({e})"),
    }
}

/// Reads and parses one file, refusing absurd sizes before reading.
pub fn read_dump_file(path: &Path) -> Result<Dump, ReadError> {
    let err = |what: String| ReadError {
        path: path.to_path_buf(),
        what,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(format!(
            "file is {} bytes, over the {} byte limit for a dump",
            meta.len(),
            MAX_FILE_BYTES
        )));
    }
    if meta.len() > SLURP_BYTES {
        return parse_dump_streaming(path).map_err(err);
    }
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    parse_dump(&bytes).map_err(err)
}

/// `offheap.<pid>.<seq>.json` or `offheap.<pid>_<n>.<seq>.json` (a later process with the
/// same pid, e.g. after exec) → (pid, seq).
pub fn parse_dump_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("offheap.")?.strip_suffix(".json")?;
    let (stem, seq) = rest.split_once('.')?;
    let pid = match stem.split_once('_') {
        Some((pid, n)) => {
            n.parse::<u64>().ok()?;
            pid
        }
        None => stem,
    };
    Some((pid.parse().ok()?, seq.parse().ok()?))
}

/// Expands directories into their dump files (anything else in a directory is ignored, as the
/// format promises); explicit files are taken as given.
pub fn discover(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| ReadError {
            path: p.clone(),
            what: format!("cannot open: {e}"),
        })?;
        if meta.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| ReadError {
                path: p.clone(),
                what: format!("cannot list directory: {e}"),
            })?;
            let mut found: Vec<((u64, u64), PathBuf)> = Vec::new();
            for ent in rd.flatten() {
                let name = ent.file_name();
                if let Some(key) = name.to_str().and_then(parse_dump_name) {
                    found.push((key, ent.path()));
                }
            }
            found.sort();
            out.extend(found.into_iter().map(|(_, p)| p));
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Reads all files (in parallel, bounded by the machine's cores), groups them by process —
/// pid and start time, so a later process that got the same pid (exec, pid reuse) is a series
/// of its own — and orders them. `progress` is called with (done, total) after each file.
pub fn load(files: &[PathBuf], progress: &(dyn Fn(usize, usize) + Sync)) -> Input {
    struct Shared {
        per_pid: HashMap<(u64, u64), PidAcc>,
        errors: Vec<ReadError>,
        warnings: Vec<String>,
    }
    #[derive(Default)]
    struct PidAcc {
        dumps: Vec<(PathBuf, Dump)>,
        stacks: HashMap<u64, Stack>,
        modules: Vec<Module>,
        max_seq: Option<u64>,
        conflict_warned: bool,
    }
    let shared = Mutex::new(Shared {
        per_pid: HashMap::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
    });
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
        .min(files.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = files.get(i) else { break };
                let res = read_dump_file(path);
                {
                    let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
                    match res {
                        Err(e) => sh.errors.push(e),
                        Ok(mut d) => {
                            let pid = d.header.pid;
                            let mut warn = None;
                            let run = (pid, d.header.start_wall_ns);
                            let acc = sh.per_pid.entry(run).or_default();
                            for st in std::mem::take(&mut d.stacks) {
                                match acc.stacks.get(&st.id) {
                                    Some(old) if old.frames != st.frames => {
                                        if !acc.conflict_warned {
                                            acc.conflict_warned = true;
                                            warn = Some(format!(
                                                "{}: stack id {} has different frames than in \
                                                 an earlier dump of pid {pid}; keeping the first",
                                                path.display(),
                                                st.id
                                            ));
                                        }
                                    }
                                    Some(_) => {}
                                    None => {
                                        acc.stacks.insert(st.id, st);
                                    }
                                }
                            }
                            for m in std::mem::take(&mut d.modules) {
                                if !acc
                                    .modules
                                    .iter()
                                    .any(|o| o.path == m.path && o.base == m.base)
                                {
                                    acc.modules.push(m);
                                }
                            }
                            // Per-generation rows are only used from the newest dump; keeping
                            // them for every dump would multiply memory by up to 64.
                            let seq = d.header.seq;
                            if acc.max_seq.is_some_and(|m| m > seq) {
                                strip_detail(&mut d);
                            } else {
                                acc.max_seq = Some(seq);
                                for (_, old) in acc.dumps.iter_mut() {
                                    strip_detail(old);
                                }
                            }
                            acc.dumps.push((path.clone(), d));
                            if let Some(w) = warn {
                                sh.warnings.push(w);
                            }
                        }
                    }
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(n, files.len());
            });
        }
    });
    let sh = shared.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut input = Input {
        errors: sh.errors,
        warnings: sh.warnings,
        processes: Vec::new(),
    };
    input.errors.sort_by(|a, b| a.path.cmp(&b.path));
    let per_pid: BTreeMap<(u64, u64), PidAcc> = sh.per_pid.into_iter().collect();
    for ((pid, _start), mut acc) in per_pid {
        acc.dumps.sort_by_key(|(p, d)| (d.header.seq, p.clone()));
        let mut pd = ProcessDumps {
            pid,
            stacks: acc.stacks,
            modules: acc.modules,
            ..Default::default()
        };
        let mut last_seq = None;
        for (path, d) in acc.dumps {
            if last_seq == Some(d.header.seq) {
                input.warnings.push(format!(
                    "{}: duplicate seq {} for pid {pid}; ignored",
                    path.display(),
                    d.header.seq
                ));
                continue;
            }
            if let Some(prev) = last_seq {
                if prev.checked_add(1) != Some(d.header.seq) {
                    input.warnings.push(format!(
                        "pid {pid}: dumps {}..{} are missing (a gap in seq; older dumps may \
                         have been rotated out by OFFHEAP_KEEP)",
                        prev.saturating_add(1),
                        d.header.seq.saturating_sub(1)
                    ));
                }
            }
            last_seq = Some(d.header.seq);
            pd.paths.push(path);
            pd.dumps.push(d);
        }
        // A restarted process reuses nothing, but time must not go backwards within one pid
        // (pid reuse across runs would do exactly that).
        if pd
            .dumps
            .windows(2)
            .any(|w| w[1].header.uptime_ms < w[0].header.uptime_ms)
        {
            input.warnings.push(format!(
                "pid {pid}: uptime goes backwards between dumps (pid reused by another run?); \
                 the series may mix two processes"
            ));
        }
        input.processes.push(pd);
    }
    input
}

fn strip_detail(d: &mut Dump) {
    for o in &mut d.outstanding {
        o.by_generation = Vec::new();
        o.by_epoch = Vec::new();
        o.age_hist = Vec::new();
    }
    d.untracked.ranges = Vec::new();
}

#[cfg(test)]
mod tests;
