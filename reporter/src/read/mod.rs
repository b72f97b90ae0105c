//! Reading dump series (format version 2, defined in the `offheap-format` crate).
//!
//! A series is one process's files in one directory: its dumps `offheap.<stem>.<seq>.json.gz`
//! and its stacks file `offheap.<stem>.stacks.gz`. [`discover`] finds series from file names
//! alone, so the process to report on is picked before anything is parsed; [`series`] then
//! parses that series' dumps in parallel and hands them, in seq order, to a [`DumpSink`] that
//! folds each one into the model and drops it. Memory therefore follows the number of live
//! stacks, not the size or number of the files.
//!
//! A bad file never stops the report: it becomes a [`ReadError`] naming the file and what is
//! wrong, and the other files are still used. Problems that lose information (a gap in the
//! series, a stacks file that is missing or cut short, a dump referring to a stack that is not
//! defined) become warnings that name the file and the problem; the bytes involved are kept
//! under a placeholder stack rather than dropped.

pub mod discover;
pub mod parallel;
pub mod series;
pub mod stackstore;

pub use discover::{discover, peek_header, SeriesFiles};
pub use series::{read_series, Cut, DumpSink};
pub use stackstore::StackStore;

use std::fmt;
use std::path::{Path, PathBuf};

/// Something wrong with one input file.
#[derive(Debug, Clone)]
pub struct ReadError {
    pub path: PathBuf,
    pub what: String,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)
    }
}

impl std::error::Error for ReadError {}

/// Errors (files not used) and warnings (files used, something lost or odd) of one read.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    pub errors: Vec<ReadError>,
    pub warnings: Vec<String>,
}

impl Diagnostics {
    pub fn error(&mut self, path: &Path, what: impl Into<String>) {
        self.errors.push(ReadError {
            path: path.to_path_buf(),
            what: what.into(),
        });
    }
    pub fn warn(&mut self, w: impl Into<String>) {
        self.warnings.push(w.into());
    }
}

/// Files larger than this are refused before reading: a compressed dump of even a very busy
/// service is orders of magnitude smaller.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Opens a file for the format crate's reader, refusing what cannot be a dump.
pub fn open_checked(path: &Path) -> Result<std::io::BufReader<std::fs::File>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "file is {} bytes, over the {MAX_FILE_BYTES} byte limit for a dump",
            meta.len()
        ));
    }
    std::fs::File::open(path)
        .map(|f| std::io::BufReader::with_capacity(256 << 10, f))
        .map_err(|e| format!("cannot read: {e}"))
}

/// Parses one dump file (gzip'd as the library writes it, or plain JSON as `offheap dump cat`
/// prints it).
pub fn read_dump_file(path: &Path) -> Result<offheap_format::schema::Dump, ReadError> {
    let err = |what: String| ReadError {
        path: path.to_path_buf(),
        what,
    };
    open_checked(path).map_err(err)?;
    offheap_format::read::dump(|| {
        std::fs::File::open(path).map(|f| std::io::BufReader::with_capacity(256 << 10, f))
    })
    .map_err(err)
}

#[cfg(test)]
mod tests;
