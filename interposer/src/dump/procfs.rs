//! The kernel's view of the process: memory figures and mappings nobody told us about.

use offheap_format::schema::{ProcessMem, Untracked};

/// The kernel's figures from `/proc/self/status`, and its count of live threads.
pub fn process_memory() -> (ProcessMem, u64) {
    let mut p = ProcessMem::default();
    let mut threads = 0;
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for (key, slot) in [
            ("VmRSS:", &mut p.rss_bytes),
            ("RssAnon:", &mut p.anon_bytes),
            ("RssFile:", &mut p.file_bytes),
            ("RssShmem:", &mut p.shmem_bytes),
            ("VmSize:", &mut p.vm_bytes),
        ] {
            if let Some(v) = kb_field(&status, key) {
                *slot = v;
            }
        }
        threads = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
    }
    (p, threads)
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let v: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(v * 1024)
}

/// Resident bytes of our own mappings, from /proc/self/smaps (a VMA the kernel merged with
/// a neighbour is counted in proportion to our share of it).
pub fn own_resident_bytes(own: &[(u64, u64)]) -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut share = 0.0f64;
    let mut total = 0.0f64;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if !first.ends_with(':') {
            share = 0.0;
            if let Some((lo, hi)) = first.split_once('-') {
                if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16))
                {
                    let covered: u64 = own
                        .iter()
                        .map(|&(a, b)| b.min(hi).saturating_sub(a.max(lo)))
                        .sum();
                    if hi > lo {
                        share = covered as f64 / (hi - lo) as f64;
                    }
                }
            }
        } else if share > 0.0 && first == "Rss:" {
            if let Some(kb) = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
            {
                total += share * (kb * 1024) as f64;
            }
        }
    }
    total as u64
}

struct Mapping<'a> {
    lo: u64,
    hi: u64,
    perms: &'a str,
    inode: &'a str,
    name: &'a str,
}

fn parse_maps(text: &str) -> Vec<Mapping<'_>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(_off), Some(_dev), Some(inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let name = it.next().unwrap_or("").trim();
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            continue;
        };
        out.push(Mapping {
            lo,
            hi,
            perms,
            inode,
            name,
        });
    }
    out
}

const GLIBC_HEAP_MAX: u64 = 64 << 20;

/// Anonymous, accessible mappings that no tracked call created (see docs/dump-format.md).
/// `tracked` is sorted by start; `big_blocks` are live malloc blocks of 128 KiB and more,
/// which glibc maps itself.
pub fn untracked(tracked: &[(u64, u64)], own: &[(u64, u64)], big_blocks: &[u64]) -> Untracked {
    let mut excluded: Vec<(u64, u64)> = tracked.to_vec();
    excluded.extend_from_slice(own);
    excluded.sort_unstable();
    let Ok(text) = std::fs::read_to_string("/proc/self/maps") else {
        return Untracked::default();
    };
    let maps = parse_maps(&text);
    let mut ranges: Vec<(u64, u64, String)> = Vec::new();
    for (i, m) in maps.iter().enumerate() {
        let anonymous = m.inode == "0"
            && (m.name.is_empty() || (m.name.starts_with("[anon:") && m.name != "[anon:offheap]"));
        if !anonymous || m.perms.starts_with("---") {
            continue;
        }
        let prev = i.checked_sub(1).and_then(|j| maps.get(j));
        let next = maps.get(i + 1);
        // The .bss of an image: anonymous memory right after its file-backed data.
        if prev.is_some_and(|p| p.hi == m.lo && p.inode != "0") {
            continue;
        }
        // A thread stack: read-write directly above a PROT_NONE guard page.
        if prev.is_some_and(|p| p.hi == m.lo && p.perms.starts_with("---") && p.inode == "0") {
            continue;
        }
        // A glibc malloc arena heap: 64 MiB aligned, the rest of its reservation PROT_NONE.
        if m.lo % GLIBC_HEAP_MAX == 0
            && (m.hi - m.lo == GLIBC_HEAP_MAX
                || next.is_some_and(|n| n.lo == m.hi && n.perms.starts_with("---")))
        {
            continue;
        }
        // A glibc-mmapped malloc chunk that is live in our table (header of 16 bytes).
        let chunk_ptr = m.lo + 16;
        if big_blocks.binary_search(&chunk_ptr).is_ok() {
            continue;
        }
        for (lo, hi) in subtract(m.lo, m.hi, &excluded) {
            ranges.push((lo, hi, m.perms.to_string()));
        }
    }
    let bytes: u64 = ranges.iter().map(|(lo, hi, _)| hi - lo).sum();
    let count = ranges.len() as u64;
    ranges.sort_by(|a, b| (b.1 - b.0).cmp(&(a.1 - a.0)).then(a.0.cmp(&b.0)));
    ranges.truncate(256);
    Untracked {
        count,
        bytes,
        resident_bytes: 0,
        ranges: ranges.into(),
    }
}

/// The parts of [lo, hi) not covered by any of the sorted `excluded` ranges.
fn subtract(lo: u64, hi: u64, excluded: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut cursor = lo;
    let first = excluded.partition_point(|&(_, end)| end <= lo);
    for &(s, end) in excluded.get(first..).unwrap_or(&[]) {
        if s >= hi {
            break;
        }
        if end <= cursor {
            continue;
        }
        if s > cursor {
            out.push((cursor, s.min(hi)));
        }
        cursor = cursor.max(end);
        if cursor >= hi {
            break;
        }
    }
    if cursor < hi {
        out.push((cursor, hi));
    }
    out
}
