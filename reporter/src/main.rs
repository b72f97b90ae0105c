//! `offheap`: the offline side of the offheap leak hunter.
//!
//! Layers, each in its own folder: `read` (dump files → ordered per-process dumps), `symbolize`
//! (return addresses → frames, offline), `model` (per-stack time series and origins),
//! `verdict` (leak / bounded / transient / startup, policies), `render` (text, JSON, pprof,
//! flamegraph, chart). `cmd` holds the subcommands that wire them together.

mod cmd;
mod model;
mod read;
mod render;
mod symbolize;
mod verdict;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status: success (also: report produced despite some unreadable files).
pub const EXIT_OK: u8 = 0;
/// Exit status: usage error, or no readable input.
pub const EXIT_ERROR: u8 = 1;
/// Exit status: the `--fail-on` policy tripped.
pub const EXIT_POLICY: u8 = 3;

const AFTER_HELP: &str = "\
Exit status:
  0  success (a report was produced; unreadable dump files are skipped with a warning)
  1  usage error, or no readable dump / I/O error
  3  the --fail-on policy tripped
  `offheap run` returns the command's own exit status (128+N when it died of signal N); when
  the command exited 0 and the --fail-on policy tripped, it returns 3.";

#[derive(Parser)]
#[command(
    name = "offheap",
    version,
    about = "Off-heap leak hunter for Go services that use cgo: reads liboffheap dumps",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Pprof,
    Flamegraph,
    Chart,
}

/// What `offheap diff` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum At {
    First,
    Last,
}

/// Memory left out of the views by default, that `--include` adds back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Include {
    /// The Go runtime's own heap arenas, stacks and thread creation.
    GoRuntime,
}

/// `--top N`: at least 1 (`--top 0` would list nothing and still say "top 0 of 4").
fn parse_top(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (--all lists everything)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}")),
    }
}

const CONFIDENCE_HELP: &str = "\
Verdicts (per stack, over the verdict window: dumps after `offheap mark`/OFFHEAP_WARMUP, else all):
  leak          grows to the end and its old allocations survive; or stopped growing but
                nothing it allocated was freed
  growing       grows, but old allocations are freed (backlog or churn)
  insufficient  grows, but the window has fewer than --min-dumps dumps: a filling cache and a
                leak look the same until the cache is full. Never trips --fail-on unless
                --min-confidence asks for it.
  bounded       grew, then levelled off while freeing (caches, pools)
  transient     released: gone by the end, or recurring short-lived bursts
  startup       constant over the window
Confidence (0..1) is how sure a verdict is: the product of enough dumps ((dumps-1)/6, at most
1), the fit of a straight line to the growth (r^2) and the share of early allocations still
alive at the end. Two dumps never give more than a hint.";

#[derive(clap::Args, Clone, Debug)]
#[command(after_long_help = CONFIDENCE_HELP)]
pub struct ReportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write to FILE instead of stdout (required for pprof).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Report on this process (default: the series with the most dumps).
    #[arg(long)]
    pub pid: Option<u64>,
    /// LSan-style suppressions: `leak:<substring of a function name>` lines.
    #[arg(long, value_name = "FILE")]
    pub suppressions: Option<PathBuf>,
    /// Exit with status 3 when: `leak` (any leak), `leak-rate>N` (a leak faster than N
    /// bytes/s; K/M/G suffixes) or `bytes>N` (a suspect above N bytes). `insufficient`
    /// verdicts never trip it unless --min-confidence is given.
    #[arg(long, value_name = "POLICY")]
    pub fail_on: Option<verdict::policy::FailOn>,
    /// Only verdicts at least this confident (0..1) trip --fail-on; with it, `insufficient`
    /// growth that confident counts as a leak.
    #[arg(long, value_name = "C")]
    pub min_confidence: Option<f64>,
    /// Dumps a verdict window needs before growth is called `leak`/`growing` rather than
    /// `insufficient` (default 4).
    #[arg(long, value_name = "N")]
    pub min_dumps: Option<usize>,
    /// Use the series up to the dump with this seq (e.g. for pprof -base comparisons).
    #[arg(long, value_name = "SEQ", conflicts_with = "at")]
    pub dump: Option<u64>,
    /// Use the series up to the first or the last dump (default last).
    #[arg(long, value_enum)]
    pub at: Option<At>,
    /// List every group and stack (text and JSON list the top --top by default).
    #[arg(long)]
    pub all: bool,
    /// Groups listed per table in text and JSON without --all.
    #[arg(long, value_name = "N", default_value_t = render::DEFAULT_TOP, value_parser = parse_top)]
    pub top: usize,
    /// Add memory the views leave out by default (go-runtime: Go's own heap arenas and
    /// thread creation) to the tables, flamegraph and pprof.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub include: Vec<Include>,
    /// A binary (or a directory of binaries) to symbolize a module with when the file it ran
    /// from was moved or rebuilt; matched by GNU build id. Repeatable; OFFHEAP_BINARY_PATH
    /// (colon-separated) adds more.
    #[arg(long, value_name = "PATH")]
    pub binary: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Analyse dumps: verdicts per culprit, in text, json, pprof, flamegraph or chart form.
    Report {
        #[command(flatten)]
        args: ReportArgs,
        /// Dump directories and/or dump files (none: $OFFHEAP_DIR, else the library's default
        /// directory, /tmp/offheap-<uid>).
        #[arg(value_name = "DIR|FILE")]
        inputs: Vec<PathBuf>,
    },
    /// What grew between two dumps (files, or directories: their last dump), by stack, with
    /// rates when both dumps are of one process.
    Diff {
        /// The earlier dump: a dump file, or a directory (its last dump).
        a: PathBuf,
        /// The later dump: a dump file, or a directory (its last dump).
        b: PathBuf,
        /// Output format: text or json (diff writes no other).
        #[arg(long, value_enum, default_value = "text")]
        format: DiffFormat,
        #[arg(long, value_name = "PATH")]
        /// Binaries to symbolize with (as for report).
        binary: Vec<PathBuf>,
        /// Add stacks left out by default (go-runtime: Go's own heap arenas and thread
        /// creation, which go tool pprof sees), as for report.
        #[arg(long, value_enum, value_name = "WHAT")]
        include: Vec<Include>,
    },
    /// Run a command with liboffheap preloaded, then print the report. SIGINT/SIGTERM sent to
    /// offheap are passed to the command; the report follows its end.
    Run {
        /// Time between dumps (OFFHEAP_INTERVAL): `2s`, `500ms`, `1m`, or plain seconds.
        #[arg(long, value_name = "DURATION", value_parser = cmd::run::parse_duration)]
        interval: Option<f64>,
        /// Dump directory (default: a fresh ./offheap-<time> directory, removed again when
        /// the command wrote no dump).
        #[arg(long, value_name = "D")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        args: ReportArgs,
        /// The command and its arguments: everything from the first word that is not one of
        /// our options on (a `--` before it is allowed, and needed when the command's name
        /// starts with `-`).
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        cmd: Vec<String>,
    },
    /// Ask a running process for a dump now (via its control socket).
    Snapshot { pid: u32 },
    /// Start a new epoch in a running process (e.g. after warm-up).
    Mark { pid: u32 },
    /// Inspect dump files.
    Dump {
        #[command(subcommand)]
        what: DumpCommand,
    },
}

#[derive(Subcommand)]
enum DumpCommand {
    /// Print a dump as plain JSON with its stacks and modules inline (the reporter reads this
    /// output too); with --stacks, print a stacks file's members.
    Cat {
        /// FILE is a stacks file (`offheap.<pid>.stacks.gz`).
        #[arg(long)]
        stacks: bool,
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // Usage errors are status 1 (documented); clap's own default would be 2.
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::from(EXIT_OK)
                }
                _ => ExitCode::from(EXIT_ERROR),
            };
        }
    };
    let res = match cli.cmd {
        Command::Report { args, inputs } => {
            if inputs.is_empty() {
                cmd::report::default_input().and_then(|dir| cmd::report::run(&args, &[dir]))
            } else {
                cmd::report::run(&args, &inputs)
            }
        }
        Command::Diff {
            a,
            b,
            format,
            binary,
            include,
        } => cmd::diff::run(
            &a,
            &b,
            format,
            &binary,
            include.contains(&Include::GoRuntime),
        ),
        Command::Run {
            interval,
            dir,
            args,
            cmd,
        } => cmd::run::run(interval, dir, &args, &cmd),
        Command::Snapshot { pid } => cmd::control::run(pid, "snapshot"),
        Command::Mark { pid } => cmd::control::run(pid, "mark"),
        Command::Dump {
            what: DumpCommand::Cat { stacks, file },
        } => cmd::dump::cat(&file, stacks),
    };
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("offheap: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
