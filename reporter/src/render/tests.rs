//! Every renderer over the recorded leakyservice series (testdata) and over whatever the
//! reader fuzzing produces: well-formed output that shows the leak, and never a panic.

use super::*;
use crate::model::ProcessModel;
use crate::symbolize::{BinarySearch, Symbolizer};

fn ctx<'a>(m: &'a ProcessModel, diag: &'a Diagnostics, view: View) -> Context<'a> {
    Context {
        model: m,
        processes: &[],
        diag,
        fail: None,
        colour: false,
        view,
        unmatched_suppressions: Vec::new(),
    }
}

/// Renders every format (used by the reader's fuzzing on whatever parsed).
pub fn render_all(m: &ProcessModel, diag: &Diagnostics) {
    for view in [
        View::default(),
        View {
            all: true,
            top: 3,
            include_runtime: true,
        },
    ] {
        let c = ctx(m, diag, view);
        let mut out = Vec::new();
        text::render(&c, &mut out).unwrap();
        json::render(&c, &mut out).unwrap();
        flamegraph::render(&c, &mut out).unwrap();
        chart::render(&c, &mut out).unwrap();
        let mut sym = Symbolizer::new(&[], &BinarySearch::default());
        pprof::render(&c, &mut sym, &mut out).unwrap();
    }
}

#[test]
fn svgs_are_well_formed_and_show_the_leak() {
    let m = crate::model::tests::recorded();
    let diag = Diagnostics::default();
    let c = ctx(&m, &diag, View::default());
    let mut fg = Vec::new();
    flamegraph::render(&c, &mut fg).unwrap();
    let fg = String::from_utf8(fg).unwrap();
    let doc = roxmltree::Document::parse(&fg).expect("flamegraph SVG parses");
    let titles: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    // regression: the leak's 1,303,000 bytes, in the red of a leak.
    assert!(
        titles
            .iter()
            .any(|t| t.contains("1,303,000 bytes") && t.ends_with("leak")),
        "{titles:?}"
    );
    assert!(titles.iter().any(|t| t.starts_with("[malloc]")));
    assert!(fg.contains("hsl(2,"), "leak colour missing");
    let mut ch = Vec::new();
    chart::render(&c, &mut ch).unwrap();
    let ch = String::from_utf8(ch).unwrap();
    roxmltree::Document::parse(&ch).expect("chart SVG parses");
    for label in [
        "RSS",
        "resident memory",
        "suspects, then the largest live callers",
        "leak ",
    ] {
        assert!(ch.contains(label), "chart lacks {label:?}");
    }
    assert!(
        !ch.contains("tracked (malloc + mmap)"),
        "no virtual size next to RSS"
    );
}

#[test]
fn json_and_text_carry_the_contract_fields() {
    let m = crate::model::tests::recorded();
    let diag = Diagnostics::default();
    let c = ctx(&m, &diag, View::default());
    let mut out = Vec::new();
    json::render(&c, &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["schema"], "offheap-report/2");
    // regression: pid and live block count of the recording.
    assert_eq!(v["process"]["pid"], 16190);
    assert_eq!(v["totals"]["malloc"]["count"], 1968);
    assert_eq!(v["suspects"]["total"], 2);
    let top = &v["suspects"]["groups"][0];
    assert_eq!(top["verdict"], "leak");
    for k in [
        "function",
        "kind",
        "bytes",
        "count",
        "growth_bytes_per_sec",
        "stacks",
        "stack_ids",
    ] {
        assert!(!top[k].is_null(), "suspects.groups[0].{k} missing");
    }
    // Without --all only the stacks beneath the suspects are listed; the rest are counted.
    let listed = v["stacks"].as_array().unwrap().len();
    assert_eq!(listed, 2);
    assert_eq!(
        v["stacks_omitted"].as_u64().unwrap() as usize,
        m.series.len() - 2
    );
    for k in [
        "kind",
        "origin",
        "bytes",
        "count",
        "growth_bytes_per_sec",
        "first_seen",
        "confidence",
        "frames",
        "reason",
    ] {
        assert!(!v["stacks"][0][k].is_null(), "stacks[0].{k} missing");
    }
    assert!(v["untracked"]["growth_bytes_per_sec"].as_f64().unwrap() > 50_000.0);
    let all = ctx(
        &m,
        &diag,
        View {
            all: true,
            ..View::default()
        },
    );
    let mut out = Vec::new();
    json::render(&all, &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["stacks"].as_array().unwrap().len(), m.series.len());
    assert_eq!(v["stacks_omitted"], 0);

    let mut t = Vec::new();
    text::render(&c, &mut t).unwrap();
    let t = String::from_utf8(t).unwrap();
    assert!(t.starts_with("offheap report: pid 16190"), "{t}");
    assert!(t.contains("Suspects") && t.contains("leak"));
    assert!(!t.contains('\x1b'), "no colour when not a terminal");
}

#[test]
fn pprof_decodes_with_go_heap_sample_types() {
    use prost::Message;
    use std::io::Read;
    let m = crate::model::tests::recorded();
    let mut sym = Symbolizer::new(&[], &BinarySearch::default());
    let gz = pprof::encode(&pprof::build(&m, &mut sym, false)).unwrap();
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
    // regression: the leak's bytes at the last dump.
    assert!(p.sample.iter().any(|x| x.value[3] == 1_303_000));
    // The Go runtime's arenas are left out by default and come back when asked.
    let total = |p: &pprof::Profile| p.sample.iter().map(|x| x.value[3]).sum::<i64>();
    let with_rt = pprof::build(&m, &mut sym, true);
    assert!(
        total(&with_rt) > total(&p) + 10_000_000,
        "{} vs {}",
        total(&with_rt),
        total(&p)
    );
}

#[test]
fn sections_the_library_fills_later_are_rendered_when_present() {
    use offheap_format::schema::{ExitInfo, GoInfo, ProbeState};
    let mut m = crate::model::tests::recorded();
    m.last.exit = Some(ExitInfo {
        path: "signal".into(),
        status: None,
        signal: Some(15),
    });
    *m.threads.live.last_mut().unwrap() = 9;
    m.exe_facts.go = Some(GoInfo {
        version: "go1.26.8".into(),
        main_module: "offheap.example/examples".into(),
        probes: vec![ProbeState {
            name: "syscall".into(),
            state: "off".into(),
            reason: Some("unknown version".into()),
        }]
        .into(),
    });
    let diag = Diagnostics::default();
    let c = ctx(&m, &diag, View::default());
    let mut t = Vec::new();
    text::render(&c, &mut t).unwrap();
    let t = String::from_utf8(t).unwrap();
    assert!(t.contains("ended: killed by signal 15"), "{t}");
    assert!(t.contains("threads: 9 live"), "{t}");
    assert!(
        t.contains("Go probes: syscall off (unknown version)"),
        "{t}"
    );
    let mut j = Vec::new();
    json::render(&c, &mut j).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
    assert!(v["ledger"].is_null(), "the recording has no ledger");
    assert_eq!(v["process"]["exit"]["signal"], 15);
    assert_eq!(v["process"]["go"]["probes"][0]["state"], "off");
}

/// The synthetic ledger series (model::tests::ledger_dump: the truths are stated there).
#[test]
fn the_ledger_opens_the_text_report_and_fills_json_and_chart() {
    let m = crate::model::tests::ledger_model();
    let diag = Diagnostics::default();
    let c = ctx(&m, &diag, View::default());
    let mut t = Vec::new();
    text::render(&c, &mut t).unwrap();
    let t = String::from_utf8(t).unwrap();
    let lines: Vec<&str> = t.lines().collect();
    // The ledger comes right after the process, dumps and RSS lines, one line per category.
    assert!(lines[3].contains("by where it is"), "{t}");
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.trim_start().starts_with(name))
            .copied()
    };
    assert!(
        row("malloc_retained").unwrap().contains("+1.0 MiB/s"),
        "{t}"
    );
    assert!(row("go_runtime").unwrap().contains("36.0 KiB"), "{t}");
    assert!(row("0 B in other").is_some(), "zero categories fold: {t}");
    assert!(t.contains("RSS growth explained: 91 %"), "{t}");
    assert!(t.contains("Not a leak: malloc_retained grows"), "{t}");
    // Stack 7's burst (2 MiB live at 3, 4 and 5 s, then freed) is named where the retained
    // memory is explained and listed under "Came and went" with its peak.
    assert!(
        t.contains("Came and went meanwhile, in blocks an arena may keep once freed: ")
            && t.contains("(2.0 MiB at its peak, at 3.0 s)"),
        "{t}"
    );
    let came: Vec<&str> = t
        .lines()
        .skip_while(|l| !l.starts_with("Came and went"))
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(came.len(), 3, "title, header, one row: {t}");
    let cols: Vec<&str> = came[2].split_whitespace().collect();
    assert_eq!(
        cols[..7],
        ["2.0", "MiB", "3.0", "s", "0", "B", "malloc"],
        "{t}"
    );
    for what in [
        "MALLOC_ARENA_MAX=2",
        "malloc_trim(0)",
        "MALLOC_TRIM_THRESHOLD_",
        "jemalloc",
    ] {
        assert!(t.contains(what), "{what}: {t}");
    }
    assert!(
        t.contains("Thread suspects") && t.contains("+1.0 thr/s"),
        "{t}"
    );
    // No line sets a requested (virtual) figure next to RSS.
    for l in t.lines().filter(|l| l.contains("RSS")) {
        assert!(!l.contains("requested") && !l.contains("mapped"), "{l}");
    }
    let mut j = Vec::new();
    json::render(&c, &mut j).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
    let l = &v["ledger"];
    assert_eq!(
        l["categories"]["malloc_retained"]["growth_bytes_per_sec"],
        1048576.0
    );
    assert_eq!(l["categories"]["go_runtime"]["bytes"], 36864);
    assert_eq!(l["causes"][0], "malloc_retained");
    assert!((l["explained_fraction"].as_f64().unwrap() - 0.91).abs() < 0.01);
    assert_eq!(l["arenas"][0]["retained_bytes"], 9 << 20);
    assert_eq!(l["threads"]["creators"][0]["verdict"], "leak");
    assert_eq!(v["series"]["ledger"]["malloc_retained"][9], 9 << 20);
    let came = &v["came_and_went"][0];
    assert_eq!(
        (came["peak_bytes"].as_u64(), came["bytes"].as_u64()),
        (Some(2 << 20), Some(0))
    );
    assert_eq!(came["peak_at_s"], 3.0);
    let mut ch = Vec::new();
    chart::render(&c, &mut ch).unwrap();
    let ch = String::from_utf8(ch).unwrap();
    roxmltree::Document::parse(&ch).expect("chart SVG parses");
    for label in [
        "RSS on top",
        "malloc_retained 9.0 MiB",
        "go_runtime",
        "explained 91 %",
    ] {
        assert!(ch.contains(label), "chart lacks {label:?}");
    }
}

/// One dump has no rates: none is printed next to RSS or threads, and growth is not explained.
#[test]
fn one_dump_prints_no_rates() {
    let m = crate::model::tests::ledger_model_one_dump();
    let diag = Diagnostics::default();
    let mut t = Vec::new();
    text::render(&ctx(&m, &diag, View::default()), &mut t).unwrap();
    let t = String::from_utf8(t).unwrap();
    let rss = t
        .lines()
        .find(|l| l.trim_start().starts_with("RSS "))
        .unwrap_or("");
    assert!(!rss.contains("/s"), "{t}");
    assert!(rss.contains("threads: 4 live, 33 created"), "{t}");
    assert!(
        t.contains("RSS growth explained: – (one dump: no growth to explain)"),
        "{t}"
    );
}

/// Dumps at irregular times (snapshots, marks) are described by their range, regular ones by
/// their interval.
#[test]
fn the_dump_spacing_is_a_range_when_irregular() {
    let mut m = crate::model::tests::ledger_model();
    let diag = Diagnostics::default();
    let text_of = |m: &ProcessModel| {
        let mut t = Vec::new();
        text::render(&ctx(m, &diag, View::default()), &mut t).unwrap();
        String::from_utf8(t).unwrap()
    };
    assert!(
        text_of(&m).contains("(seq 0..9, every 1.0 s)"),
        "{}",
        text_of(&m)
    );
    m.interval_range_s = (0.5, 5.0);
    assert!(
        text_of(&m).contains("(seq 0..9, 0.5–5.0 s apart)"),
        "{}",
        text_of(&m)
    );
}

/// With every thread on one shared arena (MALLOC_ARENA_MAX=1), fewer arenas cannot help: the
/// advice leaves MALLOC_ARENA_MAX out and keeps the remedies that still apply.
#[test]
fn one_shared_arena_is_not_told_to_use_fewer_arenas() {
    let mut m = crate::model::tests::ledger_model();
    let l = m.ledger.as_mut().unwrap();
    let r = l.retained.as_mut().unwrap();
    r.arenas = 1;
    r.thread_arenas = 0;
    r.thread_retained = 0;
    r.top.truncate(1);
    r.top[0].main = true;
    let diag = Diagnostics::default();
    let c = ctx(&m, &diag, View::default());
    let mut t = Vec::new();
    text::render(&c, &mut t).unwrap();
    let t = String::from_utf8(t).unwrap();
    assert!(t.contains("in 1 arena shared by every thread"), "{t}");
    assert!(!t.contains("MALLOC_ARENA_MAX"), "{t}");
    assert!(
        t.contains("malloc_trim(0)") && t.contains("MALLOC_TRIM_THRESHOLD_"),
        "{t}"
    );
}
