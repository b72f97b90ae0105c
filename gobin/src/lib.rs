//! What a Go executable says about itself, read from the file's bytes: its build information
//! (`.go.buildinfo`: toolchain version, main module, dependencies, `-race`) and its function
//! table (the ELF symbol table, or `.gopclntab` when the binary was stripped).
//!
//! Both the library (which finds the Go runtime's entry points to probe) and the reporter
//! (which names the user's code) read these; this crate is the one definition. Every read is
//! bounds-checked: a corrupt or foreign file gives `None` or an error, never a panic.
//!
//! Modules: `buildinfo` reads `.go.buildinfo`; `pclntab` the runtime's pc → function table;
//! [`functions`] finds a function's address by name, from whichever table the binary has.

pub mod buildinfo;
pub mod pclntab;

use object::{Object, ObjectSection, ObjectSymbol};

/// Where the function table of a Go binary lives: `.gopclntab`, or (go1.19 PIE) merged into
/// another section, found by its header.
fn pclntab_of<'a>(file: &object::File<'a>) -> Option<(u64, &'a [u8])> {
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(s) = file.section_by_name(name) {
            if let Ok(d) = s.data() {
                return Some((s.address(), d));
            }
        }
    }
    // Merged into .data.rel.ro (go1.19 PIE): the header is magic, two zero bytes, minLC 1,
    // pointer size 8, 8-byte aligned.
    let s = file.section_by_name(".data.rel.ro")?;
    let d = s.data().ok()?;
    let mut i = 0;
    while i + 8 <= d.len() {
        let head = d.get(i..i + 8)?;
        if (head == [0xf0, 0xff, 0xff, 0xff, 0, 0, 1, 8]
            || head == [0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8])
            && pclntab::Pclntab::parse(d.get(i..)?.to_vec(), Some(1)).is_some()
        {
            return Some((s.address() + i as u64, d.get(i..)?));
        }
        i += 8;
    }
    None
}

/// Finds `runtime.firstmoduledata` without symbols: it starts with a pointer to the pclntab
/// header followed by the `funcnametab` slice (pointer = header + funcnameOffset); its `text`
/// field sits 176 bytes in (Go 1.18+ layout: pcHeader, six slices, findfunctab, minpc, maxpc,
/// text). Externally linked binaries (every cgo binary) carry the link-time values in the
/// file, PIE included.
pub fn moduledata_text(file: &object::File, pcln_addr: u64, pcln: &[u8]) -> Option<u64> {
    if !file.is_64() || !file.is_little_endian() {
        return None;
    }
    let funcname_off = u64::from_le_bytes(pcln.get(8 + 3 * 8..8 + 4 * 8)?.try_into().ok()?);
    let want_names = pcln_addr.checked_add(funcname_off)?;
    let word = |d: &[u8], i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(d.get(i..i + 8)?.try_into().ok()?))
    };
    for sec in file.sections() {
        if matches!(
            sec.kind(),
            object::SectionKind::Text | object::SectionKind::UninitializedData
        ) {
            continue;
        }
        let Ok(d) = sec.data() else { continue };
        let mut i = 0;
        while i + 184 <= d.len() {
            if word(d, i) == Some(pcln_addr) && word(d, i + 8) == Some(want_names) {
                let text = word(d, i + 176)?;
                let minpc = word(d, i + 160)?;
                // text is the start of Go code and minpc its first function: both set.
                if text != 0 && minpc >= text {
                    return Some(text);
                }
            }
            i += 8;
        }
    }
    None
}

/// The function table of a Go executable, parsed.
pub fn function_table(data: &[u8]) -> Option<pclntab::Pclntab> {
    let file = object::File::parse(data).ok()?;
    let (addr, bytes) = pclntab_of(&file)?;
    let text = file
        .symbols()
        .find(|s| s.name() == Ok("runtime.text"))
        .map(|s| s.address())
        .or_else(|| moduledata_text(&file, addr, bytes));
    pclntab::Pclntab::parse(bytes.to_vec(), text)
}

/// Every function named `name` (file virtual addresses; one name may have several entries:
/// an assembly function and its ABI wrapper share the name in the function table). The
/// symbol table answers when present (`.abi0` suffixes stripped), else the function table.
pub fn functions(data: &[u8], name: &str) -> Vec<u64> {
    let Ok(file) = object::File::parse(data) else {
        return Vec::new();
    };
    let from_symbols: Vec<u64> = file
        .symbols()
        .filter(|s| {
            s.name()
                .is_ok_and(|n| n == name || n.strip_suffix(".abi0") == Some(name))
        })
        .map(|s| s.address())
        .filter(|&a| a != 0)
        .collect();
    if !from_symbols.is_empty() {
        return from_symbols;
    }
    match function_table(data) {
        Some(t) => t
            .functions()
            .filter(|(_, n)| n == name)
            .map(|(a, _)| a)
            .collect(),
        None => Vec::new(),
    }
}
