//! `offheap dump cat FILE`: a dump as plain JSON with its stacks and modules inline, so it can
//! be read with `jq`, mailed, or fed back to `offheap report` (which reads this form too);
//! `offheap dump cat --stacks FILE`: a stacks file's members, stacks decoded.

use crate::read::{self, StackStore};
use crate::{EXIT_ERROR, EXIT_OK};
use anyhow::{Context, Result};
use offheap_format::schema::Dump;
use offheap_format::{stacks, End};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

pub fn cat(file: &Path, stacks_file: bool) -> Result<u8> {
    if stacks_file {
        return cat_stacks(file);
    }
    let text = inline_dump(file)?;
    super::report::write_out(None, text.as_bytes())?;
    Ok(EXIT_OK)
}

/// The dump with the stacks it refers to (and the series' modules) put inline.
fn inline_dump(file: &Path) -> Result<String> {
    let mut dump = read::read_dump_file(file).map_err(anyhow::Error::new)?;
    if let Some(name) = dump.header.stacks_file.clone() {
        let path = file.parent().unwrap_or(Path::new(".")).join(&name);
        let store = if path.is_file() {
            StackStore::load(&path)
        } else {
            StackStore::missing(&path)
        };
        if let Some(why) = &store.problem {
            eprintln!("offheap: warning: {why}");
        }
        inline(&mut dump, &store, file);
    }
    let mut s = serde_json::to_string_pretty(&dump).context("cannot encode the dump")?;
    s.push('\n');
    Ok(s)
}

fn referenced(d: &Dump) -> BTreeSet<u64> {
    d.outstanding
        .stack
        .0
        .iter()
        .chain(&d.cumulative.stack.0)
        .chain(&d.threads.by_stack.stack.0)
        .copied()
        .filter(|&id| id >= u64::from(offheap_format::stack_id::FIRST))
        .collect()
}

fn inline(dump: &mut Dump, store: &StackStore, file: &Path) {
    let ids = referenced(dump);
    let mut rows: Vec<(u64, End, &[u64])> = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        match store.stacks.get(&id) {
            Some(r) => rows.push((id, r.end, &r.frames)),
            None => missing.push(id),
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "offheap: warning: {}: {} referenced stack id(s) are not in the stacks file (first: {})",
            file.display(),
            missing.len(),
            missing[0]
        );
    }
    rows.sort_by(|a, b| stacks::outermost_first(a.2, b.2));
    dump.stacks = stacks::encode(rows);
    dump.modules = store.modules.clone().into();
    dump.header.stacks_file = None;
}

/// A decoded stack: id, how its walk ended, frames innermost first.
type Decoded = (u64, End, Vec<u64>);

#[derive(Serialize)]
struct StackOut<'a> {
    id: u64,
    end: &'static str,
    frames: &'a [u64],
}

#[derive(Serialize)]
struct MemberOut<'a> {
    format: &'a str,
    version: u64,
    seq: u64,
    modules: &'a [offheap_format::schema::Module],
    stacks: Vec<StackOut<'a>>,
}

fn cat_stacks(file: &Path) -> Result<u8> {
    let r = read::open_checked(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let read = offheap_format::read::stacks_file(r);
    let decoded: Vec<Result<Vec<Decoded>, String>> = read
        .members
        .iter()
        .map(|m| stacks::decode(&m.stacks))
        .collect();
    let mut members = Vec::new();
    for (m, d) in read.members.iter().zip(&decoded) {
        let rows = d
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{}: member seq {}: {e}", file.display(), m.seq))?;
        members.push(MemberOut {
            format: &m.format,
            version: m.version,
            seq: m.seq,
            modules: &m.modules,
            stacks: rows
                .iter()
                .map(|(id, end, frames)| StackOut {
                    id: *id,
                    end: end.as_str(),
                    frames,
                })
                .collect(),
        });
    }
    let mut s = serde_json::to_string_pretty(&members)?;
    s.push('\n');
    super::report::write_out(None, s.as_bytes())?;
    if let Some(why) = read.stopped {
        eprintln!(
            "offheap: error: {}: read {} member(s), then stopped: {why}",
            file.display(),
            read.members.len()
        );
        return Ok(EXIT_ERROR);
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fold::Accumulator;
    use crate::read::{Cut, Diagnostics};

    fn recorded(name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/leakyservice")
            .join(name)
    }

    #[test]
    fn cat_output_reads_back_as_the_same_dump() {
        let src = recorded("offheap.16190.000012.json.gz");
        let text = inline_dump(&src).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("seq12.json");
        std::fs::write(&saved, &text).unwrap();
        let mut diag = Diagnostics::default();
        let series = read::discover(&[saved], &mut diag).unwrap();
        let mut acc = Accumulator::new();
        let store =
            read::read_series(&series[0], Cut::Last, &mut acc, &mut diag, &|_, _| {}).unwrap();
        assert!(
            diag.warnings.is_empty() && diag.errors.is_empty(),
            "{diag:?}"
        );
        let original = read::read_dump_file(&src).unwrap();
        let ids = referenced(&original);
        assert!(ids.iter().all(|id| store.stacks.contains_key(id)));
        assert!(!store.modules.is_empty());
        assert_eq!(acc.finish().series.len(), original.outstanding.len());
    }

    #[test]
    fn cat_stacks_fails_on_a_file_cut_short() {
        let src = recorded("offheap.16190.stacks.gz");
        assert_eq!(cat_stacks(&src).unwrap(), EXIT_OK);
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("offheap.1.stacks.gz");
        let bytes = std::fs::read(&src).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() - 30]).unwrap();
        assert_eq!(cat_stacks(&cut).unwrap(), EXIT_ERROR);
    }
}
