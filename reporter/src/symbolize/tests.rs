//! Symbolization against real Go binaries built by the machine's `go` (full DWARF, and
//! stripped with `-ldflags=-s -w` where only `.gopclntab` is left).

use super::*;
use std::path::PathBuf;
use std::process::Command;

const PROG: &str = r#"package main

import "fmt"

//go:noinline
func leaker(n int) []byte {
	b := make([]byte, n)
	fmt.Sprint(len(b))
	return b
}

func main() {
	fmt.Println(len(leaker(10)))
}
"#;

const CGO_PROG: &str = r#"package main

/*
#include <stdlib.h>
static void *grab(size_t n) { return malloc(n); }
*/
import "C"

import "fmt"

//go:noinline
func leaker(n int) {
	p := C.grab(C.size_t(n))
	fmt.Println(p != nil)
}

func main() {
	leaker(10)
}
"#;

fn go_build(dir: &std::path::Path, name: &str, ldflags: &str) -> PathBuf {
    go_build_src(dir, name, ldflags, PROG, false)
}

fn go_build_src(dir: &std::path::Path, name: &str, ldflags: &str, src: &str, cgo: bool) -> PathBuf {
    std::fs::write(dir.join("main.go"), src).unwrap();
    std::fs::write(dir.join("go.mod"), "module symtest\n\ngo 1.20\n").unwrap();
    let out = dir.join(name);
    let mut c = Command::new("go");
    c.arg("build").arg("-o").arg(&out);
    if !ldflags.is_empty() {
        c.arg(format!("-ldflags={ldflags}"));
    }
    let st = c
        .current_dir(dir)
        .env("CGO_ENABLED", if cgo { "1" } else { "0" })
        .output()
        .expect("go is installed on this machine");
    assert!(
        st.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

/// Entry of a function by name, from the symbol table of an unstripped build.
fn symbol_addr(path: &std::path::Path, name: &str) -> u64 {
    let data = std::fs::read(path).unwrap();
    let f = object::File::parse(&*data).unwrap();
    f.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
        .unwrap_or_else(|| panic!("{name} not in symtab"))
}

fn text_range(path: &std::path::Path) -> (u64, u64) {
    let data = std::fs::read(path).unwrap();
    let f = object::File::parse(&*data).unwrap();
    let t = f.section_by_name(".text").unwrap();
    (t.address(), t.address() + t.size())
}

fn build_id_of(path: &std::path::Path) -> Option<String> {
    let data = std::fs::read(path).unwrap();
    let f = object::File::parse(&*data).unwrap();
    f.build_id().ok().flatten().map(hex)
}

fn module(path: &std::path::Path, build_id: Option<String>) -> Module {
    Module {
        path: path.display().to_string(),
        build_id,
        base: 0,
        ranges: vec![text_range(path)].into(),
    }
}

#[test]
fn go_binaries_full_dwarf_and_stripped_pclntab() {
    let tmp = tempfile::tempdir().unwrap();
    let full = go_build(tmp.path(), "full", "");
    let stripped = go_build(tmp.path(), "stripped", "-s -w");
    let leaker = symbol_addr(&full, "main.leaker");
    let main_main = symbol_addr(&full, "main.main");

    // The pclntab parser on the stripped binary (same code layout as the full build).
    let data = std::fs::read(&stripped).unwrap();
    let f = object::File::parse(&*data).unwrap();
    assert!(
        f.section_by_name(".debug_info").is_none(),
        "-w keeps no DWARF"
    );
    let sec = f.section_by_name(".gopclntab").expect(".gopclntab");
    let raw = sec.uncompressed_data().unwrap().into_owned();
    let magic = u32::from_le_bytes(raw[0..4].try_into().unwrap());
    assert_eq!(magic, pclntab::MAGIC_120, "Go 1.20+ layout");
    let text = f.section_by_name(".text").map(|s| s.address());
    let t = pclntab::Pclntab::parse(raw, text).expect("pclntab parses");
    assert!(t.len() > 100);
    let names: Vec<String> = t.functions().map(|f| f.1).collect();
    for want in [
        "main.main",
        "main.leaker",
        "runtime.goexit",
        "runtime.mallocgc",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing");
    }
    // Mid-function lookups resolve to the function, with its file and a plausible line.
    let g = t.lookup(leaker + 8).expect("main.leaker found");
    assert_eq!(g.name, "main.leaker");
    assert_eq!(g.entry, leaker);
    assert!(g.file.as_deref().unwrap().ends_with("main.go"), "{g:?}");
    let line = g.line.unwrap();
    assert!((5..=10).contains(&line), "line {line}");
    assert_eq!(t.lookup(main_main).unwrap().name, "main.main");
    assert!(t.lookup(0x10).is_none());
    // Corrupt tables are refused, not trusted.
    assert!(pclntab::Pclntab::parse(vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8], None).is_none());
    assert!(pclntab::Pclntab::parse(vec![1, 2, 3], None).is_none());

    // Through the symbolizer: DWARF for the full build (return address → call line).
    let mut s = Symbolizer::new(
        &[module(&full, build_id_of(&full))],
        &BinarySearch::default(),
    );
    let fr = s.symbolize(leaker + 20);
    let last = fr.last().unwrap();
    assert_eq!(last.function.as_deref(), Some("main.leaker"));
    assert!(last.go);
    assert!(last.file.as_deref().unwrap().ends_with("main.go"));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);

    // Stripped: .gopclntab gives names (and here lines too).
    let mut s = Symbolizer::new(
        &[module(&stripped, build_id_of(&stripped))],
        &BinarySearch::default(),
    );
    let fr = s.symbolize(leaker + 20);
    assert_eq!(fr[0].function.as_deref(), Some("main.leaker"));
    assert!(fr[0].go);

    // A build-id mismatch is reported and never symbolized.
    let mut s = Symbolizer::new(
        &[module(&full, Some("00112233".into()))],
        &BinarySearch::default(),
    );
    let fr = s.symbolize(leaker + 20);
    assert_eq!(fr[0].function, None);
    assert_eq!(fr[0].display_name(), "?? (build-id mismatch)");
    assert_eq!(s.warnings.len(), 1);
    assert!(
        s.warnings[0].contains("build-id mismatch"),
        "{}",
        s.warnings[0]
    );

    // An address in no module, and a missing file.
    assert_eq!(s.symbolize(1).as_ref()[0].display_name(), "?? (no module)");
    let mut s = Symbolizer::new(
        &[Module {
            path: "/nonexistent/app".into(),
            build_id: None,
            base: 0,
            ranges: vec![(0x1000, 0x2000)].into(),
        }],
        &BinarySearch::default(),
    );
    assert_eq!(
        s.symbolize(0x1234).as_ref()[0].display_name(),
        "?? (module not readable)"
    );
}

/// cgo binaries are linked externally; their pclntab header has textStart 0 and the text base
/// must come from moduledata. The C function has no pclntab entry but a symtab one when
/// unstripped.
#[test]
fn stripped_cgo_binary_resolves_go_functions() {
    let tmp = tempfile::tempdir().unwrap();
    let full = go_build_src(tmp.path(), "full", "", CGO_PROG, true);
    let stripped = go_build_src(tmp.path(), "stripped", "-s -w", CGO_PROG, true);
    let mut s = Symbolizer::new(
        &[module(&stripped, build_id_of(&stripped))],
        &BinarySearch::default(),
    );
    for name in [
        "main.leaker",
        "main.main",
        "runtime.cgocall",
        "runtime.asmcgocall",
    ] {
        let addr = symbol_addr(&full, name);
        let fr = s.symbolize(addr + 6);
        assert_eq!(fr[0].function.as_deref(), Some(name), "{fr:?}");
    }
    let mut s = Symbolizer::new(
        &[module(&full, build_id_of(&full))],
        &BinarySearch::default(),
    );
    // The C wrapper cgo generates (`_cgo_<hash>_Cfunc_grab`), from gcc's DWARF.
    let data = std::fs::read(&full).unwrap();
    let f = object::File::parse(&*data).unwrap();
    let wrapper = f
        .symbols()
        .find(|s| {
            s.name()
                .is_ok_and(|n| n.starts_with("_cgo_") && n.ends_with("_Cfunc_grab"))
        })
        .expect("C wrapper symbol");
    let want = wrapper.name().unwrap().to_string();
    let fr = s.symbolize(wrapper.address() + 2);
    assert_eq!(fr.last().unwrap().function.as_deref(), Some(want.as_str()));
    assert!(!fr.last().unwrap().go);
}

#[test]
fn c_symbols_from_symtab_and_dwarf() {
    // This test binary itself: Rust with DWARF; the symbolizer must name this function.
    let exe = std::env::current_exe().unwrap();
    let data = std::fs::read(&exe).unwrap();
    let f = object::File::parse(&*data).unwrap();
    let is_pie = f.kind() == object::ObjectKind::Dynamic;
    let sym = f
        .symbols()
        .find(|s| {
            s.name().is_ok_and(|n| {
                n.contains("c_symbols_from_symtab_and_dwarf") && !n.contains("closure")
            })
        })
        .expect("own symbol");
    // Find our load bias from /proc/self/maps when PIE.
    let base = if is_pie {
        let here = c_symbols_from_symtab_and_dwarf as *const () as u64;
        here - sym.address()
    } else {
        0
    };
    let (lo, hi) = (sym.address() + base, sym.address() + base + sym.size());
    let m = Module {
        path: exe.display().to_string(),
        build_id: f.build_id().ok().flatten().map(hex),
        base,
        ranges: vec![(lo, hi)].into(),
    };
    let mut s = Symbolizer::new(&[m], &BinarySearch::default());
    let fr = s.symbolize(lo + 4);
    let name = fr.last().unwrap().function.clone().unwrap();
    assert!(name.contains("c_symbols_from_symtab_and_dwarf"), "{name}");
}
