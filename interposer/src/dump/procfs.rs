//! The kernel's view of the process: memory figures and mappings nobody told us about.

use offheap_format::schema::ProcessMem;

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
