//! The stack table's encoding: neighbours share their outermost frames.
//!
//! Every Go call path into C is its own stack, and most stacks of a process share a long
//! outer part (`main`, the request loop, the handler). Rows are ordered so that neighbours
//! share as much of that part as possible (by frames read from the outermost end), and each
//! row stores only how many outermost frames it keeps from the previous row plus its own
//! innermost frames:
//!
//! ```text
//!   frames (innermost first)        stored as  keep  frames
//!   [a, x, main, start]                        0     [a, x, main, start]
//!   [b, x, main, start]                        3     [b]
//!   [c, y, main, start]                        2     [c, y]
//! ```

use crate::schema::{StackTable, MAX_FRAMES};
use crate::End;
use std::cmp::Ordering;

/// How many outermost frames `a` and `b` have in common.
pub fn common_outer(a: &[u64], b: &[u64]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// Order of two stacks read from their outermost frame inwards: the order that puts stacks
/// sharing outer frames next to each other.
pub fn outermost_first(a: &[u64], b: &[u64]) -> Ordering {
    a.iter().rev().cmp(b.iter().rev())
}

/// A decoded stack: (id, end, frames innermost first).
pub type Decoded = (u64, End, Vec<u64>);

/// A stack table being read: rows decoded one after another.
pub struct Decoder<'a> {
    table: &'a StackTable,
    next: usize,
    previous: Vec<u64>,
}

impl<'a> Decoder<'a> {
    pub fn new(table: &'a StackTable) -> Self {
        Decoder {
            table,
            next: 0,
            previous: Vec::new(),
        }
    }

    /// The next stack: (id, end, frames innermost first), or an error naming the row.
    pub fn next_stack(&mut self) -> Option<Result<Decoded, String>> {
        let i = self.next;
        let t = self.table;
        let id = *t.id.get(i)?;
        self.next += 1;
        let (Some(end), Some(keep), Some(own)) = (t.end.get(i), t.keep.get(i), t.frames.get(i))
        else {
            return Some(Err(format!(
                "stack table row {i} (id {id}) is missing a column entry"
            )));
        };
        let keep = *keep as usize;
        if keep > self.previous.len() {
            return Some(Err(format!(
                "stack table row {i} (id {id}) keeps {keep} frames of a previous stack that \
                 has {}",
                self.previous.len()
            )));
        }
        if keep + own.len() > MAX_FRAMES {
            return Some(Err(format!(
                "stack {id} has {} frames (more than {MAX_FRAMES})",
                keep + own.len()
            )));
        }
        let mut frames = Vec::with_capacity(own.len() + keep);
        frames.extend_from_slice(own);
        frames.extend_from_slice(&self.previous[self.previous.len() - keep..]);
        self.previous.clone_from(&frames);
        Some(Ok((id, *end, frames)))
    }
}

/// Decodes a whole table; the first bad row fails it.
pub fn decode(table: &StackTable) -> Result<Vec<Decoded>, String> {
    let mut d = Decoder::new(table);
    let mut out = Vec::with_capacity(table.id.len());
    while let Some(r) = d.next_stack() {
        out.push(r?);
    }
    Ok(out)
}

/// Encodes stacks (already in the order they should be stored) into a table.
pub fn encode<'s>(stacks: impl IntoIterator<Item = (u64, End, &'s [u64])>) -> StackTable {
    let mut t = StackTable::default();
    let mut previous: &[u64] = &[];
    for (id, end, frames) in stacks {
        let keep = common_outer(previous, frames);
        t.id.push(id);
        t.end.push(end);
        t.keep.push(keep as u64);
        t.frames.push(frames[..frames.len() - keep].to_vec().into());
        previous = frames;
    }
    t
}
