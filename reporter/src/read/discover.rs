//! Finding series from file names, before parsing anything.
//!
//! Directories are listed and their files grouped by stem (`offheap.<pid>` or
//! `offheap.<pid>_<n>`, see `offheap_format::names`); files given one by one join the series
//! of their stem. A file whose name is not a dump name (the output of `offheap dump cat`
//! saved somewhere) is a series of its own with its stacks inline.

use super::{Diagnostics, ReadError};
use offheap_format::names;
use offheap_format::schema::Header;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The files of one series.
#[derive(Debug, Clone, Default)]
pub struct SeriesFiles {
    pub dir: PathBuf,
    /// `offheap.<pid>[_<n>]`, or the file name of a loose file.
    pub stem: String,
    /// The pid in the file names (None for a loose file until its header is read).
    pub pid: Option<u64>,
    /// Dump files ascending by seq (from the names).
    pub dumps: Vec<(u64, PathBuf)>,
    /// The stacks file when it exists on disk.
    pub stacks_file: Option<PathBuf>,
    /// A file not named like a dump: one dump, stacks inline.
    pub loose: bool,
}

impl SeriesFiles {
    pub fn expected_stacks_file(&self) -> PathBuf {
        self.dir.join(names::stacks(&self.stem))
    }

    /// The seq ranges missing between the first and last dump on disk.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        self.dumps
            .windows(2)
            .filter(|w| w[1].0 > w[0].0 + 1)
            .map(|w| (w[0].0 + 1, w[1].0 - 1))
            .collect()
    }
}

/// Series in the inputs, ordered by (directory, stem). A missing input is an error; files in
/// a directory that are not dumps or stacks files are ignored, as the format promises.
pub fn discover(inputs: &[PathBuf], diag: &mut Diagnostics) -> Result<Vec<SeriesFiles>, ReadError> {
    let mut by_stem: BTreeMap<(PathBuf, String), SeriesFiles> = BTreeMap::new();
    let mut loose = Vec::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| ReadError {
            path: p.clone(),
            what: format!("cannot open: {e}"),
        })?;
        if meta.is_dir() {
            let old = list_directory(p, &mut by_stem)?;
            if old > 0 {
                diag.warn(format!(
                    "{}: {old} file(s) named like version 1 dumps (offheap.<pid>.<seq>.json) are \
                     not read: this reporter reads version 2 (offheap.<pid>.<seq>.json.gz); run \
                     the program again with the current library",
                    p.display()
                ));
            }
            continue;
        }
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
        if let Some((stem, pid, seq)) = names::parse_dump(name) {
            let s = series_entry(&mut by_stem, &dir, stem, pid);
            s.dumps.push((seq, p.clone()));
        } else if names::parse_stacks(name).is_some() {
            diag.error(
                p,
                "a stacks file, not a dump: give the directory or its dumps \
                 (`offheap dump cat --stacks FILE` prints it)",
            );
        } else {
            loose.push(SeriesFiles {
                dir,
                stem: name.to_string(),
                pid: None,
                dumps: vec![(0, p.clone())],
                stacks_file: None,
                loose: true,
            });
        }
    }
    let mut out: Vec<SeriesFiles> = by_stem
        .into_values()
        .filter(|s| !s.dumps.is_empty())
        .map(|mut s| {
            s.dumps.sort();
            s.dumps.dedup_by(|a, b| a.0 == b.0);
            let f = s.expected_stacks_file();
            s.stacks_file = f.is_file().then_some(f);
            s
        })
        .collect();
    out.extend(loose);
    Ok(out)
}

fn series_entry<'a>(
    by_stem: &'a mut BTreeMap<(PathBuf, String), SeriesFiles>,
    dir: &Path,
    stem: &str,
    pid: u64,
) -> &'a mut SeriesFiles {
    by_stem
        .entry((dir.to_path_buf(), stem.to_string()))
        .or_insert_with(|| SeriesFiles {
            dir: dir.to_path_buf(),
            stem: stem.to_string(),
            pid: Some(pid),
            ..Default::default()
        })
}

/// Lists a directory's dumps into `by_stem`; returns how many files are named like dumps of
/// the old version 1 format (plain `.json`), which are not read.
fn list_directory(
    dir: &Path,
    by_stem: &mut BTreeMap<(PathBuf, String), SeriesFiles>,
) -> Result<usize, ReadError> {
    let rd = std::fs::read_dir(dir).map_err(|e| ReadError {
        path: dir.to_path_buf(),
        what: format!("cannot list directory: {e}"),
    })?;
    let mut old = 0;
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((stem, pid, seq)) = names::parse_dump(name) {
            series_entry(by_stem, dir, stem, pid)
                .dumps
                .push((seq, ent.path()));
        } else if name.starts_with("offheap.") && name.ends_with(".json") {
            old += 1;
        }
    }
    Ok(old)
}

/// Just the header of a dump: what the process list needs from the series not reported on.
#[derive(serde::Deserialize)]
struct HeaderOnly {
    format: String,
    version: u64,
    header: Header,
}

/// Reads a dump's header (the rest of the document is scanned, not kept).
pub fn peek_header(path: &Path) -> Result<Header, String> {
    let r = super::open_checked(path)?;
    let mut r = r;
    let head = std::io::BufRead::fill_buf(&mut r).map_err(|e| format!("cannot read: {e}"))?;
    offheap_format::bounded::reset_budget();
    let parsed: Result<HeaderOnly, serde_json::Error> = if offheap_format::read::is_gzip(head) {
        serde_json::from_reader(flate2::bufread::GzDecoder::new(r))
    } else {
        serde_json::from_reader(r)
    };
    match parsed {
        Ok(h) => {
            offheap_format::read::check_identity(
                &h.format,
                Some(h.version),
                offheap_format::FORMAT,
            )?;
            Ok(h.header)
        }
        // The full reader explains failures best (foreign file, old version, truncation).
        Err(_) => super::read_dump_file(path)
            .map(|d| d.header)
            .map_err(|e| e.what),
    }
}
