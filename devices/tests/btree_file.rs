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
