//! The tree on a real file through glommio: write, checkpoint, drop, reopen, verify.

use btree::{Config, Direction, Tree};
use devices::page_store::DmaPageStore;
use glommio::LocalExecutorBuilder;
use std::ops::Bound;

fn key(i: u32) -> Vec<u8> {
    format!(
        "user{:020}",
        (i as u64).wrapping_mul(0x9E37_79B9) % 1_000_000_007
    )
    .into_bytes()
}

#[test]
fn tree_on_a_dma_file_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tree.db");
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            let config = Config {
                cache_bytes_max: 256 * 1024,
                ..Config::default()
            };
            let store = DmaPageStore::open(&path, config.page_size_bytes)
                .await
                .unwrap();
            let mut tree = Tree::open(store, config.clone()).await.unwrap();
            for i in 0..5000u32 {
                tree.put(&key(i), &vec![i as u8; 100 + (i % 7) as usize * 1000])
                    .await
                    .unwrap();
            }
            tree.put(b"big", &vec![0xab; 400 * 1024]).await.unwrap();
            tree.checkpoint().await.unwrap();
            for i in 0..1000u32 {
                tree.delete(&key(i)).await.unwrap();
            }
            tree.checkpoint().await.unwrap();
            // Not checkpointed: must be gone after reopen.
            tree.put(b"lost", b"x").await.unwrap();
            drop(tree);

            let store = DmaPageStore::open(&path, config.page_size_bytes)
                .await
                .unwrap();
            let tree = Tree::open(store, config).await.unwrap();
            tree.check_invariants().await.unwrap();
            assert_eq!(tree.len(), 4001);
            assert_eq!(tree.get(b"lost").await.unwrap(), None);
            assert_eq!(
                tree.get(b"big").await.unwrap().unwrap(),
                vec![0xab; 400 * 1024]
            );
            for i in 0..5000u32 {
                let v = tree.get(&key(i)).await.unwrap();
                if i < 1000 {
                    assert_eq!(v, None);
                } else {
                    assert_eq!(v.unwrap(), vec![i as u8; 100 + (i % 7) as usize * 1000]);
                }
            }
            let mut c = tree
                .range::<(Bound<&[u8]>, Bound<&[u8]>)>(
                    (Bound::Unbounded, Bound::Unbounded),
                    Direction::Reverse,
                )
                .await
                .unwrap();
            let mut n = 0;
            let mut prev: Option<Vec<u8>> = None;
            while let Some((k, _)) = c.next().await.unwrap() {
                assert!(prev.as_ref().is_none_or(|p| *p > k));
                prev = Some(k);
                n += 1;
            }
            assert_eq!(n, 4001);
        })
        .unwrap()
        .join()
        .unwrap();
}

/// `read_pages` (one read for a run, the warm-up's) returns what page-by-page reads return,
/// an empty buffer reads nothing, and a run past the end or a buffer that is not whole
/// pages is a typed error.
#[test]
fn reading_a_run_of_pages_matches_reading_them_one_by_one() {
    use btree::{PageStore, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pages.db");
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            let page = Config::default().page_size_bytes;
            let store = DmaPageStore::open(&path, page).await.unwrap();
            let pages = 40u64;
            let mut all = vec![0u8; pages as usize * page];
            for (i, b) in all.iter_mut().enumerate() {
                *b = (i * 7 / 3) as u8;
            }
            store.write_pages(0, &all).await.unwrap();
            store.sync().await.unwrap();
            let (first, n) = (3u64, 32usize);
            let mut run = vec![0u8; n * page];
            store.read_pages(first, &mut run).await.unwrap();
            for k in 0..n {
                let mut one = vec![0u8; page];
                store.read_page(first + k as u64, &mut one).await.unwrap();
                assert_eq!(
                    one,
                    run[k * page..(k + 1) * page],
                    "page {}",
                    first + k as u64
                );
            }
            let mut past = vec![0u8; 2 * page];
            assert!(matches!(
                store.read_pages(pages - 1, &mut past).await,
                Err(StoreError::OutOfRange { .. })
            ));
            // No pages: nothing to read, as with the trait's default.
            store.read_pages(0, &mut []).await.unwrap();
            let mut ragged = vec![0u8; page + 1];
            assert!(matches!(
                store.read_pages(0, &mut ragged).await,
                Err(StoreError::BadBufferLength { .. })
            ));
        })
        .unwrap()
        .join()
        .unwrap();
}
