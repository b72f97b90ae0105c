//! Who to blame for an allocation: the user's own function, the library entry point it went
//! through, and the allocation site.
//!
//! A binding's closure (`zstd.(*Writer).Write.func1`) is the innermost Go frame of a cgo leak,
//! but the person reading the report wrote `main.compressForArchive`, many frames further out.
//! So the caller is the innermost frame of the **main module** (its path from `.go.buildinfo`;
//! package `main` is always in it), `via` is the first non-plumbing frame inside it (the
//! library's entry point, or `C.<function>` for a direct cgo call), and only binaries without
//! module information fall back to the first frame that is neither runtime nor cgo plumbing.
//! For C programs the caller is the innermost frame in the executable.

use super::origin::{is_go_frame, is_go_plumbing};
use crate::symbolize::SymFrame;

/// How the caller was chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CallerRule {
    /// Innermost frame of the main module (from `.go.buildinfo`) or of package `main`.
    MainModule,
    /// C program: innermost frame in the executable.
    Executable,
    /// No frame of the user's module: the first non-runtime, non-cgo Go frame, or for C
    /// stacks the first named non-allocator frame.
    #[default]
    FirstNonRuntime,
}

/// The user's frame, the entry point it went through, and the allocation site.
#[derive(Debug, Clone, Default)]
pub struct Culprit {
    pub caller: Option<SymFrame>,
    pub rule: CallerRule,
    pub via: Option<String>,
    pub site: Option<SymFrame>,
}

impl Culprit {
    /// `main.handleRequest`, or `??` when nothing could be named.
    #[cfg(test)]
    pub fn caller_name(&self) -> String {
        self.caller
            .as_ref()
            .map(|f| f.display_name())
            .unwrap_or_else(|| "??".into())
    }
}

/// What decides "your code" for one executable.
#[derive(Debug, Clone, Default)]
pub struct CodeOwner {
    /// The main module's path (`.go.buildinfo`), when known.
    pub main_module: Option<String>,
    /// Paths of the executable as the module map names it.
    pub exe_paths: Vec<String>,
}

impl CodeOwner {
    /// A Go function of the user's own module.
    fn is_yours(&self, f: &SymFrame) -> bool {
        let Some(name) = f.function.as_deref() else {
            return false;
        };
        if !is_go_frame(f) || is_go_plumbing(name) {
            return false;
        }
        if name.starts_with("main.") {
            return true;
        }
        self.main_module.as_deref().is_some_and(|m| {
            !m.is_empty()
                && name
                    .strip_prefix(m)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('/'))
        })
    }

    fn in_executable(&self, f: &SymFrame) -> bool {
        f.module
            .as_deref()
            .is_some_and(|m| self.exe_paths.iter().any(|e| e == m))
    }

    /// The user's own frames of a stack (indices into `frames`, innermost first): Go frames
    /// of the main module, or for C stacks the named frames of the executable.
    pub fn user_frames(&self, frames: &[&SymFrame]) -> Vec<usize> {
        let go = frames.iter().any(|f| is_go_frame(f));
        (0..frames.len())
            .filter(|&i| {
                let f = frames[i];
                if go {
                    self.is_yours(f)
                } else {
                    f.function.is_some() && self.in_executable(f)
                }
            })
            .collect()
    }

    /// The culprit of a stack's frames (innermost first).
    pub fn culprit(&self, frames: &[&SymFrame]) -> Culprit {
        let (idx, rule) = self.caller_index(frames);
        culprit_at(frames, idx, rule)
    }

    /// The culprit with its caller moved out to `frames[idx]` (a helper's caller: see
    /// `super::helpers`), under the rule that found the innermost one.
    pub fn culprit_moved_to(&self, frames: &[&SymFrame], idx: usize) -> Culprit {
        let (_, rule) = self.caller_index(frames);
        culprit_at(frames, Some(idx), rule)
    }

    /// Where the innermost culprit is in `frames`, and by which rule.
    pub fn caller_index(&self, frames: &[&SymFrame]) -> (Option<usize>, CallerRule) {
        let go = frames.iter().any(|f| is_go_frame(f));
        if go {
            match frames.iter().position(|f| self.is_yours(f)) {
                Some(i) => (Some(i), CallerRule::MainModule),
                None => (first_user_go_frame(frames), CallerRule::FirstNonRuntime),
            }
        } else {
            // An unnamed frame of the executable still wins: "?? (build-id mismatch)" says
            // what is wrong, a libc frame further out would blame the wrong code.
            match frames.iter().position(|f| self.in_executable(f)) {
                Some(i) => (Some(i), CallerRule::Executable),
                None => (
                    first_named_non_allocator(frames),
                    CallerRule::FirstNonRuntime,
                ),
            }
        }
    }
}

fn culprit_at(frames: &[&SymFrame], idx: Option<usize>, rule: CallerRule) -> Culprit {
    Culprit {
        caller: idx.map(|i| frames[i].clone()),
        rule,
        via: idx.and_then(|i| via(&frames[..i])),
        site: site(frames).cloned(),
    }
}

/// The innermost Go frame that is not runtime or cgo plumbing.
fn first_user_go_frame(frames: &[&SymFrame]) -> Option<usize> {
    frames
        .iter()
        .position(|f| is_go_frame(f) && f.function.as_deref().is_some_and(|n| !is_go_plumbing(n)))
}

fn first_named_non_allocator(frames: &[&SymFrame]) -> Option<usize> {
    frames.iter().position(|f| {
        f.function
            .as_deref()
            .is_some_and(|n| !is_allocator(n) && !is_go_plumbing(n))
    })
}

/// Functions that only pass an allocation through: the allocation site is their caller.
pub fn is_allocator(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "free",
        "memalign",
        "aligned_alloc",
        "posix_memalign",
        "valloc",
        "pvalloc",
        "mmap",
        "mmap64",
        "mremap",
        "strdup",
        "strndup",
        "__libc_malloc",
        "__libc_calloc",
        "__libc_realloc",
        "__strdup",
    ];
    NAMES.contains(&name) || name.starts_with("operator new")
}

/// The allocation site: the innermost named frame that is neither an allocator nor
/// runtime/cgo plumbing; an unnamed frame only when nothing is named (a stripped binary's
/// cgo wrappers have no names and would hide the Go function around them).
pub fn site<'a>(frames: &[&'a SymFrame]) -> Option<&'a SymFrame> {
    let named = frames.iter().copied().find(|f| {
        f.function
            .as_deref()
            .is_some_and(|n| !is_allocator(n) && !is_go_plumbing(n) && n != "runtime.cgocall")
    });
    named.or_else(|| frames.iter().copied().find(|f| f.function.is_none()))
}

/// The entry point the caller went through: the first frame inward of it that is not
/// plumbing. A cgo wrapper (`main._Cfunc_CString`) reads as `C.CString`; a Go closure of a
/// library keeps the name of the function that made it.
fn via(inner: &[&SymFrame]) -> Option<String> {
    for f in inner.iter().rev() {
        let Some(name) = f.function.as_deref() else {
            continue;
        };
        if let Some(rest) = name.split("_Cfunc_").nth(1) {
            return Some(match rest {
                "_CMalloc" | "_Cmalloc" => "C.malloc".to_string(),
                r => format!("C.{r}"),
            });
        }
        if is_go_plumbing(name) || name == "runtime.cgocall" || is_allocator(name) {
            continue;
        }
        return Some(name.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(f: &[SymFrame]) -> Vec<&SymFrame> {
        f.iter().collect()
    }

    fn frames(spec: &[(&str, &str)]) -> Vec<SymFrame> {
        spec.iter()
            .map(|&(name, module)| SymFrame {
                function: Some(name.to_string()),
                file: Some(
                    if name.contains('.') {
                        "/x/a.go"
                    } else {
                        "/x/a.c"
                    }
                    .into(),
                ),
                line: Some(7),
                module: Some(module.to_string()),
                addr: 1,
                inlined: false,
                note: None,
                go: name.contains('.'),
            })
            .collect()
    }

    #[test]
    fn a_binding_closure_is_charged_to_the_users_function_via_the_entry_point() {
        let f = frames(&[
            ("ZSTD_compressStream2", "/bin/svc"),
            ("_cgo_1234_Cfunc_ZSTD_compressStream2", "/bin/svc"),
            ("runtime.asmcgocall", "/bin/svc"),
            ("runtime.cgocall", "/bin/svc"),
            (
                "github.com/DataDog/zstd._Cfunc_ZSTD_compressStream2",
                "/bin/svc",
            ),
            ("github.com/DataDog/zstd.(*Writer).Write.func1", "/bin/svc"),
            ("github.com/DataDog/zstd.(*Writer).Write", "/bin/svc"),
            ("example.com/svc/archive.compress", "/bin/svc"),
            ("main.compressForArchive", "/bin/svc"),
            ("main.main", "/bin/svc"),
            ("runtime.main", "/bin/svc"),
        ]);
        let owner = CodeOwner {
            main_module: Some("example.com/svc".into()),
            exe_paths: vec!["/bin/svc".into()],
        };
        let c = owner.culprit(&refs(&f));
        assert_eq!(c.caller_name(), "example.com/svc/archive.compress");
        assert_eq!(c.rule, CallerRule::MainModule);
        assert_eq!(
            c.via.as_deref(),
            Some("github.com/DataDog/zstd.(*Writer).Write")
        );
        assert_eq!(
            c.site.unwrap().function.as_deref(),
            Some("ZSTD_compressStream2")
        );
        // Without module information, package main still counts as the user's.
        let bare = CodeOwner::default();
        let f2: Vec<SymFrame> = f
            .iter()
            .filter(|x| !x.function.as_deref().unwrap().starts_with("example.com"))
            .cloned()
            .collect();
        assert_eq!(
            bare.culprit(&refs(&f2)).caller_name(),
            "main.compressForArchive"
        );
    }

    #[test]
    fn direct_cgo_calls_read_as_c_functions_and_c_programs_use_the_executable() {
        let f = frames(&[
            ("_cgo_99_Cfunc__Cmalloc", "/bin/ls"),
            ("runtime.asmcgocall", "/bin/ls"),
            ("runtime.cgocall", "/bin/ls"),
            ("main._cgo_cmalloc", "/bin/ls"),
            ("main._Cfunc_CString", "/bin/ls"),
            ("main.handleRequest", "/bin/ls"),
            ("main.serveLoop", "/bin/ls"),
        ]);
        let c = CodeOwner::default().culprit(&refs(&f));
        assert_eq!(c.caller_name(), "main.handleRequest");
        assert_eq!(c.via.as_deref(), Some("C.CString"));
        assert_eq!(
            c.site.unwrap().function.as_deref(),
            Some("main.handleRequest")
        );

        let c_prog = frames(&[
            ("sqlite3MemMalloc", "/usr/lib/libsqlite3.so"),
            ("sqlite3_malloc", "/usr/lib/libsqlite3.so"),
            ("load_rows", "/usr/bin/tool"),
            ("main", "/usr/bin/tool"),
        ]);
        let owner = CodeOwner {
            main_module: None,
            exe_paths: vec!["/usr/bin/tool".into()],
        };
        let c = owner.culprit(&refs(&c_prog));
        assert_eq!(c.caller_name(), "load_rows");
        assert_eq!(c.rule, CallerRule::Executable);
        assert_eq!(c.via.as_deref(), Some("sqlite3_malloc"));
        assert_eq!(
            c.site.unwrap().function.as_deref(),
            Some("sqlite3MemMalloc")
        );
    }
}
