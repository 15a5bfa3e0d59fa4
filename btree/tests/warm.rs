//! The warm-up steps (`Snapshot::warm_page`, `Snapshot::warm_run`): driven breadth-first the
//! way the node drives them after a restart, they leave every page in the cache, and a run
//! the caller got wrong is a typed error that reads nothing.

use btree::limits::WARM_RUN_PAGES_MAX;
use btree::{block_on, Config, Error, MemStore, Snapshot, Tree};

fn key(i: u32) -> Vec<u8> {
    format!("key{:08}", i.wrapping_mul(2_654_435_761) % 1_000_000).into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    vec![(i % 251) as u8; 300]
}

/// A tree of `items` items, checkpointed and reopened on the same store: an empty cache.
async fn reopened(items: u32) -> Tree<MemStore> {
    let config = Config {
        cache_bytes_max: 64 * 1024 * 1024,
        ..Config::test_min()
    };
    let store = MemStore::new(config.page_size_bytes);
    let mut t = Tree::open(store.clone(), config.clone()).await.unwrap();
    for i in 0..items {
        t.put(&key(i), &value(i)).await.unwrap();
    }
    t.checkpoint().await.unwrap();
    drop(t);
    Tree::open(store, config).await.unwrap()
}

/// The node's order: branch levels page by page, then the leaves in ascending runs.
async fn warm(view: &Snapshot<MemStore>) -> u64 {
    let mut level = vec![view.root_page()];
    let mut pages = 0;
    loop {
        pages += level.len() as u64;
        let mut next = Vec::new();
        for &id in &level {
            next.extend(view.warm_page(id).await.unwrap());
        }
        if next.is_empty() {
            return pages;
        }
        view.warm_page(next[0]).await.unwrap();
        if view.cached_is_leaf(next[0]) == Some(false) {
            level = next;
            continue;
        }
        next.sort_unstable();
        pages += next.len() as u64;
        let mut run: Vec<u64> = Vec::new();
        for id in next {
            if run
                .first()
                .is_some_and(|&f| id - f >= WARM_RUN_PAGES_MAX as u64)
            {
                assert!(
                    view.warm_run(&run).await.unwrap().is_empty(),
                    "leaves have no children"
                );
                run.clear();
            }
            run.push(id);
        }
        assert!(view.warm_run(&run).await.unwrap().is_empty());
        return pages;
    }
}

#[test]
fn a_warmed_tree_answers_every_get_from_the_cache() {
    block_on(async {
        let t = reopened(5_000).await;
        assert!(
            t.depth() >= 3,
            "the test wants branch levels: depth {}",
            t.depth()
        );
        let cold = t.cache_bytes();
        // Cold: some get needs a read.
        assert!((0..5_000u32).any(|i| t.get_cached_with(&key(i), |_| ()).unwrap().is_none()));
        let view = t.snapshot();
        let pages = warm(&view).await;
        assert!(pages > 100, "{pages} pages");
        assert!(view.cache_bytes() > cold);
        drop(view);
        for i in 0..5_000u32 {
            let got = t
                .get_cached_with(&key(i), |v| v.map(<[u8]>::to_vec))
                .unwrap();
            assert_eq!(
                got,
                Some(Some(value(i))),
                "item {i} needed a read after the warm-up"
            );
        }
        t.check_invariants().await.unwrap();
    });
}

#[test]
fn warming_twice_changes_nothing() {
    block_on(async {
        let t = reopened(2_000).await;
        let view = t.snapshot();
        warm(&view).await;
        let once = view.cache_bytes();
        warm(&view).await;
        assert_eq!(view.cache_bytes(), once);
    });
}

#[test]
fn a_bad_run_is_a_typed_error_and_reads_nothing() {
    block_on(async {
        let t = reopened(2_000).await;
        let view = t.snapshot();
        let before = view.cache_bytes();
        let wide = [1, 1 + WARM_RUN_PAGES_MAX as u64];
        assert!(matches!(
            view.warm_run(&wide).await,
            Err(Error::WarmRun { first: 1, .. })
        ));
        assert!(matches!(
            view.warm_run(&[5, 3]).await,
            Err(Error::WarmRun { first: 5, last: 3 })
        ));
        assert!(matches!(
            view.warm_run(&[4, 4]).await,
            Err(Error::WarmRun { .. })
        ));
        assert!(view.warm_run(&[]).await.unwrap().is_empty());
        assert_eq!(view.cache_bytes(), before);
    });
}
