//! Renderers: turn a [`ProcessModel`] into text, JSON, pprof, a flamegraph or a chart.
//!
//! Renderers only present; every number they show was computed in `model`/`verdict`, so the
//! formats cannot disagree with each other.

pub mod chart;
pub mod flamegraph;
pub mod json;
pub mod pprof;
pub mod text;

use crate::model::ProcessModel;
use crate::read::ReadError;

/// One process seen in the input (the report covers one of them).
#[derive(Debug, Clone)]
pub struct ProcSummary {
    pub pid: u64,
    pub exe: String,
    pub dumps: usize,
}

/// Result of evaluating a `--fail-on` policy.
#[derive(Debug, Clone)]
pub struct FailResult {
    pub policy: String,
    pub reasons: Vec<String>,
}

/// Everything a renderer may show.
pub struct Context<'a> {
    pub model: &'a ProcessModel,
    pub processes: &'a [ProcSummary],
    pub warnings: &'a [String],
    pub errors: &'a [ReadError],
    pub fail: Option<FailResult>,
    pub colour: bool,
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(b: f64) -> String {
    let a = b.abs();
    let (v, u) = if a >= 1024.0 * 1024.0 * 1024.0 {
        (b / (1024.0 * 1024.0 * 1024.0), "GiB")
    } else if a >= 1024.0 * 1024.0 {
        (b / (1024.0 * 1024.0), "MiB")
    } else if a >= 1024.0 {
        (b / 1024.0, "KiB")
    } else {
        return format!("{} B", b.round() as i64);
    };
    format!("{v:.1} {u}")
}

/// `+1.2 KiB/s`.
pub fn human_rate(r: f64) -> String {
    let s = human_bytes(r);
    if r > 0.0 {
        format!("+{s}/s")
    } else {
        format!("{s}/s")
    }
}

#[cfg(test)]
mod tests {
    //! Every renderer over the recorded leakyservice series (testdata): well-formed output
    //! that shows the leak.
    use super::*;
    use crate::symbolize::Symbolizer;

    fn with_ctx(f: impl FnOnce(&Context, &mut Symbolizer)) {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/leakyservice");
        let files = crate::read::discover(&[dir]).unwrap();
        let input = crate::read::load(&files, &|_, _| {});
        let pd = &input.processes[0];
        let mut sym = Symbolizer::new(&pd.modules);
        let mut w = Vec::new();
        let m = crate::model::build(pd, &mut sym, &Default::default(), &mut w);
        let ctx = Context {
            model: &m,
            processes: &[],
            warnings: &w,
            errors: &[],
            fail: None,
            colour: false,
        };
        f(&ctx, &mut sym);
    }

    #[test]
    fn svgs_are_well_formed_and_show_the_leak() {
        with_ctx(|ctx, _| {
            let mut fg = Vec::new();
            flamegraph::render(ctx, &mut fg).unwrap();
            let fg = String::from_utf8(fg).unwrap();
            // inferno writes a DOCTYPE, which roxmltree only accepts when asked to.
            let opt = roxmltree::ParsingOptions {
                allow_dtd: true,
                ..Default::default()
            };
            roxmltree::Document::parse_with_options(&fg, opt).expect("flamegraph SVG parses");
            assert!(fg.contains("[malloc]") && fg.contains("[mmap]"));
            // The leak's stack (1,402,000 bytes) is the largest malloc tower.
            assert!(fg.contains("1,402,000 bytes"), "leak stack missing");

            let mut ch = Vec::new();
            chart::render(ctx, &mut ch).unwrap();
            let ch = String::from_utf8(ch).unwrap();
            roxmltree::Document::parse(&ch).expect("chart SVG parses");
            for label in [
                "RSS",
                "tracked (malloc + mmap)",
                "untracked mappings",
                "leak ",
            ] {
                assert!(ch.contains(label), "chart lacks {label:?}");
            }
        });
    }

    #[test]
    fn json_and_text_carry_the_contract_fields() {
        with_ctx(|ctx, _| {
            let mut out = Vec::new();
            json::render(ctx, &mut out).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["schema"], "offheap-report/1");
            assert_eq!(v["process"]["pid"], 13315);
            assert_eq!(v["totals"]["malloc"]["count"], 1806);
            let top = &v["stacks"][0];
            assert_eq!(top["verdict"], "leak");
            for k in [
                "kind",
                "origin",
                "bytes",
                "count",
                "growth_bytes_per_sec",
                "first_seen",
                "confidence",
                "frames",
            ] {
                assert!(!top[k].is_null(), "stacks[0].{k} missing");
            }
            assert!(v["untracked"]["growth_bytes_per_sec"].as_f64().unwrap() > 50_000.0);
            let mut t = Vec::new();
            text::render(ctx, &mut t).unwrap();
            let t = String::from_utf8(t).unwrap();
            assert!(t.starts_with("offheap report: pid 13315"));
            assert!(t.contains("Suspects") && t.contains("leak"));
            assert!(!t.contains('\x1b'), "no colour when not a terminal");
        });
    }

    #[test]
    fn pprof_decodes_with_go_heap_sample_types() {
        use prost::Message;
        use std::io::Read;
        with_ctx(|ctx, sym| {
            let gz = pprof::encode(&pprof::build(ctx.model, sym, 1)).unwrap();
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut raw)
                .unwrap();
            let p = pprof::Profile::decode(&raw[..]).unwrap();
            let s = |i: i64| p.string_table[i as usize].as_str();
            assert_eq!(s(0), "");
            let types: Vec<(&str, &str)> = p
                .sample_type
                .iter()
                .map(|v| (s(v.r#type), s(v.unit)))
                .collect();
            assert_eq!(
                types,
                [
                    ("alloc_objects", "count"),
                    ("alloc_space", "bytes"),
                    ("inuse_objects", "count"),
                    ("inuse_space", "bytes")
                ]
            );
            assert_eq!(s(p.default_sample_type), "inuse_space");
            assert!(p.location.iter().all(|l| l.mapping_id != 0));
            let main = &p.mapping[0];
            assert_eq!(s(main.build_id), "16eb7eb93a3431a0b7c8791a84e8e5c69d8f62f5");
            assert!(p.sample.iter().any(|x| x.value[3] == 1_402_000));
        });
    }
}
