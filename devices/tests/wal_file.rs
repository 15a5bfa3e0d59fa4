//! The WAL on the real disk through glommio: append, drop everything, reopen, check.
//!
//! Runs in a temporary directory under /var/tmp (a real file system: O_DIRECT does not work
//! on tmpfs, and a tmpfs first file would also hide the EOPNOTSUPP probe trap).

use std::rc::Rc;

use devices::block_device::DmaBlockDevice;
mod common;
use common::on_executor;
use wal::{BlockDevice, Config, Wal};

/// Small segments so that the test wraps around and recycles on a real disk quickly.
fn config() -> Config {
    Config {
        segment_bytes: 256 * 1024,
        batch_bytes_target: 8 * 1024,
        spare_segments: 1,
        tail_cache_bytes: 128 * 1024,
        record_payload_bytes_max: 8 * 1024,
        ..Config::default()
    }
}

fn payload(stream: u64, index: u64) -> Vec<u8> {
    let mut p = format!("stream {stream} index {index} ").into_bytes();
    p.resize(100 + (index as usize * 13) % 700, b'x');
    p
}

const STREAMS: u64 = 4;
const PER_STREAM: u64 = 150;

#[test]
fn append_drop_reopen_read_back() {
    let dir = tempfile::tempdir_in("/var/tmp").expect("temp dir on the real disk");
    let path = dir.path().to_path_buf();

    let p = path.clone();
    let lsns = on_executor(async move || {
        let device = DmaBlockDevice::open(&p).await.expect("device");
        let (wal, report) = Wal::open(device, config()).await.expect("open empty");
        assert_eq!(report.records, 0);
        let wal = Rc::new(wal);
        let flusher = glommio::spawn_local({
            let wal = wal.clone();
            async move { wal.run().await }
        });
        // Concurrent appenders, one per stream, each in index order.
        let mut tasks = Vec::new();
        for stream in 0..STREAMS {
            let wal = wal.clone();
            tasks.push(glommio::spawn_local(async move {
                let mut lsns = Vec::new();
                for index in 1..=PER_STREAM {
                    let lsn = wal
                        .append(stream, index, 1, &payload(stream, index))
                        .await
                        .expect("append");
                    lsns.push(lsn);
                }
                lsns
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await);
        }
        // Reads: recent from the cache, older from disk (the cache is small).
        let got = wal.read(2, 1, PER_STREAM + 1).await.expect("read");
        assert_eq!(got.len() as u64, PER_STREAM);
        for r in &got {
            assert_eq!(&r.payload[..], &payload(2, r.index)[..]);
        }
        let stats = wal.stats();
        assert!(
            stats.segments_live > 1,
            "the test wraps segments: {stats:?}"
        );
        wal.close();
        flusher.await.expect("flusher ends cleanly");
        all.sort_unstable();
        all
    });
    assert_eq!(lsns.len() as u64, STREAMS * PER_STREAM);
    assert_eq!(lsns, (1..=STREAMS * PER_STREAM).collect::<Vec<_>>());

    // A new executor: nothing survives but the files.
    let p = path.clone();
    on_executor(async move || {
        let device = DmaBlockDevice::open(&p).await.expect("device");
        let files_before = device.list().await.expect("list").len();
        let (wal, report) = Wal::open(device, config()).await.expect("recover");
        assert_eq!(report.records, STREAMS * PER_STREAM);
        assert_eq!(report.next_lsn, STREAMS * PER_STREAM + 1);
        for stream in 0..STREAMS {
            assert_eq!(report.streams[&stream].last_index, PER_STREAM);
            let got = wal
                .read(stream, 1, PER_STREAM + 1)
                .await
                .expect("read after reopen");
            for (r, index) in got.iter().zip(1..) {
                assert_eq!((r.stream, r.index), (stream, index));
                assert_eq!(&r.payload[..], &payload(stream, index)[..]);
            }
        }
        let wal = Rc::new(wal);
        let flusher = glommio::spawn_local({
            let wal = wal.clone();
            async move { wal.run().await }
        });
        // Release everything but the last index of each stream: old segments are recycled.
        for stream in 0..STREAMS {
            wal.release(stream, PER_STREAM);
        }
        let lsn = wal
            .append(0, PER_STREAM + 1, 1, b"after")
            .await
            .expect("append");
        assert_eq!(lsn, STREAMS * PER_STREAM + 1);
        for _ in 0..100 {
            if wal.stats().segments_live <= 2 {
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        let stats = wal.stats();
        assert!(
            stats.segments_live <= 2,
            "released segments leave the log: {stats:?}"
        );
        wal.close();
        flusher.await.expect("flusher ends cleanly");
        assert!(files_before >= stats.segments_live);
    });
}
