//! One test per bug found, named after what broke, saying how it was found.

use btree::{block_on, Config, Direction, MemStore, SimStore, Tree, WriteBatch};

fn long_key(i: u16) -> Vec<u8> {
    let mut k = vec![b'L'; 1100];
    k.extend_from_slice(format!("{i:05}").as_bytes());
    k
}

fn short_key(i: u16) -> Vec<u8> {
    format!("k{i:05}").into_bytes()
}

/// Found by `tests/model.rs`: with a sliced checkpoint in flight, the writer freed a
/// captured node before the checkpoint had written it; the checkpoint then gave the node its
/// long-key runs, which nobody freed and the next checkpoint's freelist left out (leaked).
#[test]
fn long_key_runs_of_a_node_freed_before_its_checkpoint_wrote_it_are_not_lost() {
    block_on(async {
        let store = SimStore::new(4096, 0);
        let mut t = Tree::open(store.clone(), Config::test_min()).await.unwrap();
        t.put(&short_key(1), &[1; 40]).await.unwrap();
        t.checkpoint().await.unwrap();
        t.put(&long_key(0), &[2; 33]).await.unwrap();
        t.put(&short_key(2), &[3; 100]).await.unwrap();
        // One page per step: the leaf with the long key is still unwritten…
        let _ = t.checkpoint_step(1).await.unwrap();
        // …when the writer copies it away.
        let mut b = WriteBatch::new();
        b.delete(&long_key(0));
        t.apply(&b).await.unwrap();
        t.checkpoint().await.unwrap();
        t.check_invariants().await.unwrap();
        drop(t);
        store.crash();
        let t = Tree::open(store, Config::test_min()).await.unwrap();
        t.check_invariants().await.unwrap();
    });
}

/// Found by `tests/model.rs`: a snapshot reader reloaded an evicted node the writer had
/// already freed (pending), registering its long-key runs again although they had been
/// freed with it: a double free in waiting.
#[test]
fn reloading_a_pending_node_does_not_register_its_freed_runs_again() {
    block_on(async {
        let config = Config {
            cache_bytes_max: 4096,
            ..Config::test_min()
        };
        let mut t = Tree::open(MemStore::new(4096), config).await.unwrap();
        for i in [0u16, 41, 82, 123] {
            t.put(&long_key(i), &[1; 10]).await.unwrap();
        }
        for i in 1..200u16 {
            t.put(&short_key(i), &[2; 100]).await.unwrap();
        }
        t.checkpoint().await.unwrap();
        let snap = t.snapshot();
        for i in 1..200u16 {
            t.put(&short_key(i), &[3; 100]).await.unwrap();
        }
        t.put(&long_key(0), &[4; 10]).await.unwrap();
        // Reads through the snapshot reload pending nodes that hold long keys.
        let mut c = snap
            .range::<std::ops::RangeFull>(.., Direction::Forward)
            .await
            .unwrap();
        while c.next().await.unwrap().is_some() {}
        t.check_invariants().await.unwrap();
        drop(c);
        drop(snap);
        t.checkpoint().await.unwrap();
        t.check_invariants().await.unwrap();
    });
}

/// Found by a hang in `tests/basic.rs`: a get that missed the cache loaded the node, the
/// cache evicted it at once (its budget was smaller than the node), and the get looked it up
/// again, forever.
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
