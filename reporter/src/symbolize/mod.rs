//! Offline symbolization of raw return addresses from the dump's module map.
//!
//! Sources, best first: DWARF through `addr2line` (inlined frames included; Go's zlib-compressed
//! sections are decompressed by `object`), then `.gopclntab` for Go code (stripped Go binaries
//! keep it because the runtime needs it), then the ELF symbol tables. Every frame is a return
//! address, so we look up `addr - 1`: the call instruction, not the line after it.
//!
//! A module whose file on disk has a different GNU build id than the dump recorded is never
//! symbolized (wrong names are worse than none): its frames read `?? (build-id mismatch)` and
//! one warning is emitted. Modules are loaded once and addresses cached, because thousands of
//! stacks share most of their frames.

// Reading a Go executable's own tables is shared with the library (its Go probes need the same
// function table and build information): one implementation, in offheap-gobin.
pub use offheap_gobin::{buildinfo, pclntab};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};
use offheap_format::schema::Module;
use pclntab::Pclntab;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

type Reader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// One symbolized frame. An address with inlined calls yields several, innermost first.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash)]
pub struct SymFrame {
    /// Function name, or `None` when unknown.
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Path of the module the address falls in.
    pub module: Option<String>,
    /// The raw return address from the dump.
    pub addr: u64,
    /// True when this frame was inlined into the next one (same address).
    pub inlined: bool,
    /// Why the frame could not be resolved, e.g. `build-id mismatch`.
    pub note: Option<String>,
    /// True for Go functions (Go source file, or found in `.gopclntab`).
    pub go: bool,
}

impl SymFrame {
    /// The name to show: the function, or `??` with the reason.
    pub fn display_name(&self) -> String {
        match (&self.function, &self.note) {
            (Some(f), _) => f.clone(),
            (None, Some(n)) => format!("?? ({n})"),
            (None, None) => "??".to_string(),
        }
    }

    /// `file:line` when known.
    pub fn location(&self) -> Option<String> {
        match (&self.file, self.line) {
            (Some(f), Some(l)) if l > 0 => Some(format!("{f}:{l}")),
            (Some(f), _) => Some(f.clone()),
            _ => None,
        }
    }
}

/// A PT_LOAD segment: file virtual address, size in memory, file offset.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
}

struct Loaded {
    /// The file actually read (the module's path, or one found on the binary search path).
    file: std::path::PathBuf,
    dwarf: Option<addr2line::Context<Reader>>,
    pclntab: Option<Pclntab>,
    /// (start, end, name), sorted by start.
    symbols: Vec<(u64, u64, String)>,
    segments: Vec<Segment>,
}

enum State {
    Loaded(Box<Loaded>),
    Unusable(String),
}

/// Where to look for module files that moved or were rebuilt since the run (`--binary`,
/// `OFFHEAP_BINARY_PATH`), like pprof's binary search path: each entry is a file (used when
/// its build id matches) or a directory searched for `<basename>`, `<build-id>/<basename>`
/// and `<build-id>`.
#[derive(Debug, Clone, Default)]
pub struct BinarySearch {
    pub paths: Vec<std::path::PathBuf>,
}

impl BinarySearch {
    /// `--binary` entries first, then the colon-separated `OFFHEAP_BINARY_PATH`.
    pub fn new(args: &[std::path::PathBuf]) -> BinarySearch {
        let mut paths = args.to_vec();
        if let Some(v) = std::env::var_os("OFFHEAP_BINARY_PATH") {
            paths.extend(std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()));
        }
        BinarySearch { paths }
    }

    /// Files to try for a module, the path it ran from first.
    fn candidates(&self, m: &Module) -> Vec<std::path::PathBuf> {
        let mut out = vec![std::path::PathBuf::from(&m.path)];
        let base = std::path::Path::new(&m.path).file_name();
        let id = m.build_id.as_deref().filter(|s| !s.is_empty());
        for p in &self.paths {
            if p.is_dir() {
                if let Some(b) = base {
                    out.push(p.join(b));
                    if let Some(id) = id {
                        out.push(p.join(id).join(b));
                    }
                }
                if let Some(id) = id {
                    out.push(p.join(id));
                }
            } else {
                out.push(p.clone());
            }
        }
        out
    }
}

/// Resolves addresses for one process's module map.
pub struct Symbolizer {
    modules: Vec<Module>,
    search: BinarySearch,
    states: HashMap<usize, State>,
    cache: HashMap<u64, Arc<Vec<SymFrame>>>,
    /// Warnings collected while loading modules (one per module).
    pub warnings: Vec<String>,
}

impl Symbolizer {
    pub fn new(modules: &[Module], search: &BinarySearch) -> Symbolizer {
        Symbolizer {
            modules: modules.to_vec(),
            search: search.clone(),
            states: HashMap::new(),
            cache: HashMap::new(),
            warnings: Vec::new(),
        }
    }

    /// The module holding `addr`, by its executable ranges.
    pub fn module_index(&self, addr: u64) -> Option<usize> {
        self.modules
            .iter()
            .position(|m| m.ranges.iter().any(|&(s, e)| addr >= s && addr < e))
    }

    pub fn modules(&self) -> &[Module] {
        &self.modules
    }

    /// The PT_LOAD segments of module `i` (empty when its file cannot be used).
    pub fn segments(&mut self, i: usize) -> Vec<Segment> {
        match self.state(i) {
            State::Loaded(l) => l.segments.clone(),
            State::Unusable(_) => Vec::new(),
        }
    }

    /// True when module `i` loaded (file present, build id matches).
    pub fn usable(&mut self, i: usize) -> bool {
        matches!(self.state(i), State::Loaded(_))
    }

    /// The file module `i` is symbolized from (None when no usable file was found).
    pub fn file_of(&mut self, i: usize) -> Option<std::path::PathBuf> {
        match self.state(i) {
            State::Loaded(l) => Some(l.file.clone()),
            State::Unusable(_) => None,
        }
    }

    /// Index of the module with this path.
    pub fn module_by_path(&self, path: &str) -> Option<usize> {
        self.modules.iter().position(|m| m.path == path)
    }

    fn state(&mut self, i: usize) -> &State {
        if !self.states.contains_key(&i) {
            let st = match load_module(&self.modules[i], &self.search) {
                Ok(l) => {
                    if l.file.as_os_str() != self.modules[i].path.as_str() {
                        self.warnings.push(format!(
                            "{}: symbolized from {} (same build id)",
                            self.modules[i].path,
                            l.file.display()
                        ));
                    }
                    State::Loaded(Box::new(l))
                }
                Err(why) => {
                    // Pseudo modules (linux-vdso.so.1) have no file: not worth a warning.
                    if self.modules[i].path.starts_with('/') {
                        self.warnings
                            .push(format!("{}: {why}", self.modules[i].path));
                    }
                    State::Unusable(why)
                }
            };
            self.states.insert(i, st);
        }
        &self.states[&i]
    }

    /// Symbolizes one return address; the result is innermost first.
    pub fn symbolize(&mut self, addr: u64) -> Arc<Vec<SymFrame>> {
        if let Some(c) = self.cache.get(&addr) {
            return c.clone();
        }
        let frames = Arc::new(self.resolve(addr));
        self.cache.insert(addr, frames.clone());
        frames
    }

    fn resolve(&mut self, addr: u64) -> Vec<SymFrame> {
        let Some(i) = self.module_index(addr) else {
            return vec![unknown(addr, None, "no module")];
        };
        let path = self.modules[i].path.clone();
        let base = self.modules[i].base;
        // Return address → call instruction; wrapping keeps a zero address from panicking.
        let probe = addr.wrapping_sub(1).wrapping_sub(base);
        let l = match self.state(i) {
            State::Unusable(why) => return vec![unknown(addr, Some(path), unusable_note(why))],
            State::Loaded(l) => l,
        };
        let mut out = l.dwarf_frames(probe, addr, &path);
        if out.iter().all(|f| f.function.is_none()) {
            if let Some(g) = l.pclntab_frame(probe, addr, &path) {
                out = vec![g];
            }
        }
        if out.is_empty() {
            out.push(bare(addr, Some(path.clone())));
        }
        // The outermost entry of an address is the real (non-inlined) function.
        if let Some(last) = out.last_mut() {
            last.inlined = false;
            if last.function.is_none() {
                last.function = lookup_symbol(&l.symbols, probe).map(|s| public_name(demangle(s)));
                if last.function.is_none() {
                    last.note = Some(format!("{}+{:#x}", short(&path), probe));
                }
            }
        }
        out
    }
}

impl Loaded {
    /// The DWARF frames at `probe`, inlined ones first, the outermost last.
    fn dwarf_frames(&self, probe: u64, addr: u64, path: &str) -> Vec<SymFrame> {
        let mut out = Vec::new();
        if let Some(ctx) = &self.dwarf {
            if let Ok(mut it) = ctx.find_frames(probe).skip_all_loads() {
                while let Ok(Some(f)) = it.next() {
                    let function = f
                        .function
                        .as_ref()
                        .and_then(|n| n.demangle().ok().map(|s| public_name(s.into_owned())));
                    let (file, line) = match &f.location {
                        Some(loc) => (loc.file.map(|s| s.to_string()), loc.line),
                        None => (None, None),
                    };
                    out.push(SymFrame {
                        go: file.as_deref().is_some_and(|f| f.ends_with(".go")),
                        function,
                        file,
                        line,
                        module: Some(path.to_string()),
                        addr,
                        inlined: true,
                        note: None,
                    });
                }
            }
        }
        out
    }

    /// The Go function at `probe` by the binary's pclntab, for Go code without DWARF.
    fn pclntab_frame(&self, probe: u64, addr: u64, path: &str) -> Option<SymFrame> {
        let g = self.pclntab.as_ref()?.lookup(probe)?;
        Some(SymFrame {
            function: Some(g.name),
            file: g.file,
            line: g.line,
            module: Some(path.to_string()),
            addr,
            inlined: false,
            note: None,
            go: true,
        })
    }
}

/// A frame of `addr` that nothing is known about yet.
fn bare(addr: u64, module: Option<String>) -> SymFrame {
    SymFrame {
        function: None,
        file: None,
        line: None,
        module,
        addr,
        inlined: false,
        note: None,
        go: false,
    }
}

/// A frame that cannot be symbolized, with the reason as its note.
fn unknown(addr: u64, module: Option<String>, note: &str) -> SymFrame {
    SymFrame {
        note: Some(note.to_string()),
        ..bare(addr, module)
    }
}

/// The short note for a module whose file cannot be used.
fn unusable_note(why: &str) -> &'static str {
    if why.starts_with("build-id mismatch") {
        "build-id mismatch"
    } else {
        "module not readable"
    }
}

fn short(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn demangle(name: &str) -> String {
    addr2line::demangle_auto(Cow::Borrowed(name), None).into_owned()
}

/// glibc's DWARF names its internal aliases `__GI_<name>` (hidden PLT-bypass symbols); users
/// and suppression files know the public name.
fn public_name(name: String) -> String {
    match name.strip_prefix("__GI_") {
        Some(rest) if !rest.is_empty() => rest.to_string(),
        _ => name,
    }
}

fn lookup_symbol(syms: &[(u64, u64, String)], addr: u64) -> Option<&str> {
    let idx = syms.partition_point(|s| s.0 <= addr);
    let (start, end, name) = syms.get(idx.checked_sub(1)?)?;
    (addr >= *start && addr < *end).then_some(name.as_str())
}

/// Lowercase hex of a byte string (how the dump writes build ids).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Text symbols as (address, size, name); sizes are turned into ends by the caller.
fn symbols_of(file: &object::File) -> Vec<(u64, u64, String)> {
    file.symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
        .filter(|s| !s.2.is_empty())
        .collect()
}

/// An addr2line context over the file's DWARF (decompressing SHF_COMPRESSED sections).
fn dwarf_of(file: &object::File) -> Option<addr2line::Context<Reader>> {
    file.section_by_name(".debug_info")?;
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<Reader, gimli::Error> {
        let bytes: Cow<[u8]> = file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[]));
        Ok(gimli::EndianArcSlice::new(Arc::from(&*bytes), endian))
    };
    gimli::Dwarf::load(load)
        .ok()
        .and_then(|d| addr2line::Context::from_dwarf(d).ok())
}

/// The first candidate file that is the module that ran; the error of the module's own path
/// when none is.
fn load_module(m: &Module, search: &BinarySearch) -> Result<Loaded, String> {
    let mut first_error = None;
    for (k, path) in search.candidates(m).into_iter().enumerate() {
        match load_file(m, &path) {
            Ok(l) => return Ok(l),
            Err(e) if k == 0 => first_error = Some(e),
            Err(_) => {}
        }
    }
    let e = first_error.unwrap_or_else(|| "cannot read module file".into());
    Err(if search.paths.is_empty() {
        format!("{e}; give the binary that ran with --binary PATH (or OFFHEAP_BINARY_PATH)")
    } else {
        format!("{e}; no file on the --binary/OFFHEAP_BINARY_PATH search path matches either")
    })
}

fn load_file(m: &Module, path: &std::path::Path) -> Result<Loaded, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read module file: {e}"))?;
    let file = object::File::parse(&*data).map_err(|e| format!("not a usable ELF file: {e}"))?;
    let have = file.build_id().ok().flatten().map(hex);
    check_build_id(m, have.as_deref())?;
    let segments = file
        .segments()
        .map(|s| Segment {
            vaddr: s.address(),
            memsz: s.size(),
            offset: s.file_range().0,
        })
        .collect();

    let debug_data = separate_debug_data(have.as_deref());
    let debug_file = debug_data
        .as_deref()
        .and_then(|d| object::File::parse(d).ok())
        .filter(|f| f.build_id().ok().flatten().map(hex) == have);

    let symbols = sorted_symbols(&file, debug_file.as_ref());
    let dwarf = dwarf_of(&file).or_else(|| debug_file.as_ref().and_then(dwarf_of));
    let pclntab = pclntab_of(&file);

    Ok(Loaded {
        file: path.to_path_buf(),
        dwarf,
        pclntab,
        symbols,
        segments,
    })
}

/// Refuses a file whose build id is not the one the dump recorded for the module.
fn check_build_id(m: &Module, have: Option<&str>) -> Result<(), String> {
    if let Some(want) = m.build_id.as_deref().filter(|s| !s.is_empty()) {
        let want = want.to_ascii_lowercase();
        if have != Some(want.as_str()) {
            return Err(format!(
                "build-id mismatch: the dump recorded {want}, the file on disk has {}; \
                 its frames are not symbolized (the file was rebuilt or replaced since the run)",
                have.unwrap_or("none")
            ));
        }
    }
    Ok(())
}

/// The bytes of the separate debug file for this build id, if one is installed.
fn separate_debug_data(have: Option<&str>) -> Option<Vec<u8>> {
    // Distribution packages keep DWARF and local symbols apart (e.g. libc6-dbg): the
    // separate file is found by build id, and only trusted through it.
    have.filter(|id| id.len() > 2)
        .map(|id| format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]))
        .and_then(|p| std::fs::read(p).ok())
}

/// The text symbols of the file and its debug file as (start, end, name), sorted by start.
fn sorted_symbols(
    file: &object::File,
    debug_file: Option<&object::File>,
) -> Vec<(u64, u64, String)> {
    let mut symbols = symbols_of(file);
    if let Some(df) = debug_file {
        symbols.extend(symbols_of(df));
    }
    symbols.sort_by_key(|a| (a.0, std::cmp::Reverse(a.1)));
    symbols.dedup_by_key(|s| s.0);
    // Symbols without a size (common in hand-written assembly) end at the next symbol.
    for i in 0..symbols.len() {
        if symbols[i].1 == 0 {
            let next = symbols.get(i + 1).map(|s| s.0).unwrap_or(symbols[i].0 + 1);
            symbols[i].1 = next - symbols[i].0;
        } else {
            symbols[i].1 += symbols[i].0;
        }
    }
    symbols
}

/// The Go pclntab of the file, when it is a Go binary.
fn pclntab_of(file: &object::File) -> Option<Pclntab> {
    let sec = [".gopclntab", ".data.rel.ro.gopclntab"]
        .iter()
        .find_map(|n| file.section_by_name(n))?;
    let data = sec.uncompressed_data().ok()?.into_owned();
    // The header's textStart is 0 in externally linked binaries (the runtime takes the
    // text base from moduledata): take it from runtime.text, else from moduledata.
    let text = file
        .symbols()
        .find(|s| s.name() == Ok("runtime.text"))
        .map(|s| s.address())
        .or_else(|| offheap_gobin::moduledata_text(file, sec.address(), &data));
    Pclntab::parse(data, text)
}

#[cfg(test)]
mod tests;
