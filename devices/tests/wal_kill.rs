//! The WAL killed at random instants (sled's crash tests): a child process appends with many
//! tasks through glommio on the real disk and prints every acknowledgement; the parent kills
//! it with SIGKILL after a random delay, reopens the log and checks that every acknowledged
//! record is there with its payload. Five rounds on one directory, so later rounds recover
//! what earlier kills left (cut tails, leftovers).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use devices::block_device::DmaBlockDevice;
mod common;
use common::on_executor;
use wal::{Config, Wal};

const CHILD_DIR_ENV: &str = "WAL_KILL_CHILD_DIR";
const CHILD_ROUND_ENV: &str = "WAL_KILL_CHILD_ROUND";
const ROUNDS: u64 = 5;
const WRITERS: u64 = 16;

fn config() -> Config {
    Config {
        segment_bytes: 512 * 1024,
        batch_bytes_target: 16 * 1024,
        spare_segments: 1,
        tail_cache_bytes: 1024 * 1024,
        record_payload_bytes_max: 16 * 1024,
        ..Config::default()
    }
}

fn payload(stream: u64, index: u64, round: u64) -> Vec<u8> {
    let mut p = format!("{stream}/{index}/{round}/").into_bytes();
    p.resize(64 + (index as usize * 31) % 900, round as u8);
    p
}

/// The child: recover, then append forever from `WRITERS` tasks, printing each ack.
fn child(dir: String, round: u64) {
    on_executor(async move || {
        let device = DmaBlockDevice::open(&dir).await.expect("device");
        let (wal, report) = Wal::open(device, config()).await.expect("recover");
        let wal = Rc::new(wal);
        glommio::spawn_local({
            let wal = wal.clone();
            async move { wal.run().await }
        })
        .detach();
        let mut tasks = Vec::new();
        for stream in 0..WRITERS {
            let wal = wal.clone();
            let first = report.streams.get(&stream).map_or(1, |r| r.last_index + 1);
            tasks.push(glommio::spawn_local(async move {
                for index in first.. {
                    let lsn = wal
                        .append(stream, index, 0, &payload(stream, index, round))
                        .await
                        .expect("append");
                    println!("ack {stream} {index} {round} {lsn}");
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

#[test]
fn killed_at_random_instants_loses_nothing_acknowledged() {
    if let (Ok(dir), Ok(round)) = (std::env::var(CHILD_DIR_ENV), std::env::var(CHILD_ROUND_ENV)) {
        child(dir, round.parse().expect("round"));
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").expect("temp dir on the real disk");
    let exe = std::env::current_exe().expect("test binary");
    let mut acked: Vec<(u64, u64, u64, u64)> = Vec::new();
    let mut seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "killed_at_random_instants_loses_nothing_acknowledged",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("child starts");
        let stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| {
                    let f: Vec<u64> = l
                        .strip_prefix("ack ")?
                        .split(' ')
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    (f.len() == 4).then(|| (f[0], f[1], f[2], f[3]))
                })
                .collect::<Vec<_>>()
        });
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = 150 + (seed >> 33) % 350;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let got = reader.join().expect("reader");
        assert!(
            !got.is_empty(),
            "round {round}: the child acknowledged nothing"
        );
        eprintln!("round {round}: killed after {delay} ms, {} acks", got.len());
        acked.extend(got);

        // Reopen here and check every record acknowledged so far, in every round.
        let path = dir.path().to_path_buf();
        let expect = acked.clone();
        on_executor(async move || {
            let device = DmaBlockDevice::open(&path).await.expect("device");
            let (wal, report) = Wal::open(device, config()).await.expect("recovery");
            // One read per stream (a read that misses the cache scans whole segments).
            let mut top = std::collections::BTreeMap::new();
            for &(stream, index, _, _) in &expect {
                let t = top.entry(stream).or_insert(0);
                *t = index.max(*t);
            }
            let mut held = std::collections::HashMap::new();
            for (&stream, &last) in &top {
                let records = wal
                    .read(stream, 1, last + 1)
                    .await
                    .unwrap_or_else(|e| panic!("stream {stream} [1, {}]: {e}", last));
                for r in records {
                    held.insert((stream, r.index), (r.lsn, r.payload));
                }
            }
            for &(stream, index, round, lsn) in &expect {
                let (got_lsn, got) = held
                    .get(&(stream, index))
                    .unwrap_or_else(|| panic!("acked {stream}/{index} lsn {lsn} lost"));
                assert_eq!(*got_lsn, lsn, "acked {stream}/{index} moved");
                assert_eq!(&got[..], &payload(stream, index, round)[..]);
            }
            assert!(report.next_lsn > expect.iter().map(|a| a.3).max().unwrap_or(0));
        });
    }
}
