//! The stacks and modules of one series, rebuilt from its stacks file (and from stacks inline
//! in `offheap dump cat` output).
//!
//! Stack ids are stable for the life of a process, so one store serves every dump of the
//! series; a dump is checked against it row by row ([`StackStore::check`]) and every id that
//! is not defined is reported with the file and the reason.

use offheap_format::schema::{Module, StackTable};
use offheap_format::{stack_id, End};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One stack: how its walk ended and its return addresses, innermost first.
#[derive(Debug, Clone)]
pub struct StackRec {
    pub end: End,
    pub frames: Arc<[u64]>,
}

#[derive(Debug, Default)]
pub struct StackStore {
    pub stacks: HashMap<u64, StackRec>,
    /// Union of the module maps (a module dlopen'ed late appears in a later member).
    pub modules: Vec<Module>,
    /// The stacks file read, if any.
    pub file: Option<PathBuf>,
    /// Why the stacks file is incomplete or absent, for messages about missing stacks.
    pub problem: Option<String>,
    /// Members read from the stacks file.
    pub members: usize,
    /// The first id seen with two different definitions.
    pub conflict: Option<u64>,
}

impl StackStore {
    /// Reads a stacks file; a missing or damaged file gives a store that says why.
    pub fn load(path: &Path) -> StackStore {
        let mut store = StackStore {
            file: Some(path.to_path_buf()),
            ..Default::default()
        };
        let f = match super::open_checked(path) {
            Ok(f) => f,
            Err(e) => {
                store.problem = Some(format!("{}: {e}", path.display()));
                return store;
            }
        };
        let read = offheap_format::read::stacks_file(f);
        store.members = read.members.len();
        for m in read.members {
            if let Err(e) = store.add(&m.stacks, m.modules.0) {
                store.problem = Some(format!("{}: member seq {}: {e}", path.display(), m.seq));
                break;
            }
        }
        if let Some(why) = read.stopped {
            store.problem = Some(format!(
                "{}: read {} member(s), then stopped: {why}",
                path.display(),
                store.members
            ));
        }
        store
    }

    /// A store for a series whose stacks file does not exist.
    pub fn missing(path: &Path) -> StackStore {
        StackStore {
            file: Some(path.to_path_buf()),
            problem: Some(format!("{}: the stacks file is missing", path.display())),
            ..Default::default()
        }
    }

    /// Adds a decoded stack table and modules (a stacks-file member or a dump's inline ones).
    pub fn add(&mut self, table: &StackTable, modules: Vec<Module>) -> Result<(), String> {
        for m in modules {
            if !self
                .modules
                .iter()
                .any(|o| o.path == m.path && o.base == m.base)
            {
                self.modules.push(m);
            }
        }
        let mut d = offheap_format::stacks::Decoder::new(table);
        while let Some(row) = d.next_stack() {
            let (id, end, frames) = row?;
            match self.stacks.get(&id) {
                Some(old) if *old.frames != *frames => {
                    self.conflict.get_or_insert(id);
                }
                Some(_) => {}
                None => {
                    self.stacks.insert(
                        id,
                        StackRec {
                            end,
                            frames: frames.into(),
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Why stack `id` of a dump whose header says `ids_below` cannot be resolved, if it
    /// cannot. Ids 0 (no stack captured) and 1 (stack store full) are never defined.
    pub fn check(&self, id: u64, ids_below: u64) -> Option<StackProblem> {
        if id < stack_id::FIRST as u64 {
            return None;
        }
        if id >= ids_below {
            return Some(StackProblem::BeyondIdsBelow);
        }
        (!self.stacks.contains_key(&id)).then_some(StackProblem::NotInFile)
    }

    /// The text of a problem, naming the file.
    pub fn explain(&self, p: StackProblem, ids_below: u64) -> String {
        match p {
            StackProblem::BeyondIdsBelow => format!(
                "at or beyond header.stack_ids_below ({ids_below}): the dump refers to stacks it \
                 says are not defined yet (corrupt dump; frames are used where the stacks file \
                 has them)"
            ),
            StackProblem::NotInFile => match (&self.problem, &self.file) {
                (Some(why), _) => format!("not defined ({why})"),
                (None, Some(f)) => format!("not in {}", f.display()),
                (None, None) => "not defined: the dump names no stacks file and has no inline \
                                 stacks"
                    .to_string(),
            },
        }
    }
}

/// Why a stack id cannot be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackProblem {
    BeyondIdsBelow,
    NotInFile,
}
