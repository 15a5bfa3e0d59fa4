//! One test per bug found, named after what broke, saying how it was found.

use btree::{block_on, Config, Direction, MemStore, SimStore, Tree, WriteBatch};

mod common;
use common::{model_key, short_key, value};

/// Found by `tests/model.rs` (its shrunk case, replayed here): with a sliced checkpoint in
/// flight, the writer freed a captured node before the checkpoint had written it; the
/// checkpoint then gave the node its long-key runs, which nobody accounted for (a leak that
/// the page accounting check reported as "page is in 0 of ...").
#[test]
fn long_key_runs_of_a_node_freed_before_its_checkpoint_wrote_it_are_not_lost() {
    block_on(async {
        let store = SimStore::new(4096, 0);
        let mut t = Tree::open(store.clone(), Config::test_min()).await.unwrap();
        let mut b = WriteBatch::new();
        b.put(&model_key(123), &value(123, 0, 7));
        t.apply(&b).await.unwrap();
        t.checkpoint().await.unwrap();
        t.put(&model_key(0), &value(0, 333, 0)).await.unwrap();
        let mut c = t
            .range::<std::ops::RangeFull>(.., Direction::Reverse)
            .await
            .unwrap();
        while c.next().await.unwrap().is_some() {}
        drop(c);
        t.put(&model_key(1), &value(1, 743, 55)).await.unwrap();
        // One page per step: the leaf with the long key is still unwritten…
        let _ = t.checkpoint_step(1).await.unwrap();
        // …when the writer copies it away.
        t.put(&model_key(159), &value(159, 48058, 52))
            .await
            .unwrap();
        let _ = t.checkpoint_step(3).await.unwrap();
        t.check_invariants().await.unwrap();
        t.checkpoint().await.unwrap();
        t.check_invariants().await.unwrap();
        drop(t);
        store.crash();
        let t = Tree::open(store, Config::test_min()).await.unwrap();
        t.check_invariants().await.unwrap();
    });
}

/// Found by `tests/model.rs` (its shrunk case, replayed here): a snapshot reader reloaded a
/// node the writer had already freed (pending), registering its long-key runs again although
/// they had been freed with it: a double free in waiting ("long-key page pending twice").
#[test]
fn reloading_a_pending_node_does_not_register_its_freed_runs_again() {
    block_on(async {
        let store = SimStore::new(4096, 0);
        let mut t = Tree::open(store.clone(), Config::test_min()).await.unwrap();
        t.put(&model_key(123), &value(123, 200, 0)).await.unwrap();
        t.put(&model_key(101), &value(101, 43464, 0)).await.unwrap();
        t.checkpoint().await.unwrap();
        let mut b = WriteBatch::new();
        b.put(&model_key(3), &value(3, 8520, 7));
        b.put(&model_key(24), &value(24, 14617, 7));
        b.put(&model_key(104), &value(104, 57461, 7));
        t.apply(&b).await.unwrap();
        t.checkpoint().await.unwrap();
        t.put(&model_key(0), &value(0, 1, 0)).await.unwrap();
        t.checkpoint().await.unwrap();
        let mut b = WriteBatch::new();
        b.delete(&model_key(0));
        t.apply(&b).await.unwrap();
        t.checkpoint().await.unwrap();
        let s1 = t.snapshot();
        for _ in 0..6 {
            t.put(&model_key(0), &value(0, 0, 0)).await.unwrap();
        }
        let mut b = WriteBatch::new();
        b.put(&model_key(0), &value(0, 0, 7));
        b.put(&model_key(3), &value(3, 17205, 7));
        b.delete(&model_key(1));
        t.apply(&b).await.unwrap();
        t.checkpoint().await.unwrap();
        t.put(&model_key(1), &value(1, 0, 0)).await.unwrap();
        let s2 = t.snapshot();
        let mut b = WriteBatch::new();
        b.put(&model_key(0), &value(0, 32856, 7));
        t.apply(&b).await.unwrap();
        // Reading through the old snapshot reloads pending nodes that hold long keys.
        let mut c = s1
            .range::<std::ops::RangeFull>(.., Direction::Forward)
            .await
            .unwrap();
        while c.next().await.unwrap().is_some() {}
        drop(c);
        t.check_invariants().await.unwrap();
        drop((s1, s2));
        t.checkpoint().await.unwrap();
        t.check_invariants().await.unwrap();
    });
}

/// Found by a hang in `tests/basic.rs`: a get that missed the cache loaded the node, the
/// cache evicted it at once (its budget was smaller than the node), and the get looked it up
/// again, forever. (The fix predates the first commit, so this test was not run against the
/// broken code; the other tests here were, and fail without their fixes.)
#[test]
fn a_get_terminates_when_the_cache_is_smaller_than_a_node() {
    block_on(async {
        let config = Config {
            cache_bytes_max: 1,
            ..Config::test_min()
        };
        let store = MemStore::new(4096);
        let mut t = Tree::open(store.clone(), config.clone()).await.unwrap();
        for i in 0..500u16 {
            t.put(&short_key(i), &[5; 200]).await.unwrap();
        }
        t.checkpoint().await.unwrap();
        drop(t);
        let t = Tree::open(store, config).await.unwrap();
        for i in 0..500u16 {
            assert_eq!(t.get(&short_key(i)).await.unwrap().unwrap(), vec![5; 200]);
        }
    });
}

/// Found by `tests/space.rs`: `shrink` ran the debug invariant check before installing the
/// relocated root, so the check walked the old root and reported the new pages as lost.
#[test]
fn shrink_installs_the_relocated_root_before_checking() {
    block_on(async {
        let mut t = Tree::open(MemStore::new(4096), Config::test_min())
            .await
            .unwrap();
        for i in 0..2000u16 {
            t.put(&short_key(i), &[6; 150]).await.unwrap();
        }
        t.checkpoint().await.unwrap();
        for i in 0..1900u16 {
            t.delete(&short_key(i)).await.unwrap();
        }
        t.shrink().await.unwrap();
        t.check_invariants().await.unwrap();
        assert_eq!(t.len(), 100);
    });
}
