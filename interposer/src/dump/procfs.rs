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

/// When task `tid` of this process is a zombie (state `Z`: a thread group leader that ended
/// while other threads ran stays one until the group ends), the status it left with, as
/// `waitpid` reports it (stat field 52, `exit_code`).
pub fn zombie_task_status(tid: u32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields from the third on follow the command name, which may hold spaces and ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    if fields.next()? != "Z" {
        return None;
    }
    // Field 3 was the state; field 52 is 49 further.
    fields.nth(48)?.parse().ok()
}
