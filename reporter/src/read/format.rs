//! Serde mirror of the dump format, version 1 (docs/dump-format.md is the authority).
//!
//! Fields the reporter needs are required, so a dump missing them is reported as corrupt rather
//! than silently producing zeros; fields that only add detail default, so a library that adds a
//! field (or omits an optional one such as `est_bytes`) does not break old reporters.

// This is a mirror of the whole format: fields the reporter does not read yet are kept so the
// struct documents the format and a future reader needs no second definition.
#![allow(dead_code)]

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;

/// The only `format` value we accept; anything else is a foreign JSON file.
pub const FORMAT: &str = "offheap-dump";
/// The dump versions this reporter understands.
pub const SUPPORTED_VERSION: u64 = 1;
/// A stack deeper than this is not something the library writes (its cap is configurable, but
/// far below); refusing it keeps a hostile file from costing 8 bytes per 2 bytes of JSON.
pub const MAX_FRAMES: usize = 4_096;
/// Upper bound for the big top-level arrays (stacks, outstanding, cumulative, modules): far
/// above what a bounded stack store produces, far below what exhausts memory.
pub const MAX_ENTRIES: usize = 4_000_000;
/// Upper bound for all array elements of one dump together: each costs at least 8 bytes in
/// memory but can take 2 in JSON, so per-array caps alone would still let a 1 GiB file
/// expand to several GiB.
pub const MAX_ELEMENTS_PER_DUMP: usize = 64_000_000;

thread_local! {
    static BUDGET: std::cell::Cell<usize> = const { std::cell::Cell::new(MAX_ELEMENTS_PER_DUMP) };
}

/// Resets the element budget before parsing one dump (parsing happens on one thread).
pub fn reset_budget() {
    BUDGET.with(|b| b.set(MAX_ELEMENTS_PER_DUMP));
}

/// Deserializes a sequence but fails as soon as it holds more than `N` elements, so an absurd
/// array is rejected with a message instead of exhausting memory first.
fn bounded<'de, T, const N: usize, D>(de: D) -> Result<Vec<T>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    struct V<T, const N: usize>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an array of at most {N} elements")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            // Never trust a size hint for preallocation beyond a small amount.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(x) = seq.next_element()? {
                if out.len() >= N {
                    return Err(serde::de::Error::custom(format!(
                        "array longer than {N} elements (absurd size)"
                    )));
                }
                let left = BUDGET.with(|b| {
                    let v = b.get().saturating_sub(1);
                    b.set(v);
                    v
                });
                if left == 0 {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_ELEMENTS_PER_DUMP} array elements in one dump (absurd size)"
                    )));
                }
                out.push(x);
            }
            Ok(out)
        }
    }
    de.deserialize_seq(V::<T, N>(PhantomData))
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dump {
    pub format: String,
    pub version: u64,
    pub header: Header,
    #[serde(default, deserialize_with = "bounded::<_, MAX_ENTRIES, _>")]
    pub modules: Vec<Module>,
    #[serde(default, deserialize_with = "bounded::<_, MAX_ENTRIES, _>")]
    pub stacks: Vec<Stack>,
    #[serde(default, deserialize_with = "bounded::<_, MAX_ENTRIES, _>")]
    pub outstanding: Vec<Outstanding>,
    #[serde(default, deserialize_with = "bounded::<_, MAX_ENTRIES, _>")]
    pub cumulative: Vec<Cumulative>,
    #[serde(default)]
    pub totals: Totals,
    #[serde(default)]
    pub process: ProcessMem,
    #[serde(default, rename = "self")]
    pub self_: SelfStats,
    #[serde(default)]
    pub untracked: Untracked,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub pid: u64,
    #[serde(default)]
    pub ppid: u64,
    #[serde(default)]
    pub exe: String,
    #[serde(default)]
    pub exe_build_id: Option<String>,
    #[serde(default, deserialize_with = "bounded::<_, 65_536, _>")]
    pub cmdline: Vec<String>,
    pub seq: u64,
    #[serde(default)]
    pub trigger: String,
    #[serde(default)]
    pub start_wall_ns: u64,
    #[serde(default)]
    pub wall_ns: u64,
    pub uptime_ms: u64,
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub config: Config,
    #[serde(default)]
    pub library_version: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub interval_s: f64,
    #[serde(default)]
    pub keep: u64,
    #[serde(default)]
    pub warmup_s: f64,
    #[serde(default)]
    pub max_frames: u64,
    #[serde(default)]
    pub sample_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Module {
    pub path: String,
    #[serde(default)]
    pub build_id: Option<String>,
    pub base: u64,
    #[serde(default, deserialize_with = "bounded::<_, 4_096, _>")]
    pub ranges: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Stack {
    pub id: u64,
    #[serde(deserialize_with = "bounded::<_, MAX_FRAMES, _>")]
    pub frames: Vec<u64>,
    #[serde(default)]
    pub end: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Outstanding {
    pub stack: u64,
    pub kind: String,
    pub count: u64,
    pub bytes: u64,
    #[serde(default)]
    pub est_count: Option<f64>,
    #[serde(default)]
    pub est_bytes: Option<f64>,
    #[serde(default)]
    pub oldest_ms: Option<u64>,
    #[serde(default)]
    pub newest_ms: Option<u64>,
    #[serde(default, deserialize_with = "bounded::<_, 64, _>")]
    pub age_hist: Vec<u64>,
    /// `[generation, count, bytes]` rows, ascending.
    #[serde(default, deserialize_with = "bounded::<_, 4_096, _>")]
    pub by_generation: Vec<(u64, u64, u64)>,
    #[serde(default, deserialize_with = "bounded::<_, 4_096, _>")]
    pub by_epoch: Vec<(u64, u64, u64)>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Cumulative {
    pub stack: u64,
    #[serde(default)]
    pub allocs: u64,
    #[serde(default)]
    pub frees: u64,
    #[serde(default)]
    pub alloc_bytes: u64,
    #[serde(default)]
    pub free_bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct BytesCount {
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub count: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Totals {
    #[serde(default)]
    pub malloc: BytesCount,
    #[serde(default)]
    pub mmap: BytesCount,
    #[serde(default)]
    pub mmap_file: BytesCount,
    #[serde(default)]
    pub mmap_reserved: BytesCount,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProcessMem {
    #[serde(default)]
    pub rss_bytes: u64,
    #[serde(default)]
    pub anon_bytes: u64,
    #[serde(default)]
    pub file_bytes: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SelfStats {
    #[serde(default)]
    pub footprint_bytes: u64,
    #[serde(default)]
    pub live_records: u64,
    #[serde(default)]
    pub stacks: u64,
    #[serde(default)]
    pub stack_store_bytes: u64,
    #[serde(default)]
    pub stacks_dropped: u64,
    #[serde(default)]
    pub unwind_broken: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Untracked {
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub bytes: u64,
    /// `[start, end, "perms"]`; only the largest 256 are listed by the library.
    #[serde(default, deserialize_with = "bounded::<_, 65_536, _>")]
    pub ranges: Vec<(u64, u64, String)>,
}

/// Just enough of a document to tell a foreign or future file from a corrupt one before the
/// full (strict) parse, so the error says which it is.
#[derive(Debug, Deserialize)]
pub struct Probe {
    #[serde(default)]
    pub format: Option<serde_json::Value>,
    #[serde(default)]
    pub version: Option<serde_json::Value>,
}
