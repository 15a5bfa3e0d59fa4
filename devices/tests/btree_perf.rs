//! Ad-hoc timings of the tree (not the benchmark: that is `cargo xtask bench btree`).
//!
//! `cargo test --release -p devices --test btree_perf -- --ignored --nocapture`

use btree::{block_on, Config, MemStore, PageStore, Tree, WriteBatch};
use devices::page_store::DmaPageStore;
use glommio::LocalExecutorBuilder;
use std::time::Instant;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ITEMS: u64 = 1_000_000;
const BATCH: u64 = 1000;

fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    k[..8].copy_from_slice(&h.to_be_bytes());
    k[8..16].copy_from_slice(&i.to_be_bytes());
    k
}

async fn run<S: PageStore>(name: &str, store: S) {
    let config = Config {
        cache_bytes_max: 1 << 30,
        ..Config::default()
    };
    let mut t = Tree::open(store, config).await.unwrap();
    let value = [7u8; 150];
    let start = Instant::now();
    let mut b = WriteBatch::new();
    for i in 0..ITEMS {
        b.put(&key(i), &value);
        if b.len() as u64 == BATCH {
            t.apply(&b).await.unwrap();
            b.clear();
        }
    }
    let puts = start.elapsed();
    t.checkpoint().await.unwrap();
    let with_ckpt = start.elapsed();
    eprintln!(
        "{name}: bulk insert {ITEMS} in batches of {BATCH}: {:.0} ns/op ({:.0} ns/op with the final checkpoint), depth {}",
        puts.as_nanos() as f64 / ITEMS as f64,
        with_ckpt.as_nanos() as f64 / ITEMS as f64,
        t.depth()
    );
    let mut x = 1u64;
    let start = Instant::now();
    let mut found = 0u64;
    for _ in 0..ITEMS {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let k = key((x >> 33) % ITEMS);
        found += t.get_with(&k, |v| v.is_some() as u64).await.unwrap();
    }
    let gets = start.elapsed();
    assert_eq!(found, ITEMS);
    eprintln!(
        "{name}: random warm get: {:.0} ns/op",
        gets.as_nanos() as f64 / ITEMS as f64
    );
    let mut lat = Vec::new();
    for i in 0..2000u64 {
        let s = Instant::now();
        t.put(&key(i * 7), &value).await.unwrap();
        t.checkpoint().await.unwrap();
        lat.push(s.elapsed().as_micros() as u64);
    }
    lat.sort();
    eprintln!(
        "{name}: small durable commit (put + checkpoint): p50 {} us, p99 {} us; file {} pages",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        t.store().page_count()
    );
}

#[test]
#[ignore]
fn timings_mem() {
    block_on(run("MemStore", MemStore::new(4096)));
}

#[test]
#[ignore]
fn timings_dma() {
    let dir =
        tempfile::tempdir_in(std::env::var("PERF_DIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let path = dir.path().join("perf.db");
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            let store = DmaPageStore::open(&path, 4096).await.unwrap();
            run("DmaPageStore", store).await;
        })
        .unwrap()
        .join()
        .unwrap();
}
