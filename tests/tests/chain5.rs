//! examples/c/chain5.c: a known chain of five non-inlined functions compiled
//! `-O2 -fomit-frame-pointer -g` (issue 3 "Done when 3").
//!
//! The symbolized stack of the leaked blocks must be exactly
//! chain_level5 → chain_level4 → chain_level3 → chain_level2 → chain_level1
//! → main, innermost first, each with chain5.c and the line of its call
//! (the `@line` markers in the source), so return addresses were adjusted
//! to the call, and the walk (CFI only: no frame pointers) went all the way
//! out: the dump marks the stack `complete`.

use std::time::Duration;

use offheap_tests::*;

const BYTES: u64 = 4242;
const COUNT: u64 = 3;

#[test]
fn chain_of_five_innermost_first_with_lines() {
    let tmp = TempDir::new("chain5");
    let exe = build_chain5(tmp.path());
    let src = c_example("chain5.c");
    let dir = tmp.subdir("dumps");
    let out = run(Cmd::new(&exe)
        .offheap(&dir)
        .env("OFFHEAP_INTERVAL", "0")
        .timeout(Duration::from_secs(30)));
    out.assert_success("chain5 with liboffheap");
    let dump = exit_dump(&dir, out.pid);
    assert_eq!(
        dump.totals("malloc"),
        (BYTES * COUNT, COUNT),
        "chain5 totals.malloc"
    );

    let expected: Vec<(&str, u64)> = [
        "chain_level5",
        "chain_level4",
        "chain_level3",
        "chain_level2",
        "chain_level1",
        "main",
    ]
    .iter()
    .map(|f| (*f, marker_line(&src, f)))
    .collect();

    let report = report_json(&[dump.path.as_path()]);
    let chain: Vec<&serde_json::Value> = report_stacks(&report)
        .iter()
        .filter(|s| s["kind"] == "malloc")
        .collect();
    assert!(
        !chain.is_empty(),
        "no malloc stack in the report:\n{}",
        describe_report(&report)
    );
    let (mut bytes, mut count) = (0, 0);
    for s in &chain {
        bytes += s["bytes"].as_u64().unwrap_or(0);
        count += s["count"].as_u64().unwrap_or(0);
        let frames = s["frames"].as_array().expect("frames array");
        assert!(
            frames.len() >= expected.len(),
            "stack shorter than the chain:\n{}",
            describe_stack(s)
        );
        for (i, (func, line)) in expected.iter().enumerate() {
            let f = &frames[i];
            let ok = f["function"] == *func
                && f["line"].as_u64() == Some(*line)
                && f["file"].as_str().is_some_and(|p| p.ends_with("chain5.c"));
            assert!(
                ok,
                "frame {i}: expected {func} at chain5.c:{line}, got {}\nwhole stack:\n{}",
                f,
                describe_stack(s)
            );
        }
    }
    assert_eq!(
        (bytes, count),
        (BYTES * COUNT, COUNT),
        "bytes/count of the chain stacks"
    );

    // In the dump itself: every stack of a live malloc is complete.
    let stacks = dump.stack_map();
    for o in dump.outstanding() {
        let id = o["stack"].as_u64().unwrap();
        let s = stacks
            .get(&id)
            .unwrap_or_else(|| panic!("outstanding refers to unknown stack {id}"));
        assert_eq!(
            s["end"], "complete",
            "stack {id} of chain5 is not complete: {s}"
        );
    }
}
