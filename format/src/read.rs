//! Reading dumps and stacks files from anywhere: decompression with a size cap, the
//! element budget of [`crate::bounded`], identity and version checks, and the semantic
//! checks serde cannot express (column lengths, ranges). Every error is one sentence saying
//! what is wrong, without the file name, which the caller adds.

use crate::bounded;
use crate::schema::{Dump, StacksMember};
use crate::{FORMAT, STACKS_FORMAT, VERSION};
use flate2::bufread::GzDecoder;
use serde::Deserialize;
use std::io::{self, BufRead, Read};

/// Decompressed bytes one document may have: far above any real dump, far below what would
/// keep a reader busy for hours on a crafted file.
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 30;

/// Decompressed bytes buffered between the inflater and the JSON parser.
const DECODED_BUFFER: usize = 64 << 10;

/// Whether `head` starts like a gzip stream.
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

/// Decompressed documents up to this size are parsed from memory (about three times faster
/// than from a stream, which serde_json reads a byte at a time); larger ones as a stream, so
/// memory never follows a huge file.
pub const IN_MEMORY_DOCUMENT_BYTES: u64 = 64 << 20;

/// Parses one dump, gzip-compressed (as the library writes it) or plain JSON (as `offheap
/// dump cat` prints it). `open` gives the file from its start; it is called again only for a
/// document too large to hold in memory and to explain a failure (foreign file, newer
/// version), so the good path reads the file once.
pub fn dump<R: BufRead>(open: impl Fn() -> io::Result<R>) -> Result<Dump, String> {
    let text = with_document(&open, |r| {
        let mut v = Vec::new();
        r.take(IN_MEMORY_DOCUMENT_BYTES + 1)
            .read_to_end(&mut v)
            .map(|_| v)
    })?;
    let parsed = match text {
        Ok(v) if v.len() as u64 <= IN_MEMORY_DOCUMENT_BYTES => {
            bounded::reset_budget();
            serde_json::from_slice::<Dump>(&v)
        }
        // Too large, or the stream failed (the streaming parse then names the failure).
        _ => with_document(&open, |r| {
            bounded::reset_budget();
            serde_json::from_reader::<_, Dump>(r)
        })?,
    };
    match parsed {
        Ok(d) => validate_dump(d),
        Err(strict) => Err(explain(&open, &strict, FORMAT)),
    }
}

/// Runs `parse` over the decompressed text of the file `open` gives.
fn with_document<R: BufRead, T>(
    open: &impl Fn() -> io::Result<R>,
    parse: impl FnOnce(&mut dyn Read) -> T,
) -> Result<T, String> {
    let mut r = open().map_err(|e| format!("cannot read: {e}"))?;
    let head = r.fill_buf().map_err(|e| format!("cannot read: {e}"))?;
    if head.is_empty() {
        return Err("empty file".into());
    }
    if !is_gzip(head) && !looks_like_json(head) {
        let first: Vec<String> = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(format!(
            "neither gzip nor JSON (it begins with the bytes {})",
            first.join(" ")
        ));
    }
    if is_gzip(head) {
        // serde_json reads a byte at a time: without a buffer every byte would be a call into
        // the inflater (measured: 80 % of the time of reading a long series).
        let mut d = io::BufReader::with_capacity(
            DECODED_BUFFER,
            GzDecoder::new(r).take(MAX_DOCUMENT_BYTES),
        );
        Ok(parse(&mut d))
    } else {
        let mut t = r.take(MAX_DOCUMENT_BYTES);
        Ok(parse(&mut t))
    }
}

/// Whether text that is not gzip may be a JSON document: its first byte that is not
/// whitespace opens an object or an array (a dump, a stacks file, or foreign JSON we name).
fn looks_like_json(head: &[u8]) -> bool {
    head.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|b| matches!(b, b'{' | b'['))
}

/// A JSON error that is really a read error of the (gzip) stream underneath.
fn stream_error(e: &serde_json::Error) -> Option<String> {
    let io = e.io_error_kind()?;
    Some(match io {
        io::ErrorKind::UnexpectedEof => "truncated gzip stream".to_string(),
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
            format!("corrupt gzip stream ({e})")
        }
        _ => format!("cannot read: {e}"),
    })
}

/// Just enough of a document to tell a foreign or future file from a corrupt one.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    format: Option<serde_json::Value>,
    #[serde(default)]
    version: Option<serde_json::Value>,
}

fn explain<R: BufRead>(
    open: &impl Fn() -> io::Result<R>,
    strict: &serde_json::Error,
    format: &str,
) -> String {
    if let Some(e) = stream_error(strict) {
        return e;
    }
    // Valid JSON whose top level is not an object is someone else's file.
    let first = with_document(open, |r| {
        let mut byte = [0u8; 1];
        loop {
            match r.read(&mut byte) {
                Ok(1) if byte[0].is_ascii_whitespace() => continue,
                Ok(1) => return Some(byte[0]),
                _ => return None,
            }
        }
    });
    if let Ok(Some(b)) = first {
        if b != b'{' {
            let valid = with_document(open, |r| {
                serde_json::from_reader::<_, serde::de::IgnoredAny>(r).is_ok()
            });
            if valid == Ok(true) {
                return "foreign JSON: the top level is not an object".into();
            }
            return format!("not a dump: {}", describe_json_error(strict));
        }
    }
    if strict.classify() != serde_json::error::Category::Data {
        return describe_json_error(strict);
    }
    // Valid JSON of the wrong shape: a foreign file, a newer version, or a corrupt dump.
    let probe = with_document(open, |r| {
        bounded::reset_budget();
        serde_json::from_reader::<_, Probe>(r)
    });
    let probe = match probe {
        Ok(Ok(p)) => p,
        Ok(Err(e)) if e.classify() == serde_json::error::Category::Data => {
            return "foreign JSON: the top level is not an object".into()
        }
        Ok(Err(e)) => return describe_json_error(&e),
        Err(e) => return e,
    };
    let found = match probe.format.as_ref() {
        Some(v) => v.as_str().unwrap_or("(not a string)"),
        None => return format!("foreign JSON: no \"format\": \"{format}\" field"),
    };
    if let Err(e) = check_identity(
        found,
        probe.version.as_ref().and_then(|v| v.as_u64()),
        format,
    ) {
        return e;
    }
    format!("corrupt {}: {}", what(format), clean(strict))
}

fn what(format: &str) -> &'static str {
    if format == STACKS_FORMAT {
        "stacks file"
    } else {
        "dump"
    }
}

/// The `format` and `version` fields: ours, and a version we read.
pub fn check_identity(found: &str, version: Option<u64>, expected: &str) -> Result<(), String> {
    if found != expected {
        return Err(format!(
            "foreign JSON: \"format\" is {found:?}, expected \"{expected}\""
        ));
    }
    match version {
        Some(VERSION) => Ok(()),
        Some(1) => Err(format!(
            "{} version 1, written by an older liboffheap: this reporter reads version \
             {VERSION}; run the program again with the current library",
            what(expected)
        )),
        Some(v) => Err(format!(
            "unknown {} version {v} (this reporter reads version {VERSION}); upgrade offheap",
            what(expected)
        )),
        None => Err(format!(
            "corrupt {}: \"version\" is missing or not an integer",
            what(expected)
        )),
    }
}

fn clean(e: &serde_json::Error) -> String {
    let s = e.to_string();
    if s.contains("recursion limit exceeded") {
        format!("nesting too deep ({s})")
    } else {
        s
    }
}

fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => format!("truncated JSON ({e})"),
        Category::Syntax => format!("corrupt JSON ({})", clean(e)),
        Category::Data => format!("foreign JSON ({})", clean(e)),
        Category::Io => stream_error(e).unwrap_or_else(|| format!("read error ({e})")),
    }
}

/// Checks serde cannot express: identity, equal column lengths, sane ranges.
fn validate_dump(d: Dump) -> Result<Dump, String> {
    check_identity(&d.format, Some(d.version), FORMAT)?;
    let o = &d.outstanding;
    let n = o.len();
    let columns: [(&str, Option<usize>); 11] = [
        ("kind", Some(o.kind.len())),
        ("via", (!o.via.is_empty()).then_some(o.via.len())),
        ("count", Some(o.count.len())),
        ("bytes", Some(o.bytes.len())),
        ("est_count", o.est_count.as_ref().map(|c| c.len())),
        ("est_bytes", o.est_bytes.as_ref().map(|c| c.len())),
        ("oldest_ms", Some(o.oldest_ms.len())),
        ("newest_ms", Some(o.newest_ms.len())),
        ("age_hist", Some(o.age_hist.len())),
        ("by_generation", Some(o.by_generation.len())),
        ("resident", o.resident.as_ref().map(|c| c.len())),
    ];
    for (name, len) in columns {
        if let Some(len) = len {
            if len != n {
                return Err(format!(
                    "corrupt dump: outstanding.{name} has {len} entries for {n} rows"
                ));
            }
        }
    }
    if o.by_epoch.len() != n {
        return Err(format!(
            "corrupt dump: outstanding.by_epoch has {} entries for {n} rows",
            o.by_epoch.len()
        ));
    }
    let c = &d.cumulative;
    let m = c.len();
    for (name, len) in [
        ("allocs", c.allocs.len()),
        ("frees", c.frees.len()),
        ("alloc_bytes", c.alloc_bytes.len()),
        ("free_bytes", c.free_bytes.len()),
    ] {
        if len != m {
            return Err(format!(
                "corrupt dump: cumulative.{name} has {len} entries for {m} rows"
            ));
        }
    }
    let t = &d.threads.by_stack;
    let k = t.len();
    for (name, len) in [
        ("live", t.live.len()),
        ("created", t.created.len()),
        ("oldest_ms", t.oldest_ms.len()),
    ] {
        if len != k {
            return Err(format!(
                "corrupt dump: threads.by_stack.{name} has {len} entries for {k} rows"
            ));
        }
    }
    for m in d.modules.iter() {
        check_module_ranges(m)?;
    }
    Ok(d)
}

fn check_module_ranges(m: &crate::schema::Module) -> Result<(), String> {
    for &(s, e) in m.ranges.iter() {
        if e < s {
            return Err(format!(
                "corrupt: module {} has a range ending before it starts",
                m.path
            ));
        }
    }
    Ok(())
}

/// What a stacks file held.
#[derive(Debug, Default)]
pub struct StacksFile {
    pub members: Vec<StacksMember>,
    /// Why reading stopped before the end of the file (a member cut short by a crash while
    /// it was being appended, or a corrupt one); later members, if any, were not read.
    pub stopped: Option<String>,
}

/// Reads a stacks file: its gzip members one after another. A member that cannot be read
/// ends the reading (with the reason in `stopped`): the library appends a member before the
/// dump that refers to it is renamed into place, so no complete dump needs a member that was
/// cut short, and a reader that finds a stack missing says so per dump.
pub fn stacks_file<R: BufRead>(mut r: R) -> StacksFile {
    let mut out = StacksFile::default();
    loop {
        match r.fill_buf() {
            Ok([]) => return out,
            Ok(_) => {}
            Err(e) => {
                out.stopped = Some(format!("cannot read: {e}"));
                return out;
            }
        }
        let i = out.members.len();
        let mut d = GzDecoder::new(r);
        bounded::reset_budget();
        // Buffered like a dump; the buffer holds this member's bytes only (the decoder ends
        // at the member's end), so the next member starts where this one's trailer ends.
        let member = serde_json::from_reader::<_, StacksMember>(io::BufReader::with_capacity(
            DECODED_BUFFER,
            Read::by_ref(&mut d).take(MAX_DOCUMENT_BYTES),
        ))
        .map_err(|e| stream_error(&e).unwrap_or_else(|| describe_json_error(&e)));
        // Finish the member (its trailer holds the CRC) before the next one.
        let drained = io::copy(&mut d, &mut io::sink());
        match (member, drained) {
            (Ok(m), Ok(_)) => {
                if let Err(e) = check_identity(&m.format, Some(m.version), STACKS_FORMAT)
                    .and_then(|_| m.modules.iter().try_for_each(check_module_ranges))
                {
                    out.stopped = Some(format!("member {i}: {e}"));
                    return out;
                }
                out.members.push(m);
            }
            (Err(e), _) => {
                out.stopped = Some(format!("member {i}: {e}"));
                return out;
            }
            (Ok(_), Err(e)) => {
                out.stopped = Some(format!("member {i}: corrupt gzip stream ({e})"));
                return out;
            }
        }
        r = d.into_inner();
    }
}
