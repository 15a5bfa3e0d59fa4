//! Recovery over damaged media, reads from the cache and from disk, and recovery over
//! arbitrary bytes (the stable twin of the cargo-fuzz target in `wal/fuzz`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;

use proptest::prelude::*;
use wal::limits::BLOCK_BYTES;
use wal::sim::LocalExecutor;
use wal::{recover, Config, MemDevice, Wal, WalError};

/// Runs `body` against a log opened on `device`, with its flusher running; closes it after.
fn with_wal<T: 'static, F: Future<Output = T> + 'static>(
    device: &MemDevice,
    body: impl FnOnce(Rc<Wal<MemDevice>>) -> F + 'static,
) -> Result<T, WalError> {
    let device = device.clone();
    let (wal, _) = wal::sim::block_on(None, async move {
        Wal::open_seeded(device, Config::test_min(), 1).await
    })?;
    let wal = Rc::new(wal);
    let exec = LocalExecutor::new();
    exec.spawn({
        let wal = wal.clone();
        async move {
            let _ = wal.run().await;
        }
    });
    let out = Rc::new(RefCell::new(None));
    exec.spawn({
        let (wal, out) = (wal.clone(), out.clone());
        async move {
            let result = body(wal.clone()).await;
            wal.close();
            *out.borrow_mut() = Some(result);
        }
    });
    assert_eq!(exec.run_until_stalled(), 0, "body and flusher finish");
    let result = out.borrow_mut().take().expect("the body finished");
    Ok(result)
}

/// Opens a log on `device`, appends `records` (stream, index, payload) one after another,
/// each acknowledged before the next, and closes it.
fn appended(device: &MemDevice, records: &[(u64, u64, Vec<u8>)]) -> Vec<u64> {
    appended_with(device, Config::test_min(), records)
}

fn appended_with(device: &MemDevice, config: Config, records: &[(u64, u64, Vec<u8>)]) -> Vec<u64> {
    let exec = LocalExecutor::new();
    let lsns = Rc::new(RefCell::new(Vec::new()));
    let (wal, _) = wal::sim::block_on(None, {
        let device = device.clone();
        async move { Wal::open_seeded(device, config, 2).await }
    })
    .expect("open");
    let wal = Rc::new(wal);
    exec.spawn({
        let wal = wal.clone();
        async move {
            wal.run().await.expect("flusher");
        }
    });
    exec.spawn({
        let (wal, lsns, records) = (wal.clone(), lsns.clone(), records.to_vec());
        async move {
            for (stream, index, payload) in records {
                let lsn = wal
                    .append(stream, index, 0, &payload)
                    .await
                    .expect("append");
                lsns.borrow_mut().push(lsn);
            }
            wal.close();
        }
    });
    assert_eq!(exec.run_until_stalled(), 0, "appender and flusher finish");
    let out = lsns.borrow().clone();
    out
}

fn reopen(device: &MemDevice) -> Result<wal::RecoveryReport, WalError> {
    let device = device.clone();
    wal::sim::block_on(None, async move {
        Wal::open_seeded(device, Config::test_min(), 3)
            .await
            .map(|(_, report)| report)
    })
}

fn records(n: u64) -> Vec<(u64, u64, Vec<u8>)> {
    (1..=n).map(|i| (i % 3, i, vec![i as u8; 300])).collect()
}

/// The single segment file of a log short enough to fit one segment.
fn only_segment(device: &MemDevice) -> (u64, Vec<u8>) {
    let files = device.files();
    let mut headed: Vec<(u64, Vec<u8>)> = files
        .into_iter()
        .filter(|(_, b)| b.starts_with(&wal::format::SEGMENT_MAGIC))
        .collect();
    assert_eq!(headed.len(), 1, "one segment");
    headed.pop().expect("one")
}

fn damage(device: &MemDevice, file: u64, at: usize, f: impl Fn(&mut [u8])) {
    let mut files: BTreeMap<u64, Vec<u8>> = device.files();
    f(&mut files.get_mut(&file).expect("file")[at..]);
    device.set_files(files);
}

#[test]
fn appends_survive_a_clean_reopen() {
    let device = MemDevice::new();
    let lsns = appended(&device, &records(10));
    assert_eq!(lsns, (1..=10).collect::<Vec<_>>());
    let report = reopen(&device).expect("recovers");
    assert_eq!((report.records, report.next_lsn), (10, 11));
    assert_eq!(report.streams[&1].last_index, 10);
}

#[test]
fn damage_before_acknowledged_records_is_corruption_naming_segment_and_offset() {
    let device = MemDevice::new();
    appended(&device, &records(10));
    let (file, _) = only_segment(&device);
    // One record per batch (each append waited for the previous), batch k at block k.
    damage(&device, file, 3 * BLOCK_BYTES + 100, |b| b[0] ^= 0x40);
    match reopen(&device) {
        Err(WalError::Corruption {
            segment, offset, ..
        }) => assert_eq!((segment, offset), (1, 3 * BLOCK_BYTES as u64)),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_torn_last_batch_is_cut() {
    let device = MemDevice::new();
    appended(&device, &records(10));
    let (file, _) = only_segment(&device);
    damage(&device, file, 10 * BLOCK_BYTES + 100, |b| b[..100].fill(0));
    let report = reopen(&device).expect("recovers");
    assert_eq!((report.records, report.next_lsn), (9, 10));
    // The next open starts a new segment after the cut and keeps the acknowledged nine.
    appended(&device, &records(3));
    let report = reopen(&device).expect("recovers again");
    assert_eq!((report.records, report.next_lsn), (12, 13));
}

#[test]
fn a_zeroed_last_batch_is_cut() {
    let device = MemDevice::new();
    appended(&device, &records(5));
    let (file, _) = only_segment(&device);
    damage(&device, file, 5 * BLOCK_BYTES, |b| b[..BLOCK_BYTES].fill(0));
    let report = reopen(&device).expect("recovers");
    assert_eq!((report.records, report.next_lsn), (4, 5));
}

#[test]
fn reads_come_from_the_cache_and_from_disk_and_rewrites_replace_the_suffix() {
    let device = MemDevice::new();
    // 200 records of 700 bytes: far more than test_min's 72 KiB cache, several segments.
    let recs: Vec<(u64, u64, Vec<u8>)> = (1..=200).map(|i| (7, i, vec![i as u8; 700])).collect();
    appended(&device, &recs);
    let result = with_wal(&device, |wal| async move {
        let exec_free_read = wal.read(7, 1, 201).await;
        let rewrite = wal.enqueue(7, 30, 1, b"rewritten").await;
        let after = wal.read(7, 25, 31).await;
        let beyond = wal.read(7, 25, 32).await;
        (exec_free_read, rewrite, after, beyond)
    })
    .expect("opens");
    let (all, rewrite, after, beyond) = result;
    let all = all.expect("read all");
    assert_eq!(all.len(), 200);
    for (r, i) in all.iter().zip(1u64..) {
        assert_eq!((r.index, &r.payload[..]), (i, &vec![i as u8; 700][..]));
    }
    rewrite.expect("enqueue");
    let after = after.expect("read after rewrite");
    assert_eq!(&after.last().expect("30").payload[..], b"rewritten");
    assert_eq!(
        beyond,
        Err(WalError::Missing {
            stream: 7,
            index: 31
        })
    );
}

#[test]
fn an_oversized_record_is_refused_naming_its_size() {
    let device = MemDevice::new();
    let got = with_wal(&device, |wal| async move {
        wal.enqueue(1, 1, 0, &vec![0; 3 * BLOCK_BYTES]).await
    })
    .expect("opens");
    assert_eq!(
        got,
        Err(WalError::RecordTooLarge {
            payload_bytes: 3 * BLOCK_BYTES,
            max_bytes: 2 * BLOCK_BYTES
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(500),
        ..ProptestConfig::default()
    })]

    /// Arbitrary input shaped into segment files the way the fuzz target does: recovery
    /// ends cleanly or with an error, never a panic, and what it yields has contiguous LSNs.
    #[test]
    fn recovery_of_arbitrary_bytes_never_panics(
        data in prop::collection::vec(any::<u8>(), 0..4_000),
    ) {
        let files = wal::sim::files_from_fuzz_input(&data);
        let views: Vec<(u64, &[u8])> = files.iter().map(|(i, b)| (*i, b.as_slice())).collect();
        let mut lsns = Vec::new();
        if recover(&views, &mut |r| lsns.push(r.lsn)).is_ok() {
            prop_assert!(lsns.windows(2).all(|w| w[1] == w[0] + 1));
        }
    }

    /// A valid log with random bytes flipped or zeroed: never a panic, and whatever is
    /// recovered is a prefix of what was appended.
    #[test]
    fn recovery_of_a_damaged_log_never_panics_and_yields_a_prefix(
        n in 1u64..40,
        damages in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..8),
    ) {
        let device = MemDevice::new();
        let recs = records(n);
        appended(&device, &recs);
        let mut files = device.files();
        let ids: Vec<u64> = files.keys().copied().collect();
        for (at, how, byte) in damages {
            let id = ids[at.index(ids.len())];
            let f = files.get_mut(&id).expect("file");
            let i = at.index(f.len());
            match how {
                0 => f[i] ^= byte | 1,
                1 => {
                    let end = (i + 512).min(f.len());
                    f[i..end].fill(0)
                }
                _ => f[i] = byte,
            }
        }
        let views: Vec<(u64, &[u8])> = files.iter().map(|(i, b)| (*i, b.as_slice())).collect();
        let mut got = Vec::new();
        if recover(&views, &mut |r| got.push((r.lsn, r.stream, r.index, r.payload.to_vec()))).is_ok() {
            for (lsn, stream, index, payload) in got {
                let (s, i, p) = &recs[(lsn - 1) as usize];
                prop_assert_eq!((stream, index, &payload), (*s, *i, p));
            }
        }
    }
}

/// Found by `acknowledged_records_survive_crashes_anywhere` when batches were tied to their
/// segment by the segment *number*: a crash tore a new segment's header but not the batches
/// behind it; the next run reused the number (it had never been seen) and the same file, and
/// after another crash recovery accepted a batch of the earlier life as the continuation of
/// the new one. Batches are now tied to a random salt per life of the file.
#[test]
fn a_batch_left_by_a_life_whose_header_was_torn_is_never_resurrected() {
    use wal::format::*;
    let segment_bytes = wal::limits::SEGMENT_BYTES_MIN as usize;
    let batch = |salt: u64, first: u64, payloads: &[&[u8]]| -> Vec<u8> {
        let mut buf = vec![0u8; wal::limits::BATCH_HEADER_BYTES];
        for (k, p) in payloads.iter().enumerate() {
            let rec = RecordView {
                lsn: first + k as u64,
                stream: 1,
                index: first + k as u64,
                kind: 0,
                payload: p,
            };
            encode_record(&mut buf, &rec);
        }
        let records_bytes = buf.len() - wal::limits::BATCH_HEADER_BYTES;
        buf.resize(batch_bytes(records_bytes), 0);
        let crc = records_crc(
            &buf[wal::limits::BATCH_HEADER_BYTES..wal::limits::BATCH_HEADER_BYTES + records_bytes],
        );
        let header = BatchHeader {
            salt,
            first_lsn: first,
            durable_lsn: first,
            batch_bytes: buf.len() as u32,
            record_count: payloads.len() as u32,
            records_bytes: records_bytes as u32,
            records_crc: crc,
        };
        encode_batch_header(&mut buf, &header);
        buf
    };
    let mut file = vec![0u8; segment_bytes];
    // Life 1 (salt 111): its header was lost; two batches reached the media.
    file[BLOCK_BYTES..2 * BLOCK_BYTES].copy_from_slice(&batch(111, 10, &[b"old-10", b"old-11"]));
    file[2 * BLOCK_BYTES..3 * BLOCK_BYTES].copy_from_slice(&batch(111, 12, &[b"old-12"]));
    // Life 2 (salt 222), same segment number and first LSN: its header and first batch.
    let header = SegmentHeader {
        number: 1,
        first_lsn: 10,
        segment_bytes: segment_bytes as u64,
        salt: 222,
    };
    encode_segment_header(&mut file[..BLOCK_BYTES], &header);
    file[BLOCK_BYTES..2 * BLOCK_BYTES].copy_from_slice(&batch(222, 10, &[b"new-10", b"new-11"]));
    let mut got = Vec::new();
    let recovered = recover(&[(1, &file)], &mut |r| got.push(r.payload.to_vec())).expect("ok");
    assert_eq!(got, vec![b"new-10".to_vec(), b"new-11".to_vec()]);
    assert_eq!(recovered.next_lsn, 12);
}

#[test]
fn a_changed_segment_size_keeps_old_segments_and_drops_old_spares() {
    let device = MemDevice::new();
    appended(&device, &records(40));
    let bigger = Config {
        segment_bytes: 2 * Config::test_min().segment_bytes,
        ..Config::test_min()
    };
    let lsns = appended_with(&device, bigger.clone(), &records(40));
    assert_eq!(lsns.first(), Some(&41));
    let sizes: Vec<usize> = device.files().values().map(Vec::len).collect();
    assert!(
        sizes.contains(&(bigger.segment_bytes as usize)),
        "{sizes:?}"
    );
    let report = reopen(&device).expect("recovers");
    assert_eq!((report.records, report.next_lsn), (80, 81));
}

/// Found in review: a batch whose header sector landed while its record sectors kept an
/// earlier life's records — records valid on their own, at the same offsets and LSNs — was
/// accepted with the old payloads. The batch header now carries a crc32 of its records.
#[test]
fn a_new_batch_header_over_an_earlier_lifes_records_is_rejected() {
    use wal::format::*;
    use wal::limits::BATCH_HEADER_BYTES;
    let segment_bytes = wal::limits::SEGMENT_BYTES_MIN as usize;
    let records = |payloads: &[&[u8]]| -> Vec<u8> {
        let mut buf = Vec::new();
        for (k, p) in payloads.iter().enumerate() {
            let rec = RecordView {
                lsn: 10 + k as u64,
                stream: 1,
                index: 10 + k as u64,
                kind: 0,
                payload: p,
            };
            encode_record(&mut buf, &rec);
        }
        buf
    };
    let old = records(&[b"old-10", b"old-11"]);
    let new = records(&[b"new-10", b"new-11"]);
    assert_eq!(old.len(), new.len());
    let mut file = vec![0u8; segment_bytes];
    let header = SegmentHeader {
        number: 1,
        first_lsn: 10,
        segment_bytes: segment_bytes as u64,
        salt: 222,
    };
    encode_segment_header(&mut file[..BLOCK_BYTES], &header);
    // The new header landed; the records region still holds the earlier life's records.
    let batch = BatchHeader {
        salt: 222,
        first_lsn: 10,
        durable_lsn: 10,
        batch_bytes: batch_bytes(new.len()) as u32,
        record_count: 2,
        records_bytes: new.len() as u32,
        records_crc: records_crc(&new),
    };
    encode_batch_header(&mut file[BLOCK_BYTES..], &batch);
    let at = BLOCK_BYTES + BATCH_HEADER_BYTES;
    file[at..at + old.len()].copy_from_slice(&old);
    let mut got = 0;
    let recovered = recover(&[(1, &file)], &mut |_| got += 1).expect("a torn tail, cut");
    assert_eq!((got, recovered.next_lsn), (0, 10));
}

/// Found in review (the flusher's doc said appenders would hang): a host that drops the
/// flusher's task while an append waits must see the append fail, not wait for ever.
#[test]
fn appenders_fail_instead_of_hanging_when_the_flusher_is_dropped() {
    let device = wal::SimDevice::new(11);
    let (wal, _) = wal::sim::block_on(Some(&device), {
        let device = device.clone();
        async move { Wal::open_seeded(device, Config::test_min(), 3).await }
    })
    .expect("open");
    let wal = Rc::new(wal);
    let flusher = LocalExecutor::new();
    flusher.spawn({
        let wal = wal.clone();
        async move {
            let _ = wal.run().await;
        }
    });
    let appenders = LocalExecutor::new();
    let outcome = Rc::new(RefCell::new(None));
    appenders.spawn({
        let (wal, outcome) = (wal.clone(), outcome.clone());
        async move {
            *outcome.borrow_mut() = Some(wal.append(1, 0, 0, b"x").await);
        }
    });
    appenders.run_until_stalled();
    flusher.run_until_stalled();
    assert!(
        device.in_flight() > 0,
        "the batch is written but not yet durable"
    );
    assert!(outcome.borrow().is_none(), "the append waits for its write");
    flusher.clear(); // the host drops the flusher's task
    assert_eq!(appenders.run_until_stalled(), 0, "the appender finished");
    let outcome = outcome.borrow_mut().take();
    match outcome {
        Some(Err(WalError::Failed { reason })) => assert!(reason.contains("flusher")),
        other => panic!("expected a failed append, got {other:?}"),
    }
}

/// Issue 3's limit at the default configuration: a payload of exactly 1 MiB is appended,
/// recovered and read back whole; one byte more is refused, naming both sizes.
#[test]
fn a_payload_of_exactly_the_limit_round_trips_and_one_byte_more_is_refused() {
    let max = wal::limits::RECORD_PAYLOAD_BYTES_MAX;
    let config = Config::default();
    let device = MemDevice::new();
    let big: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    appended_with(&device, config.clone(), &[(4, 1, big.clone())]);
    let got = wal::sim::block_on(None, {
        let (device, config) = (device.clone(), config.clone());
        async move {
            let (wal, _) = Wal::open_seeded(device, config, 9).await?;
            let records = wal.read(4, 1, 2).await?;
            let over = wal.enqueue(4, 2, 0, &vec![0; max + 1]).await;
            Ok::<_, WalError>((records, over))
        }
    })
    .expect("reopens and reads");
    let (records, over) = got;
    assert_eq!(records.len(), 1);
    assert!(
        records[0].payload[..] == big[..],
        "the 1 MiB payload came back whole"
    );
    assert_eq!(
        over,
        Err(WalError::RecordTooLarge {
            payload_bytes: max + 1,
            max_bytes: max
        })
    );
}
