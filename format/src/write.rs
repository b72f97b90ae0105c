//! Writing dumps and stacks-file members as a stream, straight from the library's tables.
//!
//! A dump of a big service has hundreds of thousands of rows; building it as a document in
//! memory first cost the host gigabytes. Here every large table comes from a *source* the
//! caller implements over its own data (the library: its sorted snapshot and its stack
//! store): a column is one pass over the source, each value serialized as it is produced
//! into the (compressing) writer. Memory stays what the caller's source holds, whatever the
//! number of rows. Small sections are the schema's own types, serialized as they are.

use crate::schema::{Detail, Header, Ledger, Module, ProcessMem, SelfStats, Totals, Untracked};
use crate::{End, Kind, Via, FORMAT, STACKS_FORMAT, VERSION};
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use std::cell::Cell;
use std::io::{self, Write};

/// One row of `outstanding` as a source produces it.
pub struct OutstandingOut<'a> {
    pub stack: u64,
    pub kind: Kind,
    pub via: Via,
    pub count: u64,
    pub bytes: u64,
    pub est_count: f64,
    pub est_bytes: f64,
    pub oldest_ms: u64,
    pub newest_ms: u64,
    pub age_hist: [u64; 6],
    pub by_generation: &'a [Detail],
    pub by_epoch: &'a [Detail],
    pub resident: u64,
}

/// Which per-row lists a pass over `outstanding` needs: computing them costs a pass over
/// each group's records, so the writer asks only in the column that writes them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lists {
    /// `by_generation` and `by_epoch` may be left empty.
    None,
    Generations,
    Epochs,
}

/// The rows of `outstanding`, ascending by (stack, kind, via). `for_each` is called once per
/// column and must produce the same rows in the same order every time; `lists` says which of
/// the row's lists the column reads (the others may be empty).
pub trait OutstandingSource {
    /// Write `est_count`/`est_bytes` columns (sampling).
    fn sampled(&self) -> bool;
    /// Write the `resident` column.
    fn with_resident(&self) -> bool;
    fn for_each(&self, lists: Lists, f: &mut dyn FnMut(&OutstandingOut<'_>));
}

/// A row of `cumulative` or of the thread table: a stack id and its counters.
pub trait CountersSource<const N: usize> {
    /// Rows ascending by stack: (stack, counters).
    fn for_each(&self, f: &mut dyn FnMut(u64, [u64; N]));
}

/// Stacks in the order they are to be stored (see [`crate::stacks`]).
pub trait StackSource {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Row `i`: (id, end, frames innermost first).
    fn get(&self, i: usize) -> (u64, End, &[u64]);
}

/// Everything a dump holds, by reference.
pub struct DumpParts<'a> {
    pub header: &'a Header,
    pub outstanding: &'a dyn OutstandingSource,
    /// allocs, frees, alloc_bytes, free_bytes.
    pub cumulative: &'a dyn CountersSource<4>,
    pub threads_live: u64,
    pub threads_created: u64,
    /// live, created, oldest_ms.
    pub thread_creators: &'a dyn CountersSource<3>,
    pub totals: &'a Totals,
    pub process: &'a ProcessMem,
    pub ledger: Option<&'a Ledger>,
    pub self_: &'a SelfStats,
    pub untracked: &'a Untracked,
}

/// How hard a file is compressed: `Fast` for the stacks file (its first member carries every
/// stack of a large process, megabytes of JSON, while the host waits), `Small` for dumps (a
/// long series is mostly these; zlib's default level makes an unchanged 131k-row table about
/// a third of the fast size, for ~20 ms more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Fast,
    Small,
}

/// A small member's whole input is kept and written *stored* (deflate blocks of type 0, no
/// compression). The exit dump of a short-lived process is a few KiB, and a compressor
/// zeroes ~300 KiB of tables for each member: two of them were a third of the page faults of
/// a `$(/bin/true)` child. A stored member is a valid gzip member like any other.
pub const STORED_UP_TO: usize = 16 << 10;

/// A gzip member into `w`: stored if its input ends within [`STORED_UP_TO`] bytes, otherwise
/// compressed with a buffer on its *input* side (serde_json writes many tiny pieces, and
/// flate2 does per-write work — it clears its output buffer's spare room on every write —
/// which dominated writing a large dump when those pieces reached it one by one).
pub struct GzipOut<W: Write> {
    level: Level,
    state: GzipState<W>,
}

enum GzipState<W: Write> {
    /// The input so far, all of it within STORED_UP_TO.
    Small(W, Vec<u8>),
    Compressing(io::BufWriter<GzEncoder<W>>),
    /// Only while switching from one to the other.
    Switching,
}

/// A gzip member into `w`, compressed at `level` if it outgrows [`STORED_UP_TO`]; end it with
/// [`finish_gzip`].
pub fn gzip_buffered<W: Write>(w: W, level: Level) -> GzipOut<W> {
    GzipOut {
        level,
        state: GzipState::Small(w, Vec::new()),
    }
}

impl<W: Write> GzipOut<W> {
    /// From here on, compress: what was kept goes in first.
    fn compress(&mut self) -> io::Result<&mut io::BufWriter<GzEncoder<W>>> {
        match std::mem::replace(&mut self.state, GzipState::Switching) {
            GzipState::Small(w, kept) => {
                let compression = match self.level {
                    Level::Fast => Compression::fast(),
                    Level::Small => Compression::default(),
                };
                let mut out =
                    io::BufWriter::with_capacity(64 << 10, GzEncoder::new(w, compression));
                out.write_all(&kept)?;
                self.state = GzipState::Compressing(out);
            }
            other => self.state = other,
        }
        match &mut self.state {
            GzipState::Compressing(out) => Ok(out),
            _ => Err(io::Error::other(
                "gzip member left unfinished by an earlier error",
            )),
        }
    }
}

impl<W: Write> Write for GzipOut<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let GzipState::Small(_, kept) = &mut self.state {
            if kept.len() + data.len() <= STORED_UP_TO {
                kept.extend_from_slice(data);
                return Ok(data.len());
            }
        }
        self.compress()?.write(data)
    }

    /// Nothing to flush before the member ends: a member is only read whole.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Ends the gzip member (writing it whole if it was kept) and returns the writer underneath.
pub fn finish_gzip<W: Write>(g: GzipOut<W>) -> io::Result<W> {
    match g.state {
        GzipState::Small(mut w, kept) => {
            write_stored_member(&mut w, &kept)?;
            Ok(w)
        }
        GzipState::Compressing(b) => b.into_inner().map_err(|e| e.into_error())?.finish(),
        GzipState::Switching => Err(io::Error::other("gzip member left unfinished")),
    }
}

/// One gzip member (RFC 1952) holding `data` in stored deflate blocks (RFC 1951 §3.2.4):
///
/// ```text
///   1f 8b 08 00 | 00 00 00 00 | 00 ff          id, deflate, no flags, no mtime, xfl, OS unknown
///   then per block of at most 65,535 bytes:
///   BFINAL,BTYPE=00 (1 byte) | LEN (u16 LE) | NLEN = !LEN (u16 LE) | LEN bytes
///   crc32 of data (u32 LE) | data length mod 2^32 (u32 LE)
/// ```
pub(crate) fn write_stored_member<W: Write>(w: &mut W, data: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(data.len() + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut blocks = data.chunks(u16::MAX as usize).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]); // one final, empty block
    }
    while let Some(block) = blocks.next() {
        let last = u8::from(blocks.peek().is_none());
        let len = block.len() as u16;
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.write_all(&out)
}

/// Serializes one column of `outstanding`.
struct OutstandingColumn<'s, V, P: Fn(&OutstandingOut<'_>) -> V> {
    src: &'s dyn OutstandingSource,
    pick: P,
}

impl<V: Serialize, P: Fn(&OutstandingOut<'_>) -> V> Serialize for OutstandingColumn<'_, V, P> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        let mut failed = None;
        self.src.for_each(Lists::None, &mut |r| {
            if failed.is_none() {
                if let Err(e) = seq.serialize_element(&(self.pick)(r)) {
                    failed = Some(e);
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => seq.end(),
        }
    }
}

/// Differences from the previous id, as [`crate::schema::Ids`] reads them back.
struct Delta(Cell<u64>);

impl Delta {
    fn new() -> Self {
        Delta(Cell::new(0))
    }
    fn next(&self, id: u64) -> u64 {
        let d = id.wrapping_sub(self.0.get());
        self.0.set(id);
        d
    }
}

struct Outstanding<'a>(&'a dyn OutstandingSource);

impl Serialize for Outstanding<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let src = self.0;
        let mut m = s.serialize_map(None)?;
        let delta = Delta::new();
        m.serialize_entry(
            "stack",
            &OutstandingColumn {
                src,
                pick: |r: &OutstandingOut<'_>| delta.next(r.stack),
            },
        )?;
        m.serialize_entry(
            "kind",
            &OutstandingColumn {
                src,
                pick: |r: &OutstandingOut<'_>| r.kind,
            },
        )?;
        m.serialize_entry(
            "via",
            &OutstandingColumn {
                src,
                pick: |r: &OutstandingOut<'_>| r.via,
            },
        )?;
        m.serialize_entry(
            "count",
            &OutstandingColumn {
                src,
                pick: |r: &OutstandingOut<'_>| r.count,
            },
        )?;
        m.serialize_entry(
            "bytes",
            &OutstandingColumn {
                src,
                pick: |r: &OutstandingOut<'_>| r.bytes,
            },
        )?;
        if src.sampled() {
            m.serialize_entry(
                "est_count",
                &OutstandingColumn {
                    src,
                    pick: |r: &OutstandingOut<'_>| r.est_count,
                },
            )?;
            m.serialize_entry(
                "est_bytes",
                &OutstandingColumn {
                    src,
                    pick: |r: &OutstandingOut<'_>| r.est_bytes,
                },
            )?;
        }
        m.serialize_entry(
            "oldest_ms",
            &OutstandingColumn {
                src,
                pick: |r: &OutstandingOut<'_>| r.oldest_ms,
            },
        )?;
        m.serialize_entry(
            "newest_ms",
            &OutstandingColumn {
                src,
                pick: |r: &OutstandingOut<'_>| r.newest_ms,
            },
        )?;
        m.serialize_entry(
            "age_hist",
            &OutstandingColumn {
                src,
                pick: |r: &OutstandingOut<'_>| r.age_hist,
            },
        )?;
        m.serialize_entry("by_generation", &DetailColumn { src, epochs: false })?;
        m.serialize_entry("by_epoch", &DetailColumn { src, epochs: true })?;
        if src.with_resident() {
            m.serialize_entry(
                "resident",
                &OutstandingColumn {
                    src,
                    pick: |r: &OutstandingOut<'_>| r.resident,
                },
            )?;
        }
        m.end()
    }
}

/// The `by_generation` or `by_epoch` column: a list per row, borrowed from the row.
struct DetailColumn<'s> {
    src: &'s dyn OutstandingSource,
    epochs: bool,
}

impl Serialize for DetailColumn<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        let mut failed = None;
        let lists = if self.epochs {
            Lists::Epochs
        } else {
            Lists::Generations
        };
        self.src.for_each(lists, &mut |r| {
            if failed.is_none() {
                let list = if self.epochs {
                    r.by_epoch
                } else {
                    r.by_generation
                };
                if let Err(e) = seq.serialize_element(list) {
                    failed = Some(e);
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => seq.end(),
        }
    }
}

/// Serializes one column of a counters table.
struct CountersColumn<'s, const N: usize, V, P: Fn(u64, &[u64; N]) -> V> {
    src: &'s dyn CountersSource<N>,
    pick: P,
}

impl<const N: usize, V: Serialize, P: Fn(u64, &[u64; N]) -> V> Serialize
    for CountersColumn<'_, N, V, P>
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        let mut failed = None;
        self.src.for_each(&mut |stack, c| {
            if failed.is_none() {
                if let Err(e) = seq.serialize_element(&(self.pick)(stack, &c)) {
                    failed = Some(e);
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => seq.end(),
        }
    }
}

/// A counters table: a delta-encoded `stack` column, then one column per counter name.
struct Counters<'a, const N: usize> {
    src: &'a dyn CountersSource<N>,
    names: [&'static str; N],
}

impl<const N: usize> Serialize for Counters<'_, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let src = self.src;
        let mut m = s.serialize_map(None)?;
        let delta = Delta::new();
        m.serialize_entry(
            "stack",
            &CountersColumn {
                src,
                pick: |stack, _: &[u64; N]| delta.next(stack),
            },
        )?;
        for (i, name) in self.names.iter().enumerate() {
            m.serialize_entry(
                name,
                &CountersColumn {
                    src,
                    pick: move |_, c: &[u64; N]| c.get(i).copied().unwrap_or(0),
                },
            )?;
        }
        m.end()
    }
}

/// Column names of `cumulative`, in the order of a [`CountersSource<4>`]'s counters.
pub const CUMULATIVE_COLUMNS: [&str; 4] = ["allocs", "frees", "alloc_bytes", "free_bytes"];
/// Column names of `threads.by_stack`, in the order of a [`CountersSource<3>`]'s counters.
pub const THREAD_COLUMNS: [&str; 3] = ["live", "created", "oldest_ms"];

struct ThreadsOut<'a>(&'a DumpParts<'a>);

impl Serialize for ThreadsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("live", &p.threads_live)?;
        m.serialize_entry("created", &p.threads_created)?;
        m.serialize_entry(
            "by_stack",
            &Counters {
                src: p.thread_creators,
                names: THREAD_COLUMNS,
            },
        )?;
        m.end()
    }
}

/// Writes one dump document (uncompressed JSON) to `w`.
pub fn write_dump<W: Write>(w: W, p: &DumpParts<'_>) -> io::Result<()> {
    let mut ser = serde_json::Serializer::new(w);
    let mut m = ser.serialize_map(None).map_err(io::Error::other)?;
    let r: Result<(), serde_json::Error> = (|| {
        m.serialize_entry("format", FORMAT)?;
        m.serialize_entry("version", &VERSION)?;
        m.serialize_entry("header", p.header)?;
        m.serialize_entry("outstanding", &Outstanding(p.outstanding))?;
        m.serialize_entry(
            "cumulative",
            &Counters {
                src: p.cumulative,
                names: CUMULATIVE_COLUMNS,
            },
        )?;
        m.serialize_entry("threads", &ThreadsOut(p))?;
        m.serialize_entry("totals", p.totals)?;
        m.serialize_entry("process", p.process)?;
        if let Some(l) = p.ledger {
            m.serialize_entry("ledger", l)?;
        }
        m.serialize_entry("self", p.self_)?;
        m.serialize_entry("untracked", p.untracked)?;
        Ok(())
    })();
    r.map_err(io::Error::other)?;
    SerializeMap::end(m).map_err(io::Error::other)
}

/// Serializes a stack source as a [`crate::schema::StackTable`], one pass per column.
struct Stacks<'a>(&'a dyn StackSource);

impl Serialize for Stacks<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let src = self.0;
        let n = src.len();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &SeqOf(|| (0..n).map(|i| src.get(i).0)))?;
        m.serialize_entry("end", &SeqOf(|| (0..n).map(|i| src.get(i).1)))?;
        let keep = |i: usize| -> usize {
            match i.checked_sub(1) {
                Some(prev) => crate::stacks::common_outer(src.get(prev).2, src.get(i).2),
                None => 0,
            }
        };
        m.serialize_entry("keep", &SeqOf(|| (0..n).map(|i| keep(i) as u64)))?;
        m.serialize_entry(
            "frames",
            &SeqOf(|| {
                (0..n).map(|i| {
                    let f = src.get(i).2;
                    Frames(&f[..f.len() - keep(i)])
                })
            }),
        )?;
        m.end()
    }
}

struct Frames<'a>(&'a [u64]);

impl Serialize for Frames<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// A sequence produced afresh by a closure each time it is serialized.
struct SeqOf<F>(F);

impl<I, F> Serialize for SeqOf<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

/// Writes one stacks-file member (uncompressed JSON) to `w`.
pub fn write_stacks_member<W: Write>(
    w: W,
    seq: u64,
    modules: &[Module],
    stacks: &dyn StackSource,
) -> io::Result<()> {
    let mut ser = serde_json::Serializer::new(w);
    let mut m = ser.serialize_map(None).map_err(io::Error::other)?;
    let r: Result<(), serde_json::Error> = (|| {
        m.serialize_entry("format", STACKS_FORMAT)?;
        m.serialize_entry("version", &VERSION)?;
        m.serialize_entry("seq", &seq)?;
        m.serialize_entry("modules", modules)?;
        m.serialize_entry("stacks", &Stacks(stacks))?;
        Ok(())
    })();
    r.map_err(io::Error::other)?;
    SerializeMap::end(m).map_err(io::Error::other)
}
