//! The reader on good, bad and mutated input: every failure must be a clean message, never a
//! panic (the release profile aborts on panic, so a panic would kill the whole report).

use super::*;
use proptest::prelude::*;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// A real dump written by liboffheap (examples/go/leakyservice, seq 13).
fn real_dump() -> Vec<u8> {
    std::fs::read(testdata().join("leakyservice/offheap.13315.000013.json")).unwrap()
}

#[test]
fn reads_a_real_dump() {
    let d = parse_dump(&real_dump()).unwrap();
    assert_eq!(d.header.pid, 13315);
    assert_eq!(d.header.seq, 13);
    assert!(!d.stacks.is_empty() && !d.outstanding.is_empty() && !d.modules.is_empty());
}

#[test]
fn loads_a_directory_in_order() {
    let files = discover(&[testdata().join("leakyservice")]).unwrap();
    assert_eq!(files.len(), 14);
    let input = load(&files, &|_, _| {});
    assert!(input.errors.is_empty(), "{:?}", input.errors);
    assert_eq!(input.processes.len(), 1);
    let p = &input.processes[0];
    let seqs: Vec<u64> = p.dumps.iter().map(|d| d.header.seq).collect();
    assert_eq!(seqs, (0..14).collect::<Vec<_>>());
    // Per-generation rows survive for the newest dump only.
    assert!(p.dumps[..13]
        .iter()
        .all(|d| d.outstanding.iter().all(|o| o.by_generation.is_empty())));
    assert!(p.dumps[13]
        .outstanding
        .iter()
        .any(|o| !o.by_generation.is_empty()));
    assert!(p.stacks.len() >= 30);
}

fn err_of(bytes: &[u8]) -> String {
    parse_dump(bytes).unwrap_err()
}

#[test]
fn bad_inputs_get_clear_messages() {
    let real = real_dump();
    assert!(err_of(&real[..real.len() / 2]).starts_with("truncated JSON"));
    assert_eq!(err_of(b""), "empty file");
    assert!(err_of(b"hello world").starts_with("not JSON"));
    assert!(err_of(b"{\"a\": 1,, }").starts_with("corrupt JSON"));
    assert!(
        err_of(b"[1,2,3]").starts_with("foreign JSON"),
        "{}",
        err_of(b"[1,2,3]")
    );
    assert!(err_of(b"{\"name\": \"package.json\"}").contains("no \"format\""));
    assert!(err_of(b"{\"format\": \"pprof\"}").contains("\"pprof\""));
    let v2 = String::from_utf8(real.clone())
        .unwrap()
        .replacen("\"version\":1", "\"version\":2", 1)
        .replacen("\"version\": 1", "\"version\": 2", 1);
    assert!(
        err_of(v2.as_bytes()).contains("unknown dump version 2"),
        "{}",
        err_of(v2.as_bytes())
    );
    // Missing required field.
    let e = err_of(br#"{"format":"offheap-dump","version":1}"#);
    assert!(e.starts_with("corrupt dump: missing field `header`"), "{e}");
    // Nesting bombs hit serde_json's recursion guard, reported in words.
    let deep = format!(
        "{{\"format\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let e = err_of(deep.as_bytes());
    assert!(e.contains("nesting too deep"), "{e}");
    // Deep nesting in an unknown field is skipped without recursion: harmless, and the
    // dump is then judged on its own fields.
    let deep_ignored = format!(
        "{{\"format\":\"offheap-dump\",\"version\":1,\"x\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(err_of(deep_ignored.as_bytes()).contains("missing field `header`"));
    // Absurd arrays are refused while parsing.
    let frames = vec!["1"; MAX_FRAMES_TEST + 1].join(",");
    let huge = format!(
        r#"{{"format":"offheap-dump","version":1,"header":{{"pid":1,"seq":0,"uptime_ms":0}},"stacks":[{{"id":2,"frames":[{frames}]}}]}}"#
    );
    let e = err_of(huge.as_bytes());
    assert!(e.contains("absurd size"), "{e}");
    // Wrong types: negative numbers, strings for numbers.
    let e = err_of(
        br#"{"format":"offheap-dump","version":1,"header":{"pid":-1,"seq":0,"uptime_ms":0}}"#,
    );
    assert!(e.starts_with("corrupt dump"), "{e}");
}

const MAX_FRAMES_TEST: usize = format::MAX_FRAMES;

#[test]
fn bad_files_are_skipped_with_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("offheap.13315.000013.json");
    std::fs::write(&good, real_dump()).unwrap();
    let bad = dir.path().join("offheap.13315.000014.json");
    std::fs::write(&bad, b"{\"format\":\"offheap-dump\",\"ver").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
    let files = discover(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(files.len(), 2, "other files in the directory are ignored");
    let input = load(&files, &|_, _| {});
    assert_eq!(input.processes.len(), 1);
    assert_eq!(input.errors.len(), 1);
    let msg = input.errors[0].to_string();
    assert!(
        msg.contains("offheap.13315.000014.json") && msg.contains("truncated"),
        "{msg}"
    );
    // A missing input is an error naming it.
    let e = discover(&[dir.path().join("nope")]).unwrap_err();
    assert!(e.to_string().contains("nope"));
}

#[test]
fn dump_names() {
    assert_eq!(parse_dump_name("offheap.123.000004.json"), Some((123, 4)));
    assert_eq!(parse_dump_name("offheap.123_2.000004.json"), Some((123, 4)));
    assert_eq!(parse_dump_name("offheap.123_x.000004.json"), None);
    assert_eq!(parse_dump_name(".offheap.123.000004.tmp"), None);
    assert_eq!(parse_dump_name("offheap.x.1.json"), None);
}

/// Mutations of a real dump: byte flips, truncation, splices, number swaps.
fn mutate(base: &[u8], ops: &[(u8, usize, u8)]) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(op, pos, byte) in ops {
        if v.is_empty() {
            break;
        }
        let i = pos % v.len();
        match op % 6 {
            0 => v[i] = byte,
            1 => v.truncate(i),
            2 => {
                v.remove(i);
            }
            3 => v.insert(i, byte),
            // Replace a digit run by a huge or odd number: absurd sizes and types.
            4 => {
                let rep: &[u8] = match byte % 4 {
                    0 => b"18446744073709551615",
                    1 => b"-1",
                    2 => b"1e308",
                    _ => b"99999999999999999999999",
                };
                if v[i].is_ascii_digit() {
                    let mut j = i;
                    while j < v.len() && v[j].is_ascii_digit() {
                        j += 1;
                    }
                    v.splice(i..j, rep.iter().copied());
                }
            }
            _ => {
                // Duplicate a slice somewhere else (structure splice).
                let j = (i + byte as usize * 7) % v.len();
                let (a, b) = (i.min(j), i.max(j));
                let chunk: Vec<u8> = v[a..b.min(a + 64)].to_vec();
                v.splice(a..a, chunk);
            }
        }
    }
    v
}

proptest! {
    // PROPTEST_CASES raises the count for a longer fuzzing session.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_dumps_never_panic(ops in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..8)) {
        let base = real_dump();
        let m = mutate(&base, &ops);
        match parse_dump(&m) {
            Ok(d) => {
                // Whatever parsed must also be usable downstream without panics.
                let pd = ProcessDumps {
                    pid: d.header.pid,
                    modules: d.modules.clone(),
                    stacks: d.stacks.iter().map(|s| (s.id, s.clone())).collect(),
                    dumps: vec![d],
                    paths: vec![],
                };
                let mut sym = crate::symbolize::Symbolizer::new(&pd.modules);
                let mut w = Vec::new();
                let m = crate::model::build(&pd, &mut sym, &Default::default(), &mut w);
                let _ = crate::render::json::ordered(&m);
            }
            Err(e) => {
                prop_assert!(!e.is_empty());
                prop_assert!(e.len() < 2000, "message too long: {}", e.len());
                prop_assert!(!e.contains("panicked"));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_dump(&bytes);
    }
}
