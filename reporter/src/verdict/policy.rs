//! Gatekeeping for pipelines: LSan-style suppressions and `--fail-on` policies.
//!
//! Suppressions hide known stacks from verdict-based decisions (the stacks are still listed,
//! marked suppressed) so that a staging job can fail on new leaks only.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// `leak:<pattern>` lines; the pattern is a substring of a frame's function name (file and
/// module names are not matched: a pattern naming a file would silently hide every stack
/// passing through it).
#[derive(Debug, Default, Clone)]
pub struct Suppressions {
    pub patterns: Vec<String>,
}

impl Suppressions {
    pub fn parse(text: &str) -> Result<Suppressions> {
        let mut patterns = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some(("leak", pat)) if !pat.trim().is_empty() => {
                    patterns.push(pat.trim().to_string())
                }
                _ => bail!(
                    "line {}: expected `leak:<pattern>` or a `#` comment, got {line:?}",
                    i + 1
                ),
            }
        }
        Ok(Suppressions { patterns })
    }

    pub fn load(path: &Path) -> Result<Suppressions> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read suppressions {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("suppressions {}", path.display()))
    }

    /// Every pattern matching one of the given strings, in file order.
    pub fn all_matching(&self, strings: &[&str]) -> Vec<&str> {
        self.patterns
            .iter()
            .filter(|p| strings.iter().any(|s| s.contains(p.as_str())))
            .map(String::as_str)
            .collect()
    }

    /// The first pattern matching any of the given strings.
    pub fn matches<'a, I: IntoIterator<Item = &'a str>>(&self, strings: I) -> Option<&str> {
        if self.patterns.is_empty() {
            return None;
        }
        for s in strings {
            if let Some(p) = self.patterns.iter().find(|p| s.contains(p.as_str())) {
                return Some(p);
            }
        }
        None
    }
}

/// A `--fail-on` policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailOn {
    /// Any (unsuppressed) stack with verdict `leak`.
    Leak,
    /// Any leak growing faster than this many bytes per second.
    LeakRate(f64),
    /// Any suspect stack (leak or growing) holding more than this many bytes.
    Bytes(f64),
}

impl std::str::FromStr for FailOn {
    type Err = String;
    fn from_str(s: &str) -> Result<FailOn, String> {
        let s = s.trim();
        if s == "leak" {
            return Ok(FailOn::Leak);
        }
        if let Some(n) = s.strip_prefix("leak-rate>") {
            return parse_size(n).map(FailOn::LeakRate);
        }
        if let Some(n) = s.strip_prefix("bytes>") {
            return parse_size(n).map(FailOn::Bytes);
        }
        Err(format!(
            "unknown policy {s:?}: use `leak`, `leak-rate>N` or `bytes>N` (N accepts K/M/G)"
        ))
    }
}

/// `123`, `4K`, `1.5M`, `2G` (binary multiples; a trailing `B`, `iB` or `/s` is accepted).
pub fn parse_size(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1024.0),
        Some('m' | 'M') => (&t[..t.len() - 1], 1024.0 * 1024.0),
        Some('g' | 'G') => (&t[..t.len() - 1], 1024.0 * 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?} (examples: 4096, 64K, 1.5M, 2G)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("not a size: {s:?}"));
    }
    Ok(v * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_policies() {
        assert_eq!(parse_size("4096").unwrap(), 4096.0);
        assert_eq!(parse_size("64K").unwrap(), 65536.0);
        assert_eq!(parse_size("1.5M").unwrap(), 1.5 * 1048576.0);
        assert_eq!(parse_size("2GiB").unwrap(), 2.0 * 1073741824.0);
        assert!(parse_size("x").is_err());
        assert_eq!("leak".parse::<FailOn>().unwrap(), FailOn::Leak);
        assert_eq!(
            "leak-rate>1K".parse::<FailOn>().unwrap(),
            FailOn::LeakRate(1024.0)
        );
        assert_eq!(
            "bytes>10M".parse::<FailOn>().unwrap(),
            FailOn::Bytes(10485760.0)
        );
        assert!("foo".parse::<FailOn>().is_err());
    }

    #[test]
    fn suppressions() {
        let s = Suppressions::parse("# known\nleak:libfoo.so\n\nleak:main.cache\n").unwrap();
        assert_eq!(s.patterns, vec!["libfoo.so", "main.cache"]);
        assert_eq!(s.matches(["x", "main.cacheFill"]), Some("main.cache"));
        assert_eq!(s.matches(["main.other"]), None);
        assert!(Suppressions::parse("race:x").is_err());
    }
}
