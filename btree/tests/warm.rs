//! The warm-up step (`Snapshot::warm_run`): driven level by level the way the node drives it
//! after a restart, it leaves every page in the cache, reads nothing that is cached already,
//! and a run the caller got wrong is a typed error that reads nothing.

use btree::limits::WARM_RUN_PAGES_MAX;
use btree::{block_on, Config, Error, MemStore, PageStore, Snapshot, StoreError, Tree};
use std::cell::Cell;
use std::rc::Rc;

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
async fn warm<S: PageStore>(view: &Snapshot<S>) -> u64 {
    let mut level = vec![view.root_page()];
    let mut pages = 0;
    for _ in 1..view.depth() {
        pages += level.len() as u64;
        let mut next = Vec::new();
        for &id in &level {
            next.extend(view.warm_run(&[id]).await.unwrap());
        }
        level = next;
    }
    level.sort_unstable();
    pages += level.len() as u64;
    let mut run: Vec<u64> = Vec::new();
    for id in level {
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
    pages
}

/// A `MemStore` that counts its page reads.
#[derive(Clone)]
struct Counting(MemStore, Rc<Cell<u64>>);

impl PageStore for Counting {
    fn page_size(&self) -> usize {
        self.0.page_size()
    }
    async fn read_page(&self, page_id: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        self.1.set(self.1.get() + 1);
        self.0.read_page(page_id, buf).await
    }
    async fn write_page(&self, page_id: u64, buf: &[u8]) -> Result<(), StoreError> {
        self.0.write_page(page_id, buf).await
    }
    async fn sync(&self) -> Result<(), StoreError> {
        self.0.sync().await
    }
    fn page_count(&self) -> u64 {
        self.0.page_count()
    }
    async fn truncate(&self, page_count: u64) -> Result<(), StoreError> {
        self.0.truncate(page_count).await
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
fn warming_twice_reads_nothing_the_second_time() {
    block_on(async {
        let store = reopened(2_000).await.store().clone();
        let reads = Rc::new(Cell::new(0));
        let config = Config {
            cache_bytes_max: 64 * 1024 * 1024,
            ..Config::test_min()
        };
        let t = Tree::open(Counting(store, reads.clone()), config)
            .await
            .unwrap();
        let view = t.snapshot();
        let opened = reads.get();
        warm(&view).await;
        let once = view.cache_bytes();
        assert!(reads.get() > opened, "the first warm-up reads");
        let before = reads.get();
        warm(&view).await;
        assert_eq!(reads.get(), before, "a cached page is read again");
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
