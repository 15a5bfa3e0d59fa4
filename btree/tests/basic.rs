//! Direct tests of the tree's operations at their boundaries.

use btree::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use btree::{block_on, Config, Direction, Error, MemStore, SimStore, Tree, WriteBatch};
use std::ops::Bound;

fn key(i: u32) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

fn new_tree() -> Tree<MemStore> {
    let c = Config::test_min();
    block_on(Tree::open(MemStore::new(c.page_size_bytes), c)).unwrap()
}

#[test]
fn put_get_delete_many_with_splits_and_merges() {
    block_on(async {
        let mut t = new_tree();
        for i in 0..3000u32 {
            t.put(&key(i * 7 % 3000), &vec![i as u8; (i % 300) as usize])
                .await
                .unwrap();
        }
        assert_eq!(t.len(), 3000);
        assert!(t.depth() >= 2);
        t.check_invariants().await.unwrap();
        for i in 0..3000u32 {
            let v = t.get(&key(i * 7 % 3000)).await.unwrap().unwrap();
            assert_eq!(v, vec![i as u8; (i % 300) as usize]);
        }
        for i in (0..3000u32).filter(|i| i % 3 != 0) {
            assert!(t.delete(&key(i)).await.unwrap());
        }
        assert!(!t.delete(&key(1)).await.unwrap());
        t.check_invariants().await.unwrap();
        assert_eq!(t.len(), 1000);
        for i in 0..3000u32 {
            assert_eq!(t.get(&key(i)).await.unwrap().is_some(), i % 3 == 0);
        }
        for i in 0..3000u32 {
            t.delete(&key(i)).await.unwrap();
        }
        assert_eq!(t.len(), 0);
        assert_eq!(t.depth(), 1);
        t.check_invariants().await.unwrap();
    });
}

#[test]
fn exact_limits_work_and_one_over_is_a_typed_error() {
    block_on(async {
        let mut t = new_tree();
        let k = vec![7u8; KEY_BYTES_MAX];
        let v = vec![9u8; VALUE_BYTES_MAX];
        t.put(&k, &v).await.unwrap();
        assert_eq!(t.get(&k).await.unwrap().unwrap(), v);
        let over_k = vec![7u8; KEY_BYTES_MAX + 1];
        assert_eq!(
            t.put(&over_k, b"v").await,
            Err(Error::KeyTooLarge {
                len: KEY_BYTES_MAX + 1,
                max: KEY_BYTES_MAX
            })
        );
        let over_v = vec![9u8; VALUE_BYTES_MAX + 1];
        assert_eq!(
            t.put(b"k", &over_v).await,
            Err(Error::ValueTooLarge {
                len: VALUE_BYTES_MAX + 1,
                max: VALUE_BYTES_MAX
            })
        );
        // Long keys that share long prefixes, so separators are long too.
        for i in 0..40u32 {
            let mut k = vec![1u8; KEY_BYTES_MAX - 4];
            k.extend_from_slice(&i.to_be_bytes());
            t.put(&k, &i.to_le_bytes()).await.unwrap();
        }
        t.check_invariants().await.unwrap();
        t.checkpoint().await.unwrap();
        let store = t.store().clone();
        drop(t);
        let t = Tree::open(store, Config::test_min()).await.unwrap();
        assert_eq!(t.get(&k).await.unwrap().unwrap(), v);
        for i in 0..40u32 {
            let mut k = vec![1u8; KEY_BYTES_MAX - 4];
            k.extend_from_slice(&i.to_be_bytes());
            assert_eq!(t.get(&k).await.unwrap().unwrap(), i.to_le_bytes());
        }
        t.check_invariants().await.unwrap();
    });
}

async fn collect(
    t: &Tree<MemStore>,
    b: (Bound<&[u8]>, Bound<&[u8]>),
    d: Direction,
) -> Vec<Vec<u8>> {
    let mut c = t.range(b, d).await.unwrap();
    let mut out = Vec::new();
    while let Some((k, _)) = c.next().await.unwrap() {
        out.push(k);
    }
    out
}

#[test]
fn ranges_both_directions_and_bounds() {
    block_on(async {
        let mut t = new_tree();
        for i in 0..500u32 {
            t.put(&key(i * 2), &key(i)).await.unwrap();
        }
        let lo = key(100);
        let hi = key(200);
        let f = collect(
            &t,
            (Bound::Included(&lo), Bound::Excluded(&hi)),
            Direction::Forward,
        )
        .await;
        assert_eq!(f, (50..100).map(|i| key(i * 2)).collect::<Vec<_>>());
        let r = collect(
            &t,
            (Bound::Excluded(&lo), Bound::Included(&hi)),
            Direction::Reverse,
        )
        .await;
        assert_eq!(r, (51..=100).rev().map(|i| key(i * 2)).collect::<Vec<_>>());
        let all = collect(&t, (Bound::Unbounded, Bound::Unbounded), Direction::Reverse).await;
        assert_eq!(all.len(), 500);
        assert_eq!(t.first().await.unwrap().unwrap().0, key(0));
        assert_eq!(t.last().await.unwrap().unwrap().0, key(998));
    });
}

#[test]
fn snapshot_sees_the_past_while_the_writer_goes_on() {
    block_on(async {
        let mut t = new_tree();
        for i in 0..400u32 {
            t.put(&key(i), b"old").await.unwrap();
        }
        let s = t.snapshot();
        for i in 0..400u32 {
            t.put(&key(i), b"new").await.unwrap();
        }
        t.checkpoint().await.unwrap();
        for i in 0..200u32 {
            t.delete(&key(i)).await.unwrap();
        }
        t.checkpoint().await.unwrap();
        t.check_invariants().await.unwrap();
        for i in 0..400u32 {
            assert_eq!(s.get(&key(i)).await.unwrap().unwrap(), b"old");
        }
        drop(s);
        t.checkpoint().await.unwrap();
        t.check_invariants().await.unwrap();
    });
}

#[test]
fn batch_applies_together() {
    block_on(async {
        let mut t = new_tree();
        let mut b = WriteBatch::new();
        for i in 0..100u32 {
            b.put(&key(i), b"x");
        }
        b.delete(&key(5));
        t.apply(&b).await.unwrap();
        assert_eq!(t.len(), 99);
        let mut bad = WriteBatch::new();
        bad.put(b"a", b"b").put(&vec![0; KEY_BYTES_MAX + 1], b"c");
        assert!(matches!(
            t.apply(&bad).await,
            Err(Error::KeyTooLarge { .. })
        ));
        assert_eq!(t.get(b"a").await.unwrap(), None);
    });
}

#[test]
fn reopen_after_checkpoint_and_crash() {
    block_on(async {
        let c = Config::test_min();
        let store = SimStore::new(c.page_size_bytes, 7);
        let mut t = Tree::open(store.clone(), c.clone()).await.unwrap();
        for i in 0..1000u32 {
            t.put(&key(i), &key(i)).await.unwrap();
        }
        t.checkpoint().await.unwrap();
        for i in 0..1000u32 {
            t.put(&key(i), b"lost").await.unwrap();
        }
        drop(t);
        store.crash();
        let t = Tree::open(store.clone(), c).await.unwrap();
        assert_eq!(t.len(), 1000);
        for i in 0..1000u32 {
            assert_eq!(t.get(&key(i)).await.unwrap().unwrap(), key(i));
        }
        t.check_invariants().await.unwrap();
    });
}

#[test]
fn a_batch_cut_short_by_an_io_error_is_never_seen() {
    block_on(async {
        // A cache of one page: the batch must read cold pages, and the store fails half-way.
        let config = Config {
            cache_bytes_max: 1,
            ..Config::test_min()
        };
        let store = SimStore::new(config.page_size_bytes, 3);
        let mut t = Tree::open(store.clone(), config.clone()).await.unwrap();
        for i in 0..2000u32 {
            t.put(&key(i), b"before").await.unwrap();
        }
        t.checkpoint().await.unwrap();
        let mut b = WriteBatch::new();
        for i in 0..2000u32 {
            b.put(&key(i), b"after");
        }
        // An in-order load fills its pages (about a dozen leaves here): fail well inside.
        store.fail_after(6);
        assert!(matches!(t.apply(&b).await, Err(Error::Store(_))));
        store.clear_faults();
        // Poisoned: neither reads nor writes see the half-applied batch.
        assert_eq!(t.get(&key(0)).await, Err(Error::Poisoned));
        assert_eq!(t.checkpoint().await, Err(Error::Poisoned));
        drop(t);
        store.crash();
        let t = Tree::open(store, config).await.unwrap();
        for i in 0..2000u32 {
            assert_eq!(t.get(&key(i)).await.unwrap().unwrap(), b"before");
        }
    });
}

/// A small checkpoint syncs once: its meta slot lists the pages it wrote, and open trusts the
/// slot only if they all made it. Crash it at every I/O with many seeds: open always finds
/// the previous checkpoint or the new one, whole, and sometimes falls back because the meta
/// slot landed while a page it lists did not.
#[test]
fn single_sync_checkpoint_is_all_or_nothing_at_every_crash_point() {
    block_on(async {
        let config = Config::test_min();
        let mut outcomes = [0u32; 2];
        for seed in 0..30u64 {
            for fail_at in 0..12u64 {
                let store = SimStore::new(config.page_size_bytes, seed * 131 + fail_at);
                let mut t = Tree::open(store.clone(), config.clone()).await.unwrap();
                for i in 0..300u32 {
                    t.put(&key(i), b"old").await.unwrap();
                }
                t.checkpoint().await.unwrap();
                t.put(&key(7), b"new").await.unwrap();
                t.put(&key(290), b"new").await.unwrap();
                store.fail_after(fail_at);
                let done = t.checkpoint().await.is_ok();
                store.clear_faults();
                drop(t);
                store.crash();
                let t = Tree::open(store.clone(), config.clone()).await.unwrap();
                t.check_invariants().await.unwrap();
                let v7 = t.get(&key(7)).await.unwrap().unwrap();
                let v290 = t.get(&key(290)).await.unwrap().unwrap();
                assert_eq!(v7, v290, "seed {seed} fail_at {fail_at}: half a checkpoint");
                if done {
                    assert_eq!(
                        v7, b"new",
                        "seed {seed} fail_at {fail_at}: completed checkpoint lost"
                    );
                }
                outcomes[(v7 == b"new") as usize] += 1;
                assert_eq!(t.len(), 300);
            }
        }
        assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    });
}
