//! Space, cache and integrity: the file stops growing under steady overwrites, shrink gives
//! space back, a tree larger than its cache works, corrupt pages are named, snapshots ship.

use btree::{block_on, Config, Error, MemStore, PageStore, ShipReceiver, SimStore, Tree};

fn key(i: u32) -> Vec<u8> {
    format!("key{:08}", i.wrapping_mul(2654435761) % 100_000).into_bytes()
}

fn new_tree(config: &Config) -> Tree<MemStore> {
    block_on(Tree::open(
        MemStore::new(config.page_size_bytes),
        config.clone(),
    ))
    .unwrap()
}

#[test]
fn steady_overwrite_stops_the_file_growing() {
    block_on(async {
        let config = Config::test_min();
        let mut t = new_tree(&config);
        for i in 0..2000u32 {
            t.put(&key(i), &[1u8; 120]).await.unwrap();
        }
        t.checkpoint().await.unwrap();
        let mut sizes = Vec::new();
        for round in 0..30u32 {
            for i in 0..400u32 {
                let k = (round * 397 + i * 13) % 2000;
                t.put(&key(k), &[round as u8; 120]).await.unwrap();
            }
            // A big value now and then, so overflow runs are freed and reused too.
            t.put(b"big", &vec![round as u8; 20_000]).await.unwrap();
            t.checkpoint().await.unwrap();
            sizes.push(t.store().page_count());
        }
        t.check_invariants().await.unwrap();
        let settled = sizes[10];
        assert!(
            sizes[10..].iter().all(|&s| s <= settled + settled / 20),
            "file keeps growing under steady overwrites: {sizes:?}"
        );
        assert_eq!(
            sizes[29], sizes[20],
            "no growth in the last ten rounds: {sizes:?}"
        );
    });
}

#[test]
fn shrink_gives_space_back() {
    block_on(async {
        let config = Config::test_min();
        let mut t = new_tree(&config);
        for i in 0..5000u32 {
            t.put(&key(i), &[2u8; 150]).await.unwrap();
        }
        t.checkpoint().await.unwrap();
        let full = t.store().page_count();
        for i in 0..4500u32 {
            t.delete(&key(i)).await.unwrap();
        }
        t.checkpoint().await.unwrap();
        let before = t.store().page_count();
        let freed = t.shrink().await.unwrap();
        let after = t.store().page_count();
        assert!(
            freed > 0 && after < full / 3,
            "shrink from {full} pages left {after} ({freed} bytes)"
        );
        assert_eq!(freed, (before - after) * config.page_size_bytes as u64);
        t.check_invariants().await.unwrap();
        let store = t.store().clone();
        drop(t);
        let t = Tree::open(store, config).await.unwrap();
        t.check_invariants().await.unwrap();
        assert_eq!(t.len(), 500);
        for i in 4500..5000u32 {
            assert_eq!(t.get(&key(i)).await.unwrap().unwrap(), vec![2u8; 150]);
        }
    });
}

#[test]
fn tree_larger_than_its_cache_reads_cold_pages() {
    block_on(async {
        let config = Config {
            cache_bytes_max: 32 * 1024,
            invariant_check_items_max: 0,
            ..Config::test_min()
        };
        let mut t = new_tree(&config);
        for i in 0..20_000u32 {
            t.put(&key(i), &i.to_le_bytes().repeat(10)).await.unwrap();
            if i % 5000 == 4999 {
                t.checkpoint().await.unwrap();
            }
        }
        t.checkpoint().await.unwrap();
        assert!(t.store().page_count() * 4096 > 20 * 32 * 1024);
        assert!(
            t.cache_bytes() <= 32 * 1024 + 4 * 4096,
            "cache holds {} bytes",
            t.cache_bytes()
        );
        for i in (0..20_000u32).step_by(7) {
            assert_eq!(
                t.get(&key(i)).await.unwrap().unwrap(),
                i.to_le_bytes().repeat(10)
            );
        }
        t.check_invariants().await.unwrap();
    });
}

#[test]
fn corrupt_page_is_an_error_naming_it() {
    block_on(async {
        let config = Config::test_min();
        let store = SimStore::new(config.page_size_bytes, 1);
        let mut t = Tree::open(store.clone(), config.clone()).await.unwrap();
        for i in 0..3000u32 {
            t.put(&key(i), &[3u8; 100]).await.unwrap();
        }
        t.checkpoint().await.unwrap();
        let root_depth = t.depth();
        drop(t);
        // Flip one byte in every data page in turn: each reopen either fails naming the
        // page or (if the page is free) reads every item intact.
        let pages = store.page_count();
        let mut named = 0;
        for id in 2..pages {
            store.corrupt_byte(id, 100, 0x40);
            let r = async {
                let t = Tree::open(store.clone(), config.clone()).await?;
                for i in 0..3000u32 {
                    if t.get(&key(i)).await? != Some(vec![3u8; 100]) {
                        panic!("wrong data handed on after corrupting page {id}");
                    }
                }
                Ok::<_, Error>(())
            }
            .await;
            match r {
                Ok(()) => {}
                Err(Error::CorruptPage { page_id, .. }) => {
                    assert_eq!(page_id, id);
                    named += 1;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
            store.corrupt_byte(id, 100, 0x40);
        }
        assert!(named > 10 && root_depth >= 2);
        // Both meta slots bad: a typed error, not an empty tree.
        store.corrupt_byte(0, 40, 1);
        store.corrupt_byte(1, 40, 1);
        assert!(matches!(
            Tree::open(store.clone(), config.clone()).await.err(),
            Some(Error::NoValidMeta { .. })
        ));
        // One meta slot bad: the other is used.
        store.corrupt_byte(0, 40, 1);
        let t = Tree::open(store.clone(), config.clone()).await.unwrap();
        assert!(t.len() == 3000 || t.is_empty());
    });
}

#[test]
fn snapshot_ships_and_rebuilds_an_equal_tree() {
    block_on(async {
        let config = Config::test_min();
        let mut src = new_tree(&config);
        for i in 0..3000u32 {
            src.put(&key(i), &vec![i as u8; (i % 500) as usize])
                .await
                .unwrap();
        }
        src.put(b"big", &vec![9u8; 100_000]).await.unwrap();
        let snap = src.snapshot();
        // The writer goes on; the shipped stream is the snapshot's.
        for i in 0..1000u32 {
            src.delete(&key(i)).await.unwrap();
        }
        let mut stream = snap.ship(16 * 1024).await.unwrap();
        let mut dst = new_tree(&config);
        let mut rx = ShipReceiver::new();
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.next_chunk().await.unwrap() {
            chunks.push(chunk);
        }
        assert!(chunks.len() > 10);
        for (i, c) in chunks.iter().enumerate() {
            let done = rx.apply(&mut dst, c).await.unwrap();
            assert_eq!(done, i + 1 == chunks.len());
        }
        dst.checkpoint().await.unwrap();
        assert_eq!(dst.len(), snap.len());
        let mut a = snap
            .range::<std::ops::RangeFull>(.., btree::Direction::Forward)
            .await
            .unwrap();
        let mut b = dst
            .range::<std::ops::RangeFull>(.., btree::Direction::Forward)
            .await
            .unwrap();
        loop {
            let (x, y) = (a.next().await.unwrap(), b.next().await.unwrap());
            assert_eq!(x, y);
            if x.is_none() {
                break;
            }
        }
        // A damaged or out-of-order chunk is a typed error.
        let mut rx = ShipReceiver::new();
        let mut other = new_tree(&config);
        let mut bad = chunks[0].clone();
        bad[30] ^= 1;
        assert!(matches!(
            rx.apply(&mut other, &bad).await,
            Err(Error::BadShipChunk { .. })
        ));
        assert!(matches!(
            rx.apply(&mut other, &chunks[1]).await,
            Err(Error::BadShipChunk { .. })
        ));
    });
}

/// Dirty pages are pinned until a checkpoint: a load far beyond the cache budget without
/// one must not rescan the whole cache on every write (it did: quadratic).
#[test]
fn many_writes_beyond_the_budget_before_a_checkpoint_stay_linear() {
    block_on(async {
        let config = Config {
            cache_bytes_max: 16 * 1024,
            invariant_check_items_max: 0,
            ..Config::test_min()
        };
        let mut t = new_tree(&config);
        let writes = 60_000u32;
        for i in 0..writes {
            t.put(&key(i), &[4u8; 100]).await.unwrap();
        }
        t.checkpoint().await.unwrap();
        // Counted, not timed: with the bug every write past the budget scanned the cache.
        let scans = t.cache_eviction_scans();
        assert!(
            scans < u64::from(writes) / 10,
            "{scans} whole-cache eviction scans for {writes} writes"
        );
        assert!(t.cache_bytes() <= 16 * 1024 + 4 * 4096);
        assert_eq!(t.get(&key(7)).await.unwrap().unwrap(), vec![4u8; 100]);
    });
}

/// Pins a coupling found in review of the open path: open recreates a store of at most three
/// pages with no valid meta slot (an interrupted create: two slots and an empty root). That is
/// safe only while a tree that has held items never comes back to three pages; if `shrink`
/// ever gets there, rotten meta slots would silently become a new, empty tree, and this test
/// fails first.
#[test]
fn a_shrunk_small_tree_whose_meta_slots_rot_is_an_error_not_a_new_empty_tree() {
    block_on(async {
        let config = Config::test_min();
        let store = SimStore::new(config.page_size_bytes, 5);
        let mut t = Tree::open(store.clone(), config.clone()).await.unwrap();
        for i in 0..3u32 {
            t.put(&key(i), &[4u8; 20]).await.unwrap();
            t.checkpoint().await.unwrap();
            t.shrink().await.unwrap();
        }
        t.delete(&key(0)).await.unwrap();
        t.checkpoint().await.unwrap();
        t.shrink().await.unwrap();
        drop(t);
        store.corrupt_byte(0, 40, 1);
        store.corrupt_byte(1, 40, 1);
        assert!(matches!(
            Tree::open(store.clone(), config.clone()).await.err(),
            Some(Error::NoValidMeta { .. })
        ));
    });
}

#[test]
fn an_in_order_load_fills_its_pages() {
    block_on(async {
        // The same items, loaded in key order and out of it: split at the end of a node when
        // its last entry was just appended, an in-order load leaves its pages full, where
        // splitting at the midpoint left every page but the last half empty.
        let config = Config::test_min();
        let mut pages = Vec::new();
        for scramble in [false, true] {
            let mut t = new_tree(&config);
            for j in 0..5000u32 {
                let i = if scramble {
                    j.wrapping_mul(7919) % 5000
                } else {
                    j
                };
                t.put(format!("key{i:08}").as_bytes(), &[1u8; 40])
                    .await
                    .unwrap();
            }
            t.checkpoint().await.unwrap();
            t.check_invariants().await.unwrap();
            pages.push(t.store().page_count());
        }
        let (in_order, scrambled) = (pages[0], pages[1]);
        assert!(
            in_order * 4 < scrambled * 3,
            "in order {in_order} pages, out of order {scrambled}"
        );
    });
}
