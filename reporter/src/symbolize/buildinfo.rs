//! A small reader of Go's `.go.buildinfo`: the toolchain version, the main module's path and
//! the dependency list, which decide what "your code" is in a report.
//!
//! Layout (Go 1.18 and later, unchanged through 1.27): a 32-byte header starting with the magic
//! `\xff Go buildinf:`, then byte 14 the pointer size and byte 15 flags; flag bit 1 means the
//! strings follow inline: a uvarint length and the version string, a uvarint length and the
//! module information. The module information is wrapped in 16-byte sentinels and holds
//! tab-separated lines: `path <main package>`, `mod <module> <version> <sum>`, `dep <module>
//! <version> <sum>`, `=> <replacement> <version> <sum>` (replaces the line before) and
//! `build <key>=<value>`. Older binaries store pointers instead of strings; they are reported
//! as unsupported, and the report falls back to package `main`.

use object::{Object, ObjectSection};

const MAGIC: &[u8] = b"\xff Go buildinf:";
const FLAG_INLINE_STRINGS: u8 = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildInfo {
    /// `go1.26.8`.
    pub go_version: String,
    /// The main package's import path (`example.com/svc/cmd/svc`).
    pub path: String,
    /// The main module's path; empty when built outside module mode.
    pub main_module: String,
    /// Dependencies as (module path, version), after replacements.
    pub deps: Vec<(String, String)>,
}

/// Reads the build information of a Go executable file.
pub fn read_file(path: &std::path::Path) -> Result<BuildInfo, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let section = object::File::parse(&*data).ok().and_then(|f| {
        f.section_by_name(".go.buildinfo")
            .and_then(|s| s.data().ok().map(|d| d.to_vec()))
    });
    match section {
        Some(s) => parse(&s),
        // Section headers stripped: the blob is 16-byte aligned somewhere in the data.
        None => (0..data.len().saturating_sub(32))
            .step_by(16)
            .find(|&i| data[i..].starts_with(MAGIC))
            .map(|i| parse(&data[i..]))
            .unwrap_or_else(|| Err("no .go.buildinfo (not a Go executable)".into())),
    }
}

/// Parses the blob at the start of `.go.buildinfo`.
pub fn parse(blob: &[u8]) -> Result<BuildInfo, String> {
    if !blob.starts_with(MAGIC) || blob.len() < 32 {
        return Err("no Go build information magic".into());
    }
    if blob[15] & FLAG_INLINE_STRINGS == 0 {
        return Err(
            "build information of a Go release before 1.18 (pointer layout): not supported".into(),
        );
    }
    let mut rest = &blob[32..];
    let version = take_string(&mut rest).ok_or("truncated version string")?;
    let modinfo = take_string(&mut rest).ok_or("truncated module information")?;
    let mut info = parse_modinfo(strip_sentinels(modinfo));
    info.go_version = String::from_utf8_lossy(version).into_owned();
    Ok(info)
}

fn take_string<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, used) = uvarint(rest)?;
    let len = usize::try_from(len).ok()?;
    let s = rest.get(used..used.checked_add(len)?)?;
    *rest = &rest[used + len..];
    Some(s)
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The module information sits between two 16-byte sentinels (the one at the end follows a
/// newline).
fn strip_sentinels(m: &[u8]) -> &[u8] {
    if m.len() >= 33 && m[m.len() - 17] == b'\n' {
        &m[16..m.len() - 16]
    } else {
        m
    }
}

fn parse_modinfo(m: &[u8]) -> BuildInfo {
    let text = String::from_utf8_lossy(m);
    let mut info = BuildInfo::default();
    let mut last_was_dep = false;
    for line in text.lines() {
        let mut f = line.split('\t');
        match (f.next(), f.next(), f.next()) {
            (Some("path"), Some(p), _) => info.path = p.to_string(),
            (Some("mod"), Some(p), _) => {
                info.main_module = p.to_string();
                last_was_dep = false;
            }
            (Some("dep"), Some(p), v) => {
                info.deps.push((p.to_string(), v.unwrap_or("").to_string()));
                last_was_dep = true;
            }
            (Some("=>"), Some(p), v) if last_was_dep => {
                if let Some(d) = info.deps.last_mut() {
                    *d = (p.to_string(), v.unwrap_or("").to_string());
                }
            }
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(version: &str, modinfo: &str, flags: u8) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(flags);
        b.resize(32, 0);
        for s in [version.as_bytes(), modinfo.as_bytes()] {
            let mut n = s.len();
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                b.push(if n > 0 { byte | 0x80 } else { byte });
                if n == 0 {
                    break;
                }
            }
            b.extend_from_slice(s);
        }
        b
    }

    #[test]
    fn parses_inline_strings_with_sentinels_and_replacements() {
        let body = "path\texample.com/svc/cmd/svc\nmod\texample.com/svc\t(devel)\t\n\
                    dep\tgithub.com/DataDog/zstd\tv1.5.5\th1:x=\n\
                    dep\tgithub.com/linxGnu/grocksdb\tv1.8.0\th1:y=\n\
                    =>\t../grocksdb\t(devel)\t\nbuild\t-compiler=gc\n";
        let modinfo = format!("{}{body}{}", "0".repeat(16), "1".repeat(16));
        let info = parse(&blob("go1.26.8", &modinfo, 2)).unwrap();
        assert_eq!(info.go_version, "go1.26.8");
        assert_eq!(info.path, "example.com/svc/cmd/svc");
        assert_eq!(info.main_module, "example.com/svc");
        assert_eq!(
            info.deps,
            vec![
                ("github.com/DataDog/zstd".to_string(), "v1.5.5".to_string()),
                ("../grocksdb".to_string(), "(devel)".to_string())
            ]
        );
        assert!(parse(&blob("go1.17", "", 0))
            .unwrap_err()
            .contains("before 1.18"));
        assert!(parse(b"nothing here at all, not even a magic").is_err());
        // A length running past the end is refused, never read out of bounds.
        let mut cut = blob("go1.26.8", &modinfo, 2);
        cut.truncate(40);
        assert!(parse(&cut).is_err());
    }

    /// Builds a module with `go` (`gotoolchain` for GOTOOLCHAIN, None for a Go without it)
    /// and reads its build information; None when that toolchain is not installed.
    fn built_by(go: &str, gotoolchain: Option<&str>) -> Option<BuildInfo> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.go"), "package main\nfunc main(){}\n").unwrap();
        std::fs::write(
            dir.path().join("go.mod"),
            "module example.com/bi\ngo 1.19\n",
        )
        .unwrap();
        let mut c = std::process::Command::new(go);
        c.args(["build", "-o", "bi"]).current_dir(dir.path());
        match gotoolchain {
            Some(t) => c.env("GOTOOLCHAIN", t),
            None => c.env_remove("GOTOOLCHAIN"),
        };
        let ok = c.output().map(|o| o.status.success()).unwrap_or(false);
        if !ok {
            eprintln!("SKIP: {go} (GOTOOLCHAIN={gotoolchain:?}) cannot build here");
            return None;
        }
        Some(read_file(&dir.path().join("bi")).unwrap())
    }

    #[test]
    fn reads_binaries_of_the_go_releases_in_use() {
        let machine = built_by("go", Some("local")).expect("the machine's go builds");
        assert_eq!(machine.main_module, "example.com/bi");
        assert_eq!(machine.path, "example.com/bi");
        assert!(
            machine.go_version.starts_with("go1."),
            "{}",
            machine.go_version
        );
        // Debian's golang-1.19-go and go1.27.3 from the module proxy, where installed (the
        // real-process suite requires them in CI).
        for (go, tc, version) in [
            ("/usr/lib/go-1.19/bin/go", None, "go1.19"),
            ("go", Some("go1.27.3"), "go1.27.3"),
        ] {
            if let Some(info) = built_by(go, tc) {
                assert!(info.go_version.starts_with(version), "{}", info.go_version);
                assert_eq!(info.main_module, "example.com/bi");
            }
        }
    }
}
