//! pprof output: a gzip-compressed `profile.proto` that `go tool pprof`, Pyroscope and Parca
//! open.
//!
//! The message structs below mirror google/pprof `proto/profile.proto` field for field (same
//! numbers and types), written by hand with `prost` derives so no protoc is needed. Sample
//! types are Go's heap profile's: alloc_objects/count, alloc_space/bytes, inuse_objects/count,
//! inuse_space/bytes, default inuse_space, so `-sample_index` and `-base` behave as with Go
//! heap profiles. Locations carry the raw return addresses and already-resolved lines
//! (inlined frames as several lines, innermost first, as the proto specifies); every location
//! has a mapping with the module's build id, because Pyroscope rejects locations without one.

use super::Context;
use crate::model::origin::Origin;
use crate::model::ProcessModel;
use crate::symbolize::{SymFrame, Symbolizer};
use flate2::write::GzEncoder;
use prost::Message;
use std::collections::HashMap;
use std::io::Write;

#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
    #[prost(int64, tag = "3")]
    pub column: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        let mut s = Strings::default();
        s.get(""); // string_table[0] must be "".
        s
    }
    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// Builds the profile for the model's last dump (the caller cuts the series to pick another
/// dump). PROT_NONE reservations are left out (address space, not memory), and so is the Go
/// runtime's own memory unless `include_runtime`: the profile shows what could be the user's
/// problem. Stacks stay whole: pprof groups by itself.
pub fn build(m: &ProcessModel, sym: &mut Symbolizer, include_runtime: bool) -> Profile {
    let mut b = Builder::new();
    let sample_type = [
        "alloc_objects",
        "alloc_space",
        "inuse_objects",
        "inuse_space",
    ]
    .iter()
    .map(|t| {
        b.value_type(
            t,
            if t.ends_with("objects") {
                "count"
            } else {
                "bytes"
            },
        )
    })
    .collect();
    let default_sample_type = b.st.get("inuse_space");
    b.add_mappings(sym);

    // Largest kind first, so each stack's cumulative counters land on its main sample.
    let mut series: Vec<_> = m
        .series
        .iter()
        .filter(|s| !s.is_reservation())
        .filter(|s| include_runtime || m.origin(s) != Origin::GoRuntime)
        .collect();
    series.sort_by(|a, b| b.last_bytes.total_cmp(&a.last_bytes));
    let mut samples = Vec::new();
    let mut cum_done: std::collections::HashSet<u64> = Default::default();
    for s in series {
        samples.extend(b.sample(m, sym, s, &mut cum_done));
    }
    b.map_orphans();
    let comment = b.comments(m, include_runtime);
    let period_type = Some(b.value_type("space", "bytes"));
    Profile {
        sample_type,
        sample: samples,
        mapping: b.mappings,
        location: b.locations,
        function: b.functions,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: m.last_point().map_or(0, |p| p.wall_ns) as i64,
        duration_nanos: (m.duration_s() * 1e9) as i64,
        period_type,
        period: m.sample_bytes.max(1) as i64,
        comment,
        default_sample_type,
        string_table: b.st.table,
    }
}

/// A return address's frames, innermost (inlined) first.
fn frames_at(m: &ProcessModel, sym: &mut Symbolizer, addr: u64) -> std::sync::Arc<Vec<SymFrame>> {
    match m.frames.get(&addr) {
        Some(f) => f.clone(),
        None => sym.symbolize(addr),
    }
}

/// The profile's tables as they fill, each entry made once and referred to by id.
struct Builder {
    st: Strings,
    mappings: Vec<Mapping>,
    /// (start, end, mapping id) of each module's executable ranges.
    map_ranges: Vec<(u64, u64, u64)>,
    functions: Vec<Function>,
    func_ids: HashMap<(String, String), u64>,
    locations: Vec<Location>,
    /// By (address, lines trimmed): see `location`.
    loc_ids: HashMap<(u64, usize), u64>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            st: Strings::new(),
            mappings: Vec::new(),
            map_ranges: Vec::new(),
            functions: Vec::new(),
            func_ids: HashMap::new(),
            locations: Vec::new(),
            loc_ids: HashMap::new(),
        }
    }

    fn value_type(&mut self, t: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.st.get(t),
            unit: self.st.get(unit),
        }
    }

    /// One mapping per executable range of each module.
    fn add_mappings(&mut self, sym: &mut Symbolizer) {
        let modules = sym.modules().to_vec();
        for (mi, md) in modules.iter().enumerate() {
            let segs = sym.segments(mi);
            let usable = sym.usable(mi);
            for &(start, end) in md.ranges.iter() {
                let vaddr = start.wrapping_sub(md.base);
                let file_offset = segs
                    .iter()
                    .find(|s| vaddr >= s.vaddr && vaddr < s.vaddr.saturating_add(s.memsz))
                    .map(|s| s.offset + (vaddr - s.vaddr))
                    .unwrap_or(vaddr);
                let id = self.mappings.len() as u64 + 1;
                self.mappings.push(Mapping {
                    id,
                    memory_start: start,
                    memory_limit: end,
                    file_offset,
                    filename: self.st.get(&md.path),
                    build_id: self.st.get(md.build_id.as_deref().unwrap_or("")),
                    has_functions: usable,
                    has_filenames: usable,
                    has_line_numbers: usable,
                    has_inline_frames: usable,
                });
                self.map_ranges.push((start, end, id));
            }
        }
    }

    fn function(&mut self, name: String, file: String) -> u64 {
        let key = (name, file);
        if let Some(&id) = self.func_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let n = self.st.get(&key.0);
        self.functions.push(Function {
            id,
            name: n,
            system_name: n,
            filename: self.st.get(&key.1),
            start_line: 0,
        });
        self.func_ids.insert(key, id);
        id
    }

    /// A stack's locations without its plumbing leaves (`ProcessModel::plumbing_leaves`):
    /// addresses whose frames are all plumbing are left out, and the first one kept drops its
    /// plumbing lines (`syscall.Mmap` inlined into the user's function).
    fn user_locations(
        &mut self,
        m: &ProcessModel,
        sym: &mut Symbolizer,
        info: &crate::model::StackInfo,
    ) -> Vec<u64> {
        let per_addr: Vec<_> = info.addrs.iter().map(|&a| frames_at(m, sym, a)).collect();
        let flat: Vec<SymFrame> = per_addr.iter().flat_map(|f| f.iter().cloned()).collect();
        let mut skip = m.plumbing_leaves(info.id, &flat);
        let mut ids = Vec::with_capacity(info.addrs.len());
        for (&addr, frames) in info.addrs.iter().zip(&per_addr) {
            if skip > 0 && skip >= frames.len() && !frames.is_empty() {
                skip -= frames.len();
                continue;
            }
            ids.push(self.location(m, sym, addr, skip));
            skip = 0;
        }
        ids
    }

    /// The location of a return address, with its (inlined) frames as lines, the innermost
    /// `trimmed` of them left out (a location of its own).
    fn location(
        &mut self,
        m: &ProcessModel,
        sym: &mut Symbolizer,
        addr: u64,
        trimmed: usize,
    ) -> u64 {
        if let Some(&id) = self.loc_ids.get(&(addr, trimmed)) {
            return id;
        }
        let frames = frames_at(m, sym, addr);
        let first_kept = trimmed.min(frames.len().saturating_sub(1));
        let line = frames[first_kept..]
            .iter()
            .map(|f| Line {
                function_id: self.function(f.display_name(), f.file.clone().unwrap_or_default()),
                line: f.line.unwrap_or(0) as i64,
                column: 0,
            })
            .collect();
        let mapping_id = self
            .map_ranges
            .iter()
            .find(|r| addr >= r.0 && addr < r.1)
            .map_or(0, |r| r.2);
        let id = self.locations.len() as u64 + 1;
        self.locations.push(Location {
            id,
            mapping_id,
            address: addr,
            line,
            is_folded: false,
        });
        self.loc_ids.insert((addr, trimmed), id);
        id
    }

    /// A series' sample: its stack's locations, alloc counts (once per stack), in-use values
    /// and labels. None when it has nothing to show.
    fn sample(
        &mut self,
        m: &ProcessModel,
        sym: &mut Symbolizer,
        s: &crate::model::Series,
        cum_done: &mut std::collections::HashSet<u64>,
    ) -> Option<Sample> {
        let info = m.stack(s.stack)?;
        let location_id = self.user_locations(m, sym, info);
        let (alloc_objects, alloc_space) = match &info.cumulative {
            Some(c) if cum_done.insert(s.stack) => {
                // With sampling, cumulative counters cover sampled allocations only; scale
                // them like the outstanding estimate so inuse and alloc stay comparable.
                let scale = match &s.last {
                    Some(o) if m.sampled() && o.bytes > 0 => {
                        o.est_bytes.unwrap_or(o.bytes as f64) / o.bytes as f64
                    }
                    _ => 1.0,
                };
                (
                    (c.allocs as f64 * scale) as i64,
                    (c.alloc_bytes as f64 * scale) as i64,
                )
            }
            _ => (0, 0),
        };
        let inuse_objects = s.last_count.round() as i64;
        let inuse_space = s.last_bytes.round() as i64;
        if inuse_space == 0 && alloc_space == 0 {
            return None;
        }
        let via = info.culprit.via.as_deref();
        let label = [
            ("kind", Some(s.kind.as_str())),
            ("origin", Some(info.origin.as_str())),
            ("verdict", Some(s.class.verdict.as_str())),
            ("via", via),
        ]
        .iter()
        .filter_map(|&(k, v)| Some((k, v?)))
        .map(|(k, v)| Label {
            key: self.st.get(k),
            str: self.st.get(v),
            num: 0,
            num_unit: 0,
        })
        .collect();
        Some(Sample {
            location_id,
            value: vec![alloc_objects, alloc_space, inuse_objects, inuse_space],
            label,
        })
    }

    /// Pyroscope rejects locations without a mapping: give addresses outside every module
    /// (broken stacks) a mapping of their own.
    fn map_orphans(&mut self) {
        let orphans = self.locations.iter().filter(|l| l.mapping_id == 0);
        let lo = orphans.clone().map(|l| l.address).min();
        let hi = orphans.map(|l| l.address).max();
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return;
        };
        let id = self.mappings.len() as u64 + 1;
        self.mappings.push(Mapping {
            id,
            memory_start: lo,
            memory_limit: hi.saturating_add(1),
            filename: self.st.get("[unknown]"),
            ..Default::default()
        });
        for l in self.locations.iter_mut().filter(|l| l.mapping_id == 0) {
            l.mapping_id = id;
        }
    }

    fn comments(&mut self, m: &ProcessModel, include_runtime: bool) -> Vec<i64> {
        let mut comment = vec![self.st.get(&format!(
            "offheap: pid {} {} seq {}",
            m.pid,
            m.exe,
            m.last_point().map_or(0, |p| p.seq)
        ))];
        if !include_runtime {
            comment.push(self.st.get(
                "the Go runtime's own memory is left out (offheap report --include go-runtime adds it)",
            ));
        }
        if m.sampled() {
            comment.push(self.st.get("values are estimates from sampled allocations"));
        }
        comment
    }
}

/// Encodes and gzips.
pub fn encode(p: &Profile) -> anyhow::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&p.encode_to_vec())?;
    Ok(gz.finish()?)
}

pub fn render(ctx: &Context, sym: &mut Symbolizer, out: &mut dyn Write) -> anyhow::Result<()> {
    let p = build(ctx.model, sym, ctx.view.include_runtime);
    out.write_all(&encode(&p)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trip() {
        let mut st = Strings::new();
        let p = Profile {
            sample_type: vec![ValueType {
                r#type: st.get("inuse_space"),
                unit: st.get("bytes"),
            }],
            sample: vec![Sample {
                location_id: vec![1],
                value: vec![4096],
                label: vec![],
            }],
            mapping: vec![Mapping {
                id: 1,
                memory_start: 0x400000,
                memory_limit: 0x500000,
                filename: st.get("/bin/x"),
                build_id: st.get("abcd"),
                has_functions: true,
                ..Default::default()
            }],
            location: vec![Location {
                id: 1,
                mapping_id: 1,
                address: 0x401234,
                line: vec![
                    Line {
                        function_id: 1,
                        line: 7,
                        column: 0,
                    },
                    Line {
                        function_id: 2,
                        line: 42,
                        column: 0,
                    },
                ],
                is_folded: false,
            }],
            function: vec![
                Function {
                    id: 1,
                    name: st.get("inner"),
                    ..Default::default()
                },
                Function {
                    id: 2,
                    name: st.get("main.handler"),
                    ..Default::default()
                },
            ],
            default_sample_type: 1,
            ..Default::default()
        };
        let p = Profile {
            string_table: st.table.clone(),
            ..p
        };
        let gz = encode(&p).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        let back = Profile::decode(&raw[..]).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.string_table[0], "");
        assert_eq!(back.location[0].line.len(), 2);
    }
}
