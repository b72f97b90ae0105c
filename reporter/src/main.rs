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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum At {
    First,
    Last,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ReportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write to FILE instead of stdout (required for pprof).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Report on this process (default: the process with the most dumps).
    #[arg(long)]
    pub pid: Option<u64>,
    /// LSan-style suppressions: `leak:<substring of a function, file or module>` lines.
    #[arg(long, value_name = "FILE")]
    pub suppressions: Option<PathBuf>,
    /// Exit with status 3 when: `leak` (any leak), `leak-rate>N` (a leak faster than N
    /// bytes/s; K/M/G suffixes) or `bytes>N` (a suspect stack above N bytes).
    #[arg(long, value_name = "POLICY")]
    pub fail_on: Option<verdict::policy::FailOn>,
    /// Use the series up to the dump with this seq (e.g. for pprof -base comparisons).
    #[arg(long, value_name = "SEQ", conflicts_with = "at")]
    pub dump: Option<u64>,
    /// Use the series up to the first or the last dump (default last).
    #[arg(long, value_enum)]
    pub at: Option<At>,
}

#[derive(Subcommand)]
enum Command {
    /// Analyse dumps: verdicts per stack, in text, json, pprof, flamegraph or chart form.
    Report {
        #[command(flatten)]
        args: ReportArgs,
        /// Dump directories and/or dump files.
        #[arg(required = true, value_name = "DIR|FILE")]
        inputs: Vec<PathBuf>,
    },
    /// What grew between two dumps (files, or directories: their last dump), by stack.
    Diff {
        a: PathBuf,
        b: PathBuf,
        /// text or json.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Run a command with liboffheap preloaded, then print the report.
    Run {
        /// Seconds between dumps (OFFHEAP_INTERVAL).
        #[arg(long, value_name = "S")]
        interval: Option<f64>,
        /// Dump directory (default: a fresh ./offheap-<time> directory).
        #[arg(long, value_name = "D")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        args: ReportArgs,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Ask a running process for a dump now (via its control socket).
    Snapshot { pid: u32 },
    /// Start a new epoch in a running process (e.g. after warm-up).
    Mark { pid: u32 },
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
        Command::Report { args, inputs } => cmd::report::run(&args, &inputs),
        Command::Diff { a, b, format } => cmd::diff::run(&a, &b, format),
        Command::Run {
            interval,
            dir,
            args,
            cmd,
        } => cmd::run::run(interval, dir, &args, &cmd),
        Command::Snapshot { pid } => cmd::control::run(pid, "snapshot"),
        Command::Mark { pid } => cmd::control::run(pid, "mark"),
    };
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("offheap: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
