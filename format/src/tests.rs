//! Round trips (write → read → equal), the stack encoding, file names, hostile input, and
//! the check that docs/dump-format.md names every field of the schema.

use crate::schema::*;
use crate::write::*;
use crate::*;
use proptest::prelude::*;
use std::io::{Cursor, Write};

/// An in-memory row, the shape a test source holds.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    stack: u64,
    kind: Kind,
    via: Via,
    count: u64,
    bytes: u64,
    est: (f64, f64),
    oldest_ms: u64,
    newest_ms: u64,
    age_hist: [u64; 6],
    by_generation: Vec<Detail>,
    by_epoch: Vec<Detail>,
    resident: u64,
}

struct Rows {
    rows: Vec<Row>,
    sampled: bool,
    resident: bool,
}

impl OutstandingSource for Rows {
    fn sampled(&self) -> bool {
        self.sampled
    }
    fn with_resident(&self) -> bool {
        self.resident
    }
    fn for_each(&self, _lists: Lists, f: &mut dyn FnMut(&OutstandingOut<'_>)) {
        for r in &self.rows {
            f(&OutstandingOut {
                stack: r.stack,
                kind: r.kind,
                via: r.via,
                count: r.count,
                bytes: r.bytes,
                est_count: r.est.0,
                est_bytes: r.est.1,
                oldest_ms: r.oldest_ms,
                newest_ms: r.newest_ms,
                age_hist: r.age_hist,
                by_generation: &r.by_generation,
                by_epoch: &r.by_epoch,
                resident: r.resident,
            })
        }
    }
}

struct Counted<const N: usize>(Vec<(u64, [u64; N])>);

impl<const N: usize> CountersSource<N> for Counted<N> {
    fn for_each(&self, f: &mut dyn FnMut(u64, [u64; N])) {
        for (s, c) in &self.0 {
            f(*s, *c)
        }
    }
}

struct StackList(Vec<(u64, End, Vec<u64>)>);

impl StackSource for StackList {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, i: usize) -> (u64, End, &[u64]) {
        let (id, end, f) = &self.0[i];
        (*id, *end, f)
    }
}

fn header(seq: u64) -> Header {
    Header {
        pid: 4242,
        ppid: 1,
        uid: 1000,
        exe: "/usr/bin/thing".into(),
        exe_build_id: Some("abcd".into()),
        cmdline: vec!["thing".to_string(), "--flag".to_string()].into(),
        seq,
        trigger: Trigger::Interval,
        start_wall_ns: 1,
        wall_ns: 2,
        uptime_ms: 3000,
        epoch: 1,
        generation: seq,
        config: Config {
            interval_s: 2.0,
            keep: 500,
            warmup_s: 0.0,
            max_frames: 64,
            sample_bytes: 0,
            dir: "/tmp/d".into(),
            max_stacks: 262_144,
            address_limit: Some(400 << 20),
        },
        library_version: "0.2.0".into(),
        stacks_file: Some(names::stacks("offheap.4242")),
        stack_ids_below: 9,
        exit: Some(ExitInfo {
            path: "go-exit".into(),
            status: Some(3),
            signal: None,
        }),
        go: Some(GoInfo {
            version: "go1.26.8".into(),
            main_module: "example.com/svc".into(),
            probes: vec![ProbeState {
                name: "syscall".into(),
                state: "off".into(),
                reason: Some("unknown bytes".into()),
            }]
            .into(),
        }),
    }
}

fn write_gz(
    rows: &Rows,
    cumulative: &Counted<4>,
    threads: &Counted<3>,
    ledger: Option<&Ledger>,
) -> Vec<u8> {
    let h = header(7);
    let parts = DumpParts {
        header: &h,
        outstanding: rows,
        cumulative,
        threads_live: 5,
        threads_created: 9,
        thread_creators: threads,
        totals: &Totals {
            malloc: BytesCount {
                bytes: 10,
                count: 2,
            },
            ..Default::default()
        },
        process: &ProcessMem {
            rss_bytes: 1 << 20,
            ..Default::default()
        },
        ledger,
        self_: &SelfStats {
            lost_records: 3,
            ..Default::default()
        },
        untracked: &Untracked::default(),
    };
    let mut gz = gzip_buffered(Vec::new(), Level::Small);
    write_dump(&mut gz, &parts).unwrap();
    finish_gzip(gz).unwrap()
}

fn read_back(bytes: &[u8]) -> Result<Dump, String> {
    read::dump(|| Ok(Cursor::new(bytes)))
}

fn sample_rows() -> Vec<Row> {
    vec![
        Row {
            stack: 2,
            kind: Kind::Malloc,
            via: Via::Libc,
            count: 3,
            bytes: 96,
            est: (3.5, 100.25),
            oldest_ms: 10,
            newest_ms: 20,
            age_hist: [1, 2, 0, 0, 0, 0],
            by_generation: vec![(0, 1, 32), (3, 2, 64)],
            by_epoch: vec![(0, 3, 96)],
            resident: 0,
        },
        Row {
            stack: 2,
            kind: Kind::Mmap,
            via: Via::Syscall,
            count: 1,
            bytes: 4096,
            est: (1.0, 4096.0),
            oldest_ms: 5,
            newest_ms: 5,
            age_hist: [0, 0, 1, 0, 0, 0],
            by_generation: vec![(1, 1, 4096)],
            by_epoch: vec![(1, 1, 4096)],
            resident: 4096,
        },
        Row {
            stack: 1000,
            kind: Kind::MmapReserved,
            via: Via::Libc,
            count: 1,
            bytes: 1 << 30,
            est: (1.0, (1u64 << 30) as f64),
            oldest_ms: 0,
            newest_ms: 0,
            age_hist: [0, 0, 0, 0, 0, 1],
            by_generation: vec![(0, 1, 1 << 30)],
            by_epoch: vec![(0, 1, 1 << 30)],
            resident: 0,
        },
    ]
}

fn rows_of(d: &Dump, sampled: bool) -> Vec<Row> {
    d.outstanding
        .rows()
        .map(|r| Row {
            stack: r.stack,
            kind: r.kind,
            via: r.via,
            count: r.count,
            bytes: r.bytes,
            est: if sampled {
                (r.est_count.unwrap(), r.est_bytes.unwrap())
            } else {
                (0.0, 0.0)
            },
            oldest_ms: r.oldest_ms,
            newest_ms: r.newest_ms,
            age_hist: r.age_hist,
            by_generation: r.by_generation.to_vec(),
            by_epoch: r.by_epoch.to_vec(),
            resident: r.resident.unwrap_or(0),
        })
        .collect()
}

#[test]
fn dump_round_trips_through_gzip() {
    let rows = Rows {
        rows: sample_rows(),
        sampled: true,
        resident: true,
    };
    let cumulative = Counted(vec![(2, [5, 2, 160, 64]), (1000, [1, 0, 1 << 30, 0])]);
    let threads = Counted(vec![(7, [3, 4, 100])]);
    let ledger = Ledger {
        rss_bytes: 1 << 20,
        categories: LedgerCategories {
            malloc_live: 4096,
            file: 8192,
            ..Default::default()
        },
        remainder_bytes: -4096,
        arenas: vec![Arena {
            kind: "main".into(),
            start: 1,
            end: 2,
            resident_bytes: 3,
            live_bytes: 2,
            retained_bytes: 1,
        }]
        .into(),
        ..Default::default()
    };
    let bytes = write_gz(&rows, &cumulative, &threads, Some(&ledger));
    let d = read_back(&bytes).unwrap();
    assert_eq!(rows_of(&d, true), rows.rows);
    assert_eq!(
        d.cumulative.rows().collect::<Vec<_>>(),
        vec![
            Cumulative {
                stack: 2,
                allocs: 5,
                frees: 2,
                alloc_bytes: 160,
                free_bytes: 64
            },
            Cumulative {
                stack: 1000,
                allocs: 1,
                frees: 0,
                alloc_bytes: 1 << 30,
                free_bytes: 0
            },
        ]
    );
    assert_eq!(
        d.threads.by_stack.rows().collect::<Vec<_>>(),
        vec![ThreadRow {
            stack: 7,
            live: 3,
            created: 4,
            oldest_ms: 100
        }]
    );
    assert_eq!((d.threads.live, d.threads.created), (5, 9));
    assert_eq!(d.ledger, Some(ledger));
    assert_eq!(d.header.exit, header(7).exit);
    assert_eq!(d.header.go, header(7).go);
    assert_eq!(d.header.trigger, Trigger::Interval);
    assert_eq!(d.self_.lost_records, 3);
    assert_eq!(
        d.totals.get(Kind::Malloc),
        BytesCount {
            bytes: 10,
            count: 2
        }
    );
}

#[test]
fn unsampled_dump_has_no_estimate_columns() {
    let rows = Rows {
        rows: sample_rows(),
        sampled: false,
        resident: false,
    };
    let bytes = write_gz(&rows, &Counted(vec![]), &Counted(vec![]), None);
    let d = read_back(&bytes).unwrap();
    assert!(d.outstanding.est_count.is_none() && d.outstanding.resident.is_none());
    assert!(d.ledger.is_none());
    let mut expected = sample_rows();
    for r in &mut expected {
        r.est = (0.0, 0.0);
        r.resident = 0;
    }
    assert_eq!(rows_of(&d, false), expected);
}

#[test]
fn plain_json_reads_like_gzip() {
    let rows = Rows {
        rows: sample_rows(),
        sampled: false,
        resident: false,
    };
    let gz = write_gz(&rows, &Counted(vec![]), &Counted(vec![]), None);
    let plain = {
        let mut d = flate2::read::GzDecoder::new(&gz[..]);
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut v).unwrap();
        v
    };
    let a = read_back(&gz).unwrap();
    let b = read_back(&plain).unwrap();
    assert_eq!(rows_of(&a, false), rows_of(&b, false));
}

#[test]
fn consecutive_ids_are_written_as_ones() {
    let rows = Rows {
        rows: (10..20)
            .map(|s| Row {
                stack: s,
                ..sample_rows()[0].clone()
            })
            .collect(),
        sampled: false,
        resident: false,
    };
    let gz = write_gz(&rows, &Counted(vec![]), &Counted(vec![]), None);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
    assert!(text.contains("\"stack\":[10,1,1,1,1,1,1,1,1,1]"), "{text}");
}

fn stacks_member(seq: u64, stacks: &StackList) -> Vec<u8> {
    let mut gz = gzip_buffered(Vec::new(), Level::Fast);
    write_stacks_member(
        &mut gz,
        seq,
        &[Module {
            path: "/bin/x".into(),
            build_id: None,
            base: 0x1000,
            ranges: vec![(0x1000, 0x2000)].into(),
        }],
        stacks,
    )
    .unwrap();
    finish_gzip(gz).unwrap()
}

#[test]
fn stacks_file_members_append_and_decode() {
    let first = StackList(vec![
        (2, End::Complete, vec![0xa, 0x1, 0xff]),
        (3, End::Complete, vec![0xb, 0x1, 0xff]),
        (4, End::Truncated, vec![0xc, 0x2, 0xff]),
    ]);
    let second = StackList(vec![(5, End::Broken, vec![0xd])]);
    let mut file = stacks_member(0, &first);
    file.extend(stacks_member(3, &second));
    let sf = read::stacks_file(Cursor::new(&file));
    assert!(sf.stopped.is_none(), "{:?}", sf.stopped);
    assert_eq!(sf.members.len(), 2);
    assert_eq!(sf.members[1].seq, 3);
    let t = &sf.members[0].stacks;
    assert_eq!(t.keep.0, vec![0, 2, 1]);
    assert_eq!(stacks::decode(t).unwrap(), first.0);
    assert_eq!(stacks::decode(&sf.members[1].stacks).unwrap(), second.0);
}

#[test]
fn a_cut_member_stops_reading_with_the_reason() {
    let a = StackList(vec![(2, End::Complete, vec![1, 2, 3])]);
    let mut file = stacks_member(0, &a);
    let good = file.len();
    file.extend(stacks_member(1, &a));
    file.truncate(good + 20);
    let sf = read::stacks_file(Cursor::new(&file));
    assert_eq!(sf.members.len(), 1);
    let why = sf.stopped.unwrap();
    assert!(why.starts_with("member 1:"), "{why}");
}

#[test]
fn keep_beyond_the_previous_stack_is_an_error() {
    let t = StackTable {
        id: vec![2, 3].into(),
        end: vec![End::Complete, End::Complete].into(),
        keep: vec![0, 5].into(),
        frames: vec![vec![1u64, 2].into(), vec![3u64].into()].into(),
    };
    let e = stacks::decode(&t).unwrap_err();
    assert!(e.contains("keeps 5 frames"), "{e}");
}

#[test]
fn mismatched_columns_are_corrupt() {
    let rows = Rows {
        rows: sample_rows(),
        sampled: false,
        resident: false,
    };
    let gz = write_gz(&rows, &Counted(vec![]), &Counted(vec![]), None);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
    let broken = text.replacen("\"count\":[3,1,1]", "\"count\":[3,1]", 1);
    assert_ne!(broken, text);
    let e = read_back(broken.as_bytes()).unwrap_err();
    assert_eq!(
        e,
        "corrupt dump: outstanding.count has 2 entries for 3 rows"
    );
}

#[test]
fn identity_errors_name_the_problem() {
    let e = read_back(br#"{"format":"offheap-dump","version":1,"header":{}}"#).unwrap_err();
    assert!(
        e.contains("version 1, written by an older liboffheap"),
        "{e}"
    );
    let e = read_back(br#"{"format":"offheap-dump","version":9}"#).unwrap_err();
    assert!(e.contains("unknown dump version 9"), "{e}");
    let e = read_back(br#"{"format":"something-else","version":2}"#).unwrap_err();
    assert!(e.contains("foreign JSON"), "{e}");
    let e = read_back(b"[1,2,3]").unwrap_err();
    assert_eq!(e, "foreign JSON: the top level is not an object");
    let e = read_back(b"").unwrap_err();
    assert_eq!(e, "empty file");
    let e = read_back(b"{\"format\": \"offheap-dump\", \"vers").unwrap_err();
    assert!(e.starts_with("truncated JSON"), "{e}");
    let e = read_back(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2]).unwrap_err();
    assert!(e.contains("gzip"), "{e}");
}

#[test]
fn names_parse_back() {
    assert_eq!(names::stem(12, 1), "offheap.12");
    assert_eq!(names::stem(12, 3), "offheap.12_3");
    assert_eq!(
        names::dump("offheap.12_3", 7),
        "offheap.12_3.000007.json.gz"
    );
    assert_eq!(
        names::parse_dump("offheap.12_3.000007.json.gz"),
        Some(("offheap.12_3", 12, 7))
    );
    assert_eq!(names::parse_dump("offheap.12.000007.json"), None);
    assert_eq!(names::parse_dump("offheap.x.000007.json.gz"), None);
    assert_eq!(
        names::parse_stacks("offheap.12_3.stacks.gz"),
        Some("offheap.12_3")
    );
    assert!(names::belongs_to(
        ".offheap.12.000001.json.gz.0.tmp",
        "offheap.12"
    ));
    assert!(names::belongs_to("offheap.12.stacks.gz", "offheap.12"));
    assert!(!names::belongs_to("offheap.123.stacks.gz", "offheap.12"));
    assert!(!names::belongs_to("offheap.12_2.stacks.gz", "offheap.12"));
}

#[test]
fn every_schema_field_is_documented() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/dump-format.md"
    ))
    .expect("docs/dump-format.md");
    // Every key the writer emits, read back from a full dump and a stacks member.
    let rows = Rows {
        rows: sample_rows(),
        sampled: true,
        resident: true,
    };
    let ledger = Ledger {
        mallinfo: Some(MallInfo::default()),
        files: vec![FileResident::default()].into(),
        arenas: vec![Arena::default()].into(),
        ..Default::default()
    };
    let gz = write_gz(
        &rows,
        &Counted(vec![(2, [1; 4])]),
        &Counted(vec![(2, [1; 3])]),
        Some(&ledger),
    );
    let mut keys = std::collections::BTreeSet::new();
    let mut collect = |bytes: &[u8]| {
        let v: serde_json::Value =
            serde_json::from_reader(flate2::read::GzDecoder::new(bytes)).unwrap();
        walk(&v, &mut keys);
    };
    collect(&gz);
    collect(&stacks_member(
        0,
        &StackList(vec![(2, End::Complete, vec![1])]),
    ));
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")) && !doc.contains(&format!("\"{k}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/dump-format.md does not name: {missing:?}"
    );
}

fn walk(v: &serde_json::Value, keys: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                keys.insert(k.clone());
                walk(v, keys);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, keys)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any set of stacks, in any order, decodes to itself.
    #[test]
    fn stack_encoding_round_trips(stacks in prop::collection::vec(
        (prop::collection::vec(0u64..6, 0..12), 0u8..3), 0..40)) {
        let rows: Vec<(u64, End, Vec<u64>)> = stacks
            .into_iter()
            .enumerate()
            .map(|(i, (f, e))| (i as u64 + 2, End::from_u8(e), f))
            .collect();
        let t = stacks::encode(rows.iter().map(|(i, e, f)| (*i, *e, f.as_slice())));
        prop_assert_eq!(stacks::decode(&t).unwrap(), rows);
    }

    /// Arbitrary bytes never panic the reader.
    #[test]
    fn arbitrary_bytes_are_refused_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_back(&bytes);
        let _ = read::stacks_file(Cursor::new(&bytes));
    }

    /// A real dump with bytes flipped never panics the reader, compressed or not.
    #[test]
    fn mutated_dumps_are_refused_cleanly(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                                         plain in any::<bool>()) {
        let rows = Rows { rows: sample_rows(), sampled: true, resident: true };
        let mut bytes = write_gz(&rows, &Counted(vec![(2, [1; 4])]), &Counted(vec![]), None);
        if plain {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut v).unwrap();
            bytes = v;
        }
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] ^= b | 1;
        }
        let _ = read_back(&bytes);
    }
}

#[test]
fn writer_errors_come_back() {
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let rows = Rows {
        rows: sample_rows(),
        sampled: false,
        resident: false,
    };
    let h = header(0);
    let parts = DumpParts {
        header: &h,
        outstanding: &rows,
        cumulative: &Counted(vec![]),
        threads_live: 0,
        threads_created: 0,
        thread_creators: &Counted(vec![]),
        totals: &Totals::default(),
        process: &ProcessMem::default(),
        ledger: None,
        self_: &SelfStats::default(),
        untracked: &Untracked::default(),
    };
    let e = write_dump(Full, &parts).unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
}

/// What the system's own gzip makes of a member: an oracle independent of flate2.
fn system_gunzip(member: &[u8]) -> Vec<u8> {
    let mut child = std::process::Command::new("gzip")
        .args(["-dc"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip(1) runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = member.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "gzip -dc rejected the member");
    out.stdout
}

fn flate2_gunzip(member: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(member), &mut out).unwrap();
    out
}

/// Text that compresses, `n` bytes of it.
fn text_of(n: usize) -> Vec<u8> {
    (0..n).map(|i| b"offheap stored member "[i % 22]).collect()
}

#[test]
fn small_members_are_stored_and_large_ones_compressed_both_valid_gzip() {
    for (n, stored) in [
        (0, true),
        (1, true),
        (STORED_UP_TO, true),
        (STORED_UP_TO + 1, false),
        (200_000, false),
    ] {
        let data = text_of(n);
        let mut g = gzip_buffered(Vec::new(), Level::Small);
        // In pieces, as serde_json writes.
        for piece in data.chunks(7) {
            g.write_all(piece).unwrap();
        }
        let member = finish_gzip(g).unwrap();
        assert_eq!(flate2_gunzip(&member), data, "{n} bytes through flate2");
        assert_eq!(system_gunzip(&member), data, "{n} bytes through gzip(1)");
        // A stored member is the data plus 10 header, 5 per block and 8 trailer bytes.
        let stored_len = 10 + 5 + n + 8;
        assert_eq!(
            member.len() == stored_len,
            stored,
            "{n} bytes: {} long",
            member.len()
        );
        if !stored {
            assert!(
                member.len() < n / 4,
                "{n} bytes compressed to {}",
                member.len()
            );
        }
    }
}

#[test]
fn a_stored_member_past_one_block_splits_into_blocks_gzip_accepts() {
    let data = text_of(3 * 65_535 + 10);
    let mut member = Vec::new();
    write_stored_member(&mut member, &data).unwrap();
    assert_eq!(member.len(), 10 + 4 * 5 + data.len() + 8, "four blocks");
    assert_eq!(system_gunzip(&member), data);
    assert_eq!(flate2_gunzip(&member), data);
}
