//! A shared helper is not the culprit: the caller that reached it is.
//!
//! The culprit of a stack is the innermost frame of the user's own code (`culprit`). When that
//! frame is a helper the user wrote around an allocation — `func toC(s string) *C.char`, a C
//! program's `xmalloc` — it is the innermost user frame of every stack through it: every leak
//! through it was charged to the helper, and the leaks of all its callers merged into one row,
//! though only one of three callers forgot its `C.free` (a new user's walk-through).
//!
//! So the process's stacks (those seen live and those only counted, freed between dumps)
//! teach which call sites reach each user function. A function reached from two or more call
//! sites (caller and line) is a helper, and a stack's culprit moves out to the frame that
//! called it; again while that one is a helper too. The row then reads
//! `main.handleUpload via main.toC`, and each caller gets its own row and verdict. A function
//! with one call site stays the culprit, as before.
//!
//! ```text
//!   handleLogin:12  ─┐
//!   handleSearch:30 ─┼─▶ toC ─▶ C.dup_buf      toC has 3 call sites: a helper
//!   handleUpload:51 ─┘                          culprit of each stack: its caller
//! ```

use crate::symbolize::SymFrame;
use std::collections::{HashMap, HashSet};

/// A call site: the calling function and the line it calls from.
type CallSite = (String, Option<u32>);

/// Which call sites reach each user function, over a process's stacks.
#[derive(Default)]
pub struct CallSites {
    callers: HashMap<String, HashSet<CallSite>>,
}

impl CallSites {
    /// Learns the call sites of one stack's user frames (`user`: indices into `frames`,
    /// innermost first, as `CodeOwner::user_frames` gives them).
    pub fn learn(&mut self, frames: &[&SymFrame], user: &[usize]) {
        for pair in user.windows(2) {
            let (callee, caller) = (frames[pair[0]], frames[pair[1]]);
            let (Some(callee), Some(name)) = (&callee.function, &caller.function) else {
                continue;
            };
            self.callers
                .entry(callee.clone())
                .or_default()
                .insert((name.clone(), caller.line));
        }
    }

    /// How far out of the innermost user frame a stack's culprit is: past every helper (a
    /// function reached from two or more call sites), up to the outermost user frame.
    pub fn depth(&self, frames: &[&SymFrame], user: &[usize]) -> usize {
        let mut k = 0;
        while k + 1 < user.len() && self.is_helper(frames[user[k]]) {
            k += 1;
        }
        k
    }

    fn is_helper(&self, f: &SymFrame) -> bool {
        f.function
            .as_ref()
            .and_then(|name| self.callers.get(name))
            .is_some_and(|sites| sites.len() >= 2)
    }
}

/// The frame a stack's culprit moves out to when its innermost user frame is a helper; None
/// when it stays (no helper, or the culprit rule picked another frame: `innermost`).
pub fn moved_caller(
    sites: &CallSites,
    frames: &[&SymFrame],
    user: &[usize],
    innermost: Option<usize>,
) -> Option<usize> {
    if user.first().copied() != innermost {
        return None;
    }
    match sites.depth(frames, user) {
        0 => None,
        k => user.get(k).copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str, line: u32) -> SymFrame {
        SymFrame {
            function: Some(name.to_string()),
            file: Some("/x/main.go".into()),
            line: Some(line),
            module: Some("/bin/svc".into()),
            addr: u64::from(line),
            inlined: false,
            note: None,
            go: true,
        }
    }

    #[test]
    fn a_helper_with_several_call_sites_passes_the_blame_to_its_caller() {
        let helper = |caller: &str, line| {
            vec![
                frame("main.toC", 5),
                frame(caller, line),
                frame("main.serve", 90),
            ]
        };
        let stacks = [
            helper("main.handleLogin", 12),
            helper("main.handleSearch", 30),
            helper("main.handleUpload", 51),
        ];
        let alone = vec![frame("main.handleRequest", 86), frame("main.serve", 91)];
        let mut sites = CallSites::default();
        let all: Vec<&Vec<SymFrame>> = stacks.iter().chain([&alone]).collect();
        for s in &all {
            let refs: Vec<&SymFrame> = s.iter().collect();
            sites.learn(&refs, &[0, 1, 2][..s.len()]);
        }
        let upload: Vec<&SymFrame> = stacks[2].iter().collect();
        assert_eq!(sites.depth(&upload, &[0, 1, 2]), 1, "toC → handleUpload");
        // main.serve is reached from two sites too, but handleUpload has one: it stays.
        let solo: Vec<&SymFrame> = alone.iter().collect();
        assert_eq!(sites.depth(&solo, &[0, 1]), 0, "one call site: no helper");
        // Two sites in one function are two call sites as well.
        let mut twice = CallSites::default();
        for line in [40, 44] {
            let s = [frame("main.toC", 5), frame("main.handleUpload", line)];
            let refs: Vec<&SymFrame> = s.iter().collect();
            twice.learn(&refs, &[0, 1]);
        }
        let s = [frame("main.toC", 5), frame("main.handleUpload", 44)];
        let refs: Vec<&SymFrame> = s.iter().collect();
        assert_eq!(twice.depth(&refs, &[0, 1]), 1);
    }
}
