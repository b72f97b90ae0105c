//! Issue 12 "Done when 1", the reporter's bounds that are not timings: on bench/manystacks.c
//! (131,072 distinct stacks, one 32-byte block each) the default text report's first screen
//! has one line for the allocation site holding the 4 MiB in 131,072 blocks, and the default
//! JSON report stays far below 50 MB. (bench/reporter_scale.sh measures the times.)

use std::time::Duration;

use offheap_tests::*;

#[test]
fn one_line_for_131072_call_paths_into_one_site() {
    let tmp = TempDir::new("report-scale");
    let src = workspace_root().join("bench/manystacks.c");
    let exe = cc(
        tmp.path(),
        "manystacks",
        &[src],
        &["-O2", "-g", "-fno-optimize-sibling-calls"],
    );
    let dir = tmp.subdir("dumps");
    run(Cmd::new(&exe)
        .offheap(&dir)
        .env("OFFHEAP_INTERVAL", "0")
        .timeout(Duration::from_secs(120)))
    .assert_success("manystacks with liboffheap");

    let text = run(Cmd::new(offheap_bin())
        .arg("report")
        .arg(&dir)
        .timeout(Duration::from_secs(120)));
    text.assert_success("offheap report (text)");
    let t = text.stdout_str();
    let first_screen: Vec<&str> = t.lines().take(24).collect();
    let site_lines: Vec<&&str> = first_screen.iter().filter(|l| l.contains("leaf")).collect();
    assert!(
        site_lines
            .iter()
            .any(|l| l.contains("4.0 MiB") && l.contains("131072  131072")),
        "no line for leaf's 4 MiB in 131,072 blocks and stacks on the first screen:\n{}",
        first_screen.join("\n")
    );

    let json = run(Cmd::new(offheap_bin())
        .args(["report", "--format", "json"])
        .arg(&dir)
        .timeout(Duration::from_secs(120)));
    json.assert_success("offheap report --format json");
    assert!(
        json.stdout.len() < 50 << 20,
        "default JSON is {} bytes",
        json.stdout.len()
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let site = &v["sites"]["groups"][0];
    assert_eq!(site["function"], "leaf", "{site}");
    assert_eq!(site["count"], 131072);
    assert_eq!(site["stacks"], 131072);
    assert!(v["stacks_omitted"].as_u64().unwrap() >= 131072);
}
