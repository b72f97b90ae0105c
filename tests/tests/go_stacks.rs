//! Stacks that reach the Go caller (issue 3 "Done when 1"), for the machine's
//! Go, the same build stripped (`-ldflags=-s -w`), go1.27.3 (through the
//! module proxy) and Debian's go1.19.
//!
//! examples/go/leakyservice runs 4 s with OFFHEAP_INTERVAL=1; the report of
//! its last dump must contain
//! - a malloc stack of the never-freed C.CString: `main.handleRequest` (at
//!   the `C.CString` line when not stripped), then its goroutine's function
//!   `main.serveLoop`, ending in the goroutine entry `runtime.goexit`;
//!   bytes exactly 1000 per block;
//! - a malloc stack of the leak inside the preamble's C function:
//!   `leaky_c_helper` innermost (not stripped: names of C static functions
//!   live only in the symbol table that `-s` removes), then later its Go
//!   caller `main.callCHelper`; 512 bytes per block.
//!
//! A toolchain that is missing skips its test outside CI and fails it when
//! CI=true (the CI script installs them).

use std::time::Duration;

use offheap_tests::*;

fn go_src() -> std::path::PathBuf {
    examples_dir()
        .join("go")
        .join("leakyservice")
        .join("main.go")
}

fn check_stacks(tc: GoToolchain, stripped: bool) {
    if !tc.require() {
        return;
    }
    let tag = format!("gostacks-{tc:?}-{stripped}");
    let tmp = TempDir::new(&tag);
    let extra: &[&str] = if stripped { &["-ldflags=-s -w"] } else { &[] };
    let exe = go_build(tc, "leakyservice", tmp.path(), "leakyservice", extra);
    let dir = tmp.subdir("dumps");
    let out = run(Cmd::new(&exe)
        .args([
            "-duration",
            "4s",
            "-burst-at",
            "1s",
            "-burst-count",
            "20",
            "-cache-rate",
            "20",
            "-chelper-rate",
            "20",
            "-mmap-rate",
            "1",
        ])
        .offheap(&dir)
        .env("OFFHEAP_INTERVAL", "1")
        .env("OFFHEAP_KEEP", "1000")
        .timeout(Duration::from_secs(120)));
    out.assert_success(&format!(
        "leakyservice ({tc:?}, stripped={stripped}) with liboffheap"
    ));
    let dump = last_dump(&dir, out.pid);
    let report = report_json(&[dump.path.as_path()]);
    let all = describe_report(&report);
    let src = go_src();
    let ctx = format!("{tc:?} stripped={stripped}, {}", dump.path.display());

    // (1) C.CString leak in the handler.
    let handler: Vec<_> = report_stacks(&report)
        .iter()
        .filter(|s| {
            s["kind"] == "malloc"
                && s["origin"] != "go-runtime"
                && frame_index(s, "main.handleRequest").is_some()
        })
        .collect();
    assert!(
        !handler.is_empty(),
        "{ctx}: no malloc stack names main.handleRequest:\n{all}"
    );
    let (mut bytes, mut count) = (0, 0);
    for s in &handler {
        bytes += s["bytes"].as_u64().unwrap_or(0);
        count += s["count"].as_u64().unwrap_or(0);
        assert_eq!(
            s["origin"],
            "cgo",
            "{ctx}: C called from Go is origin cgo:\n{}",
            describe_stack(s)
        );
        let fs = functions(s);
        let h = frame_index(s, "main.handleRequest").unwrap();
        let serve = frame_index(s, "main.serveLoop");
        assert!(
            serve.is_some_and(|i| i > h),
            "{ctx}: main.serveLoop must follow main.handleRequest:\n{}",
            describe_stack(s)
        );
        assert_eq!(
            fs.last().map(String::as_str),
            Some("runtime.goexit"),
            "{ctx}: the goroutine entry runtime.goexit must be the outermost frame:\n{}",
            describe_stack(s)
        );
        if !stripped {
            let f = &s["frames"][h];
            assert_eq!(
                (
                    f["file"]
                        .as_str()
                        .map(|p| p.ends_with("leakyservice/main.go")),
                    f["line"].as_u64()
                ),
                (Some(true), Some(marker_line(&src, "handleRequest"))),
                "{ctx}: main.handleRequest must point at the C.CString line:\n{}",
                describe_stack(s)
            );
        }
    }
    assert!(
        count > 0 && bytes == 1000 * count,
        "{ctx}: handler blocks are 1000 bytes each: {bytes} bytes in {count}"
    );

    // (2) leak inside a C function of the preamble, then its Go caller.
    let helper: Vec<_> = report_stacks(&report)
        .iter()
        .filter(|s| {
            s["kind"] == "malloc"
                && s["origin"] != "go-runtime"
                && frame_index(s, "main.callCHelper").is_some()
        })
        .collect();
    assert!(
        !helper.is_empty(),
        "{ctx}: no malloc stack names main.callCHelper:\n{all}"
    );
    let (mut bytes, mut count) = (0, 0);
    for s in &helper {
        bytes += s["bytes"].as_u64().unwrap_or(0);
        count += s["count"].as_u64().unwrap_or(0);
        if !stripped {
            let fs = functions(s);
            assert_eq!(
                fs.first().map(String::as_str),
                Some("leaky_c_helper"),
                "{ctx}: innermost frame must be the C function leaky_c_helper:\n{}",
                describe_stack(s)
            );
            let f = &s["frames"][0];
            assert_eq!(
                f["line"].as_u64(),
                Some(marker_line(&src, "leaky_c_helper")),
                "{ctx}: leaky_c_helper line (cgo keeps the preamble's lines):\n{}",
                describe_stack(s)
            );
        }
        assert_eq!(
            functions(s).last().map(String::as_str),
            Some("runtime.goexit"),
            "{ctx}: the helper's goroutine entry:\n{}",
            describe_stack(s)
        );
    }
    assert!(
        count > 0 && bytes == 512 * count,
        "{ctx}: helper blocks are 512 bytes each: {bytes} bytes in {count}"
    );
}

#[test]
fn machine_go_names_the_go_caller() {
    check_stacks(GoToolchain::Machine, false);
}

#[test]
fn machine_go_stripped_names_the_go_caller() {
    check_stacks(GoToolchain::Machine, true);
}

#[test]
fn go1_27_3_names_the_go_caller() {
    check_stacks(GoToolchain::Go1_27_3, false);
}

#[test]
fn go1_19_names_the_go_caller() {
    check_stacks(GoToolchain::Go1_19, false);
}
