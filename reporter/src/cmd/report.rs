//! `offheap report`: discover series → pick one → read and fold it → model → policy → render.

use crate::model::build::{self, BuildInputs};
use crate::model::fold::Accumulator;
use crate::model::groups;
use crate::model::{ExeFacts, ProcessModel};
use crate::read::{self, Cut, Diagnostics, SeriesFiles};
use crate::render::{self, Context, FailResult, ProcSummary, View};
use crate::symbolize::{buildinfo, BinarySearch, Symbolizer};
use crate::verdict::policy::{FailOn, Suppressions};
use crate::verdict::{Thresholds, Verdict};
use crate::{At, Format, Include, ReportArgs, EXIT_OK, EXIT_POLICY};
use anyhow::{bail, Context as _, Result};
use offheap_format::schema::GoInfo;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

pub fn run(args: &ReportArgs, inputs: &[PathBuf]) -> Result<u8> {
    check_args(args)?;
    let supp = match &args.suppressions {
        Some(p) => Suppressions::load(p)?,
        None => Suppressions::default(),
    };
    let mut diag = Diagnostics::default();
    let series = discover_series(inputs, &mut diag)?;
    let chosen = select(&series, args.pid)?;
    let processes = summaries(&series, chosen);
    let (m, mut sym) = load_model(&series[chosen], &load_options(args), &supp, &mut diag)?;
    let unmatched = unmatched_suppressions(&supp, &m);
    for p in &unmatched {
        diag.warn(format!(
            "suppression leak:{p} matched no function of any stack"
        ));
    }
    for (p, first) in &m.suppression.shadowed {
        diag.warn(format!(
            "suppression leak:{p} suppressed nothing: every stack it matches, leak:{first} \
             suppressed first (the pattern of the innermost matching frame wins)"
        ));
    }
    print_diagnostics(&diag);
    let fail = args.fail_on.map(|p| evaluate(&m, p, args.min_confidence));
    let tripped = fail.as_ref().is_some_and(|f| !f.reasons.is_empty());
    let ctx = Context {
        model: &m,
        processes: &processes,
        diag: &diag,
        fail,
        colour: wants_colour(args),
        view: view(args),
        unmatched_suppressions: unmatched,
    };
    render_report(args, &ctx, &mut sym)?;
    if let Some(f) = &ctx.fail {
        if args.format != Format::Text {
            // The text report prints the outcome itself; other formats keep stdout clean.
            print_fail_outcome(f);
        }
    }
    Ok(if tripped { EXIT_POLICY } else { EXIT_OK })
}

/// Refuses what cannot be honoured before any dump is read.
fn check_args(args: &ReportArgs) -> Result<()> {
    if args.format == Format::Pprof && args.output.is_none() {
        bail!("--format pprof writes a binary file: give it with -o FILE (e.g. -o heap.pb.gz)");
    }
    if let Some(c) = args.min_confidence {
        if !(0.0..=1.0).contains(&c) {
            bail!("--min-confidence takes a number from 0 to 1, got {c}");
        }
    }
    Ok(())
}

/// The dump series in the inputs; finding none is an error, with what made each input unreadable.
fn discover_series(inputs: &[PathBuf], diag: &mut Diagnostics) -> Result<Vec<SeriesFiles>> {
    let series = read::discover(inputs, diag).map_err(anyhow::Error::new)?;
    if series.is_empty() {
        for e in &diag.errors {
            eprintln!("offheap: error: {e}");
        }
        for w in &diag.warnings {
            eprintln!("offheap: warning: {w}");
        }
        bail!(
            "no dump files (offheap.<pid>.<seq>.json.gz) in {}",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(series)
}

/// How `--dump`/`--at`, `--binary` and `--min-dumps` ask for the series to be read.
fn load_options(args: &ReportArgs) -> LoadOptions<'_> {
    LoadOptions {
        cut: match (args.dump, args.at) {
            (Some(seq), _) => Cut::Seq(seq),
            (None, Some(At::First)) => Cut::First,
            _ => Cut::Last,
        },
        binary: &args.binary,
        min_dumps: args.min_dumps,
    }
}

/// Colour for a terminal on stdout, unless NO_COLOR is set.
fn wants_colour(args: &ReportArgs) -> bool {
    let to_tty = args.output.is_none() && std::io::stdout().is_terminal();
    to_tty && std::env::var_os("NO_COLOR").is_none()
}

/// What the tables list, from `--all`, `--top` and `--include`.
fn view(args: &ReportArgs) -> View {
    View {
        all: args.all,
        top: args.top,
        include_runtime: args.include.contains(&Include::GoRuntime),
    }
}

/// Writes the report in the format asked for, to `-o` or stdout.
fn render_report(args: &ReportArgs, ctx: &Context, sym: &mut Symbolizer) -> Result<()> {
    render_to(args.output.as_deref(), |out| match args.format {
        Format::Text => render::text::render(ctx, out),
        Format::Json => render::json::render(ctx, out),
        Format::Pprof => render::pprof::render(ctx, sym, out),
        Format::Flamegraph => render::flamegraph::render(ctx, out),
        Format::Chart => render::chart::render(ctx, out),
    })
}

/// The --fail-on outcome on stderr: what tripped it and what did not count.
fn print_fail_outcome(f: &FailResult) {
    for r in &f.reasons {
        eprintln!("offheap: --fail-on {} tripped: {r}", f.policy);
    }
    for r in &f.not_counted {
        eprintln!("offheap: --fail-on {}: not counted: {r}", f.policy);
    }
}

fn print_diagnostics(diag: &Diagnostics) {
    for e in &diag.errors {
        eprintln!("offheap: warning: {e}; skipped");
    }
    for w in &diag.warnings {
        eprintln!("offheap: warning: {w}");
    }
}

/// How a series is read into a model.
pub struct LoadOptions<'a> {
    pub cut: Cut,
    pub binary: &'a [PathBuf],
    pub min_dumps: Option<usize>,
}

/// Reads the chosen series and builds its model; the symbolizer is returned for renderers
/// that need module details (pprof mappings).
pub fn load_model(
    files: &SeriesFiles,
    opts: &LoadOptions,
    supp: &Suppressions,
    diag: &mut Diagnostics,
) -> Result<(ProcessModel, Symbolizer)> {
    let cut = opts.cut;
    let mut acc = Accumulator::new();
    let store = with_progress(files.dumps.len(), |progress| {
        read::read_series(files, cut, &mut acc, diag, progress)
    })
    .map_err(anyhow::Error::msg)?;
    let folded = acc.finish();
    if folded.points.is_empty() {
        print_diagnostics(diag);
        let n = files.dumps.len();
        bail!(
            "no dump could be read: {} of {} in {} {} skipped for the {} above",
            if n == 1 {
                "the one file".to_string()
            } else {
                format!("all {n} files")
            },
            files.stem,
            files.dir.display(),
            if n == 1 { "was" } else { "were" },
            if n == 1 { "reason" } else { "reasons" }
        );
    }
    if !folded.final_folded {
        diag.warn(
            "the series' final dump could not be read: ages and generations (survival) come \
             from no dump, so leak verdicts rest on the shape alone",
        );
    }
    let search = BinarySearch::new(opts.binary);
    let mut sym = Symbolizer::new(&store.modules, &search);
    let exe = folded
        .last_header
        .as_ref()
        .map(|h| h.exe.clone())
        .unwrap_or_default();
    let header_go = folded.last_header.as_ref().and_then(|h| h.go.clone());
    let exe_facts = exe_facts(header_go, &exe, &mut sym);
    let thresholds = Thresholds {
        min_dumps: opts
            .min_dumps
            .unwrap_or(Thresholds::default().min_dumps)
            .max(2),
        ..Thresholds::default()
    };
    let m = build::finish(
        folded,
        BuildInputs {
            store: &store,
            sym: &mut sym,
            suppressions: supp,
            thresholds,
            exe_facts,
        },
    );
    diag.warnings.append(&mut sym.warnings);
    Ok((m, sym))
}

fn with_progress<T>(files: usize, f: impl FnOnce(&dyn Fn(usize, usize)) -> T) -> T {
    if files >= 20 && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(files as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("reading dumps {bar:40} {pos}/{len} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let out = f(&|n, _| bar.set_position(n as u64));
        bar.finish_and_clear();
        out
    } else {
        f(&|_, _| {})
    }
}

/// The Go facts of the executable: the dump header's when the library wrote them, else read
/// from the executable's `.go.buildinfo` (the file found by the symbolizer, so `--binary`
/// applies); the dependency list always comes from the file.
pub fn exe_facts(header_go: Option<GoInfo>, exe: &str, sym: &mut Symbolizer) -> ExeFacts {
    let file = sym
        .module_by_path(exe)
        .or(if sym.modules().is_empty() {
            None
        } else {
            Some(0)
        })
        .and_then(|i| sym.file_of(i))
        .unwrap_or_else(|| PathBuf::from(exe));
    let read = buildinfo::read_file(&file);
    let deps = read
        .as_ref()
        .map(|b| b.deps.iter().map(|d| d.0.clone()).collect())
        .unwrap_or_default();
    match (header_go, read) {
        (Some(go), _) => ExeFacts {
            go: Some(go),
            deps,
            source: "dump header".into(),
        },
        (None, Ok(b)) => ExeFacts {
            go: Some(GoInfo {
                version: b.go_version,
                main_module: b.main_module,
                probes: Default::default(),
            }),
            deps,
            source: format!("{} (.go.buildinfo)", file.display()),
        },
        (None, Err(e)) => ExeFacts {
            go: None,
            deps,
            source: format!("{}: {e}", file.display()),
        },
    }
}

fn unmatched_suppressions(supp: &Suppressions, m: &ProcessModel) -> Vec<String> {
    supp.patterns
        .iter()
        .filter(|p| !m.suppression.used.iter().any(|u| &u.0 == *p))
        .filter(|p| !m.suppression.shadowed.iter().any(|s| &s.0 == *p))
        .cloned()
        .collect()
}

/// Renders straight into the destination (a large JSON report never sits in memory whole).
fn render_to(
    path: Option<&Path>,
    render: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> Result<()> {
    let res = match path {
        Some(p) => {
            let f = std::fs::File::create(p)
                .with_context(|| format!("cannot write {}", p.display()))?;
            let mut w = std::io::BufWriter::new(f);
            render(&mut w)
                .and_then(|_| w.flush().map_err(Into::into))
                .with_context(|| format!("cannot write {}", p.display()))?;
            eprintln!("offheap: wrote {}", p.display());
            Ok(())
        }
        None => {
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            render(&mut w).and_then(|_| w.flush().map_err(Into::into))
        }
    };
    match res {
        // A closed pipe (`| head`) is not an error worth a message.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                || e.chain().any(|c| c.to_string().contains("Broken pipe")) =>
        {
            Ok(())
        }
        other => other,
    }
}

pub fn write_out(path: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match path {
        Some(p) => {
            std::fs::write(p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
            eprintln!("offheap: wrote {}", p.display());
        }
        None => {
            let mut so = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a message.
            if let Err(e) = so.write_all(bytes).and_then(|_| so.flush()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}

/// `--pid`, or the series with the most dumps (ties: the highest pid, i.e. likely newest).
/// Loose files (no dump name) get their pid from their header.
fn select(series: &[SeriesFiles], pid: Option<u64>) -> Result<usize> {
    let pid_of = |s: &SeriesFiles| {
        s.pid.or_else(|| {
            s.dumps
                .first()
                .and_then(|d| read::peek_header(&d.1).ok())
                .map(|h| h.pid)
        })
    };
    let pick = match pid {
        Some(want) => series
            .iter()
            .enumerate()
            .filter(|(_, s)| pid_of(s) == Some(want))
            .max_by_key(|(_, s)| s.dumps.len())
            .map(|(i, _)| i),
        None => series
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| (s.dumps.len(), s.pid.unwrap_or(0)))
            .map(|(i, _)| i),
    };
    match pick {
        Some(i) => Ok(i),
        None => {
            let found: Vec<String> = series
                .iter()
                .map(|s| format!("{} ({} dumps)", s.stem, s.dumps.len()))
                .collect();
            bail!(
                "no dumps of pid {} in the input; series found: {}",
                pid.unwrap_or(0),
                found.join(", ")
            )
        }
    }
}

/// Every series of the input; the others' executables come from their first dump's header.
fn summaries(series: &[SeriesFiles], chosen: usize) -> Vec<ProcSummary> {
    series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let header = s.dumps.first().and_then(|d| read::peek_header(&d.1).ok());
            ProcSummary {
                pid: s.pid.or(header.as_ref().map(|h| h.pid)).unwrap_or(0),
                stem: s.stem.clone(),
                exe: header.map(|h| h.exe).unwrap_or_default(),
                dumps: s.dumps.len(),
                selected: i == chosen,
            }
        })
        .collect()
}

/// Applies a `--fail-on` policy to the suspect groups. `insufficient` growth counts only when
/// `--min-confidence` was given and it is that confident.
pub fn evaluate(m: &ProcessModel, policy: FailOn, min_confidence: Option<f64>) -> FailResult {
    let mut reasons = Vec::new();
    let mut not_counted = Vec::new();
    for g in groups::suspects(m) {
        let who = format!("{} ({})", g.name, g.kind.as_str());
        let counted_as_leak = match g.verdict {
            Verdict::Leak => true,
            Verdict::Insufficient => min_confidence.is_some_and(|c| g.confidence >= c),
            _ => false,
        };
        let confident = min_confidence.is_none_or(|c| g.confidence >= c);
        if g.verdict == Verdict::Insufficient && !counted_as_leak {
            not_counted.push(format!(
                "{who}: insufficient (grows over {} dumps; verdicts need {}): a filling cache \
                 cannot be told from a leak yet; --min-dumps {} or --min-confidence C counts it",
                m.window_dumps(),
                m.thresholds.min_dumps,
                m.window_dumps().max(2)
            ));
            continue;
        }
        if !confident {
            not_counted.push(format!(
                "{who}: {} with confidence {:.2}, below --min-confidence",
                g.verdict.as_str(),
                g.confidence
            ));
            continue;
        }
        let hit = match policy {
            FailOn::Leak => counted_as_leak,
            FailOn::LeakRate(r) => counted_as_leak && g.rate > r,
            FailOn::Bytes(b) => g.bytes > b,
        };
        if hit {
            // In the report's units, with the exact figures the policy compares in brackets.
            reasons.push(format!(
                "{} {who}: {} ({} bytes), {} ({:+.1} bytes/s), confidence {:.2}",
                g.verdict.as_str(),
                crate::render::human_bytes(g.bytes),
                g.bytes.round() as u64,
                crate::render::human_rate(g.rate),
                g.rate,
                g.confidence
            ));
        }
    }
    thread_leaks(m, policy, min_confidence, &mut reasons);
    let policy = match policy {
        FailOn::Leak => "leak".to_string(),
        FailOn::LeakRate(r) => format!("leak-rate>{r}"),
        FailOn::Bytes(b) => format!("bytes>{b}"),
    };
    FailResult {
        policy,
        reasons,
        not_counted,
    }
}

/// Thread creators whose live threads leak trip `--fail-on leak` (the byte policies measure
/// bytes, which a thread count has none of).
fn thread_leaks(
    m: &ProcessModel,
    policy: FailOn,
    min_confidence: Option<f64>,
    reasons: &mut Vec<String>,
) {
    if policy != FailOn::Leak {
        return;
    }
    for g in crate::model::threads::groups(m) {
        let confident = min_confidence.is_none_or(|c| g.confidence >= c);
        if g.suspect && g.verdict == Verdict::Leak && confident {
            reasons.push(format!(
                "leak {} (threads): {} live, {:+.2} threads/s, confidence {:.2}",
                g.name, g.live, g.rate, g.confidence
            ));
        }
    }
}

/// Where dumps are when `offheap report` is given none: `$OFFHEAP_DIR`, else the library's
/// default directory for this user; an error naming it when it does not exist.
pub fn default_input() -> anyhow::Result<std::path::PathBuf> {
    let (dir, why) = match std::env::var_os("OFFHEAP_DIR").filter(|d| !d.is_empty()) {
        Some(d) => (std::path::PathBuf::from(d), "$OFFHEAP_DIR"),
        None => {
            // SAFETY: getuid has no preconditions.
            let uid = unsafe { libc::getuid() };
            (
                offheap_format::names::default_dir(uid).into(),
                "the library's default dump directory",
            )
        }
    };
    if !dir.is_dir() {
        anyhow::bail!(
            "no dumps given, and {why} {} does not exist: give a dump directory or dump files \
             (offheap report DIR|FILE...)",
            dir.display()
        );
    }
    eprintln!("offheap: reading {} ({why})", dir.display());
    Ok(dir)
}
