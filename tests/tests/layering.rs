//! Issue 15 DW3: no import cycle between the interposer's modules.
//!
//! Data flows one way (hooks → tables → dumps), and `lifecycle` is the composition root: it
//! may use everything, nothing may use it. The check reads interposer/src the way a person
//! would: every `crate::a::b` path, `use crate::{…}` group and `super::x` path in a file is an
//! edge from that file's module to the deepest module the path names; then any strongly
//! connected component of more than one module is a cycle. Comments are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Module path of a source file relative to src/: `stack/modules.rs` → `stack::modules`,
/// `dump/mod.rs` → `dump`, `lib.rs` → ``.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a file names, as segment lists (relative to the crate root).
fn paths_in(src: &str, module: &str) -> Vec<Vec<String>> {
    let parent: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect::<Vec<_>>()
        .split_last()
        .map(|(_, p)| p.to_vec())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = src;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let item = item.split(" as ").next().unwrap_or("").trim();
                    if !item.is_empty() {
                        let mut p = base.clone();
                        p.extend(item.split("::").map(|s| s.trim().to_string()));
                        out.push(p);
                    }
                }
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut p = base.clone();
            p.extend(
                path.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            out.push(p);
        }
    }
    out
}

fn graph_of(files: &BTreeMap<String, String>) -> Graph {
    let modules: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    let resolve = |p: &[String]| -> Option<String> {
        (1..=p.len())
            .rev()
            .map(|n| p[..n].join("::"))
            .find(|m| modules.contains(m.as_str()))
    };
    let mut g = Graph::new();
    for (module, src) in files {
        let edges = g.entry(module.clone()).or_default();
        for p in paths_in(&strip_comments(src), module) {
            if let Some(target) = resolve(&p) {
                let inside = module.starts_with(&format!("{target}::"));
                if &target != module && !inside && !target.is_empty() {
                    edges.insert(target);
                }
            }
        }
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn read_sources(root: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).unwrap();
                files.insert(module_of(rel), std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    files
}

#[test]
fn the_checker_sees_a_cycle_and_what_is_not_one() {
    let files: BTreeMap<String, String> = [
        ("a", "use crate::b::thing; // crate::c is only a comment"),
        ("b", "fn f() { crate::a::g(); }"),
        ("c", "use crate::{a, b::x};"),
        ("d::e", "use super::f::y;"),
        ("d::f", "fn z() {}"),
    ]
    .into_iter()
    .map(|(m, s)| (m.to_string(), s.to_string()))
    .collect();
    let g = graph_of(&files);
    assert_eq!(g["c"], BTreeSet::from(["a".to_string(), "b".to_string()]));
    assert_eq!(g["d::e"], BTreeSet::from(["d::f".to_string()]));
    assert!(g["a"].iter().all(|t| t != "c"), "comments are not edges");
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".to_string()]]);
}

#[test]
fn interposer_modules_have_no_import_cycle() {
    let root = offheap_tests::workspace_root().join("interposer/src");
    let files = read_sources(&root);
    assert!(
        files.contains_key("lifecycle") && files.contains_key("stack::modules"),
        "read the interposer's sources: {:?}",
        files.keys().collect::<Vec<_>>()
    );
    let g = graph_of(&files);
    let found = cycles(&g);
    let explain: Vec<String> = found
        .iter()
        .map(|comp| {
            comp.iter()
                .map(|m| {
                    let inside: Vec<&String> = g[m].iter().filter(|t| comp.contains(t)).collect();
                    format!("  {m} -> {inside:?}")
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles in interposer/src:\n{}",
        explain.join("\n\n")
    );
    // The composition root is used by nobody.
    let users: Vec<&String> = g
        .iter()
        .filter(|(_, targets)| targets.contains("lifecycle"))
        .map(|(m, _)| m)
        .collect();
    assert!(users.is_empty(), "modules that use lifecycle: {users:?}");
}
