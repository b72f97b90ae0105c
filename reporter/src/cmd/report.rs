//! `offheap report`: read → pick a process → model → policy → render.

use crate::model::{self, ProcessModel};
use crate::read::{self, ProcessDumps};
use crate::render::{self, Context, FailResult, ProcSummary};
use crate::symbolize::Symbolizer;
use crate::verdict::policy::{FailOn, Suppressions};
use crate::verdict::Verdict;
use crate::{At, Format, ReportArgs, EXIT_OK, EXIT_POLICY};
use anyhow::{bail, Context as _, Result};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

pub fn run(args: &ReportArgs, inputs: &[PathBuf]) -> Result<u8> {
    if args.format == Format::Pprof && args.output.is_none() {
        bail!("--format pprof writes a binary file: give it with -o FILE (e.g. -o heap.pb.gz)");
    }
    let files = read::discover(inputs).map_err(anyhow::Error::new)?;
    if files.is_empty() {
        bail!(
            "no dump files (offheap.<pid>.<seq>.json) in {}",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let input = load_with_progress(&files);
    for e in &input.errors {
        eprintln!("offheap: warning: {e}; skipped");
    }
    for w in &input.warnings {
        eprintln!("offheap: warning: {w}");
    }
    if input.processes.is_empty() {
        bail!("none of the {} input files is a readable dump", files.len());
    }
    let summaries: Vec<ProcSummary> = input
        .processes
        .iter()
        .map(|p| ProcSummary {
            pid: p.pid,
            exe: p
                .dumps
                .last()
                .map(|d| d.header.exe.clone())
                .unwrap_or_default(),
            dumps: p.dumps.len(),
        })
        .collect();
    let mut pd = select(input.processes, args.pid)?;
    choose_dump(&mut pd, args)?;
    let supp = match &args.suppressions {
        Some(p) => Suppressions::load(p)?,
        None => Suppressions::default(),
    };
    let mut warnings = input.warnings.clone();
    let mut sym = Symbolizer::new(&pd.modules);
    let m = model::build(&pd, &mut sym, &supp, &mut warnings);
    for w in &warnings[input.warnings.len()..] {
        eprintln!("offheap: warning: {w}");
    }
    if m.missing_stacks > 0 {
        eprintln!(
            "offheap: warning: {} outstanding entries refer to stack ids no dump lists",
            m.missing_stacks
        );
    }
    let fail = args.fail_on.map(|p| evaluate(&m, p));
    let tripped = fail.as_ref().is_some_and(|f| !f.reasons.is_empty());
    let to_tty = args.output.is_none() && std::io::stdout().is_terminal();
    let ctx = Context {
        model: &m,
        processes: &summaries,
        warnings: &warnings,
        errors: &input.errors,
        fail,
        colour: to_tty && std::env::var_os("NO_COLOR").is_none(),
    };
    let wall_ns = pd.dumps.last().map(|d| d.header.wall_ns).unwrap_or(0);
    let mut buf: Vec<u8> = Vec::new();
    match args.format {
        Format::Text => render::text::render(&ctx, &mut buf)?,
        Format::Json => render::json::render(&ctx, &mut buf)?,
        Format::Pprof => render::pprof::render(&ctx, &mut sym, wall_ns, &mut buf)?,
        Format::Flamegraph => render::flamegraph::render(&ctx, &mut buf)?,
        Format::Chart => render::chart::render(&ctx, &mut buf)?,
    }
    write_out(args.output.as_deref(), &buf)?;
    if let Some(f) = &ctx.fail {
        if args.format != Format::Text {
            // The text report prints the outcome itself; other formats keep stdout clean.
            for r in &f.reasons {
                eprintln!("offheap: --fail-on {} tripped: {r}", f.policy);
            }
        }
    }
    Ok(if tripped { EXIT_POLICY } else { EXIT_OK })
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

fn load_with_progress(files: &[PathBuf]) -> read::Input {
    if files.len() >= 20 && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(files.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("reading dumps {bar:40} {pos}/{len} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let input = read::load(files, &|n, _| bar.set_position(n as u64));
        bar.finish_and_clear();
        input
    } else {
        read::load(files, &|_, _| {})
    }
}

/// `--pid`, or the process with the most dumps (ties: the highest pid, i.e. likely newest).
fn select(processes: Vec<ProcessDumps>, pid: Option<u64>) -> Result<ProcessDumps> {
    let pids: Vec<String> = processes
        .iter()
        .map(|p| format!("{} ({} dumps)", p.pid, p.dumps.len()))
        .collect();
    let pick = match pid {
        Some(want) => processes.into_iter().find(|p| p.pid == want),
        None => processes.into_iter().max_by_key(|p| (p.dumps.len(), p.pid)),
    };
    match pick {
        Some(p) => Ok(p),
        None => bail!(
            "no dumps of pid {} in the input; processes found: {}",
            pid.unwrap_or(0),
            pids.join(", ")
        ),
    }
}

/// `--dump SEQ` / `--at first|last`: cut the series at that dump, so every format shows the
/// state as of then (pprof `-base first.pb.gz last.pb.gz` shows the growth).
fn choose_dump(pd: &mut ProcessDumps, args: &ReportArgs) -> Result<()> {
    let keep = match (args.dump, args.at) {
        (Some(seq), _) => match pd.dumps.iter().position(|d| d.header.seq == seq) {
            Some(i) => i + 1,
            None => bail!(
                "pid {} has no dump with seq {seq} (available: {}..{})",
                pd.pid,
                pd.dumps.first().map(|d| d.header.seq).unwrap_or(0),
                pd.dumps.last().map(|d| d.header.seq).unwrap_or(0)
            ),
        },
        (None, Some(At::First)) => 1,
        _ => pd.dumps.len(),
    };
    if keep < pd.dumps.len() {
        pd.dumps.truncate(keep);
        pd.paths.truncate(keep);
        // The per-generation detail was kept for the newest dump only; re-read the chosen
        // one so its survivors and untracked ranges are complete.
        if let Some(p) = pd.paths.last().cloned() {
            if let Ok(mut d) = read::read_dump_file(&p) {
                d.stacks.clear();
                d.modules.clear();
                if let Some(last) = pd.dumps.last_mut() {
                    *last = d;
                }
            }
        }
    }
    Ok(())
}

fn evaluate(m: &ProcessModel, policy: FailOn) -> FailResult {
    let mut reasons = Vec::new();
    for s in m.suspects() {
        let who = s
            .go_caller()
            .or_else(|| s.frames.iter().find(|f| f.function.is_some()))
            .map(|f| f.display_name())
            .unwrap_or_else(|| "??".into());
        let hit = match policy {
            FailOn::Leak => s.class.verdict == Verdict::Leak,
            FailOn::LeakRate(r) => s.class.verdict == Verdict::Leak && s.class.rate > r,
            FailOn::Bytes(b) => s.last_bytes() > b,
        };
        if hit {
            reasons.push(format!(
                "{} {} ({}): {} bytes, {:+.1} bytes/s",
                s.class.verdict.as_str(),
                who,
                s.kind,
                s.last_bytes().round() as u64,
                s.class.rate
            ));
        }
    }
    let policy = match policy {
        FailOn::Leak => "leak".to_string(),
        FailOn::LeakRate(r) => format!("leak-rate>{r}"),
        FailOn::Bytes(b) => format!("bytes>{b}"),
    };
    FailResult { policy, reasons }
}
