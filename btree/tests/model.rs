//! The tree against a `BTreeMap` model under random operations, snapshots, sliced
//! checkpoints, injected I/O faults and crashes (SimStore loses or tears unsynced writes).
//!
//! After every reopen the tree must equal the model as of the last completed checkpoint;
//! every snapshot must equal the model as of when it was taken. A failing case prints its
//! operations and the store seed, which replay it exactly.

use btree::{block_on, Config, Direction, Error, SimStore, Snapshot, Tree, WriteBatch};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ops::Bound;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

mod common;
use common::{model_key as key, value};

#[derive(Debug, Clone)]
enum Op {
    Put(u16, u16, u8),
    Delete(u16),
    Batch(Vec<(u16, Option<u16>)>),
    Get(u16),
    Range(u16, u16, bool, bool, bool),
    Snapshot,
    CheckSnapshot(usize),
    DropSnapshot(usize),
    Checkpoint,
    CheckpointStep(u8),
    Crash,
    FaultInCheckpoint(u8),
    /// Give space back (relocates pages, checkpoints, truncates).
    Shrink,
    /// Many puts at once (start key, count, value length), to grow the tree deep.
    Fill(u16, u16, u16),
    /// Begin a detached checkpoint job, or step the one out (finishing it once durable);
    /// the other operations interleave with it as writes interleave with a core's job.
    JobStep(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0u16..2000;
    prop_oneof![
        30 => (k.clone(), any::<u16>(), any::<u8>()).prop_map(|(k, l, s)| Op::Put(k, l, s)),
        10 => k.clone().prop_map(Op::Delete),
        4 => prop::collection::vec((k.clone(), prop::option::of(any::<u16>())), 1..30).prop_map(Op::Batch),
        6 => k.clone().prop_map(Op::Get),
        5 => (k.clone(), k.clone(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(a, b, i, j, f)| Op::Range(a, b, i, j, f)),
        2 => Just(Op::Snapshot),
        2 => any::<usize>().prop_map(Op::CheckSnapshot),
        2 => any::<usize>().prop_map(Op::DropSnapshot),
        4 => Just(Op::Checkpoint),
        4 => any::<u8>().prop_map(Op::CheckpointStep),
        3 => Just(Op::Crash),
        2 => any::<u8>().prop_map(Op::FaultInCheckpoint),
        1 => (0u16..2000, 0u16..400, any::<u16>()).prop_map(|(k, n, l)| Op::Fill(k, n, l)),
        1 => Just(Op::Shrink),
        4 => any::<u8>().prop_map(Op::JobStep),
    ]
}

async fn contents(snap_or_tree: &Snapshot<SimStore>) -> Result<Model, Error> {
    let mut c = snap_or_tree
        .range::<(Bound<&[u8]>, Bound<&[u8]>)>(
            (Bound::Unbounded, Bound::Unbounded),
            Direction::Forward,
        )
        .await?;
    let mut m = Model::new();
    while let Some((k, v)) = c.next().await? {
        m.insert(k, v);
    }
    Ok(m)
}

struct World {
    store: SimStore,
    config: Config,
    tree: Option<Tree<SimStore>>,
    model: Model,
    durable: Model,
    /// The model a sliced checkpoint in flight captured.
    in_flight: Option<Model>,
    /// A detached checkpoint job and the model it captured.
    job: Option<(btree::CheckpointJob<SimStore>, Model)>,
    snaps: Vec<(Snapshot<SimStore>, Model)>,
}

impl World {
    fn t(&mut self) -> &mut Tree<SimStore> {
        self.tree.as_mut().expect("open")
    }

    /// Steps the detached job to the end and finishes it, if one is out.
    async fn drain_job(&mut self) {
        if let Some((mut job, m)) = self.job.take() {
            while !job.step(3).await.unwrap() {}
            self.t().checkpoint_finish(job).unwrap();
            self.durable = m;
        }
    }

    async fn crash_and_reopen(&mut self, newer: Vec<Model>) {
        // A job still out has not made its meta slot durable (a step returns durable only
        // after the slot's sync): the crash leaves the previous checkpoint.
        self.job = None;
        self.snaps.clear();
        self.tree = None;
        self.store.clear_faults();
        self.store.crash();
        let t = Tree::open(self.store.clone(), self.config.clone())
            .await
            .expect("reopen after crash");
        t.check_invariants().await.expect("invariants after reopen");
        let got = contents(&t.snapshot()).await.expect("read after reopen");
        if got != self.durable {
            // After a fault inside a checkpoint, any checkpoint that was under way may have
            // completed.
            let Some(m) = newer.into_iter().find(|m| *m == got) else {
                panic!(
                    "reopened tree ({} items) is not the last checkpoint ({} items)",
                    got.len(),
                    self.durable.len()
                );
            };
            self.durable = m;
        }
        assert_eq!(t.len(), self.durable.len() as u64);
        self.model = self.durable.clone();
        self.in_flight = None;
        self.tree = Some(t);
    }

    async fn run(&mut self, op: &Op) {
        if matches!(
            op,
            Op::Checkpoint | Op::CheckpointStep(_) | Op::FaultInCheckpoint(_) | Op::Shrink
        ) {
            // One checkpoint at a time: the other kinds wait for the job.
            if self.job.is_some() {
                assert_eq!(
                    self.t().checkpoint().await.unwrap_err(),
                    Error::CheckpointBusy
                );
            }
            self.drain_job().await;
        }
        match op {
            Op::JobStep(budget) => match self.job.take() {
                None if self.in_flight.is_none() => {
                    if let Some(job) = self.t().checkpoint_begin().unwrap() {
                        self.job = Some((job, self.model.clone()));
                    }
                }
                None => {}
                Some((mut job, m)) => {
                    if job.step(*budget as usize % 8 + 1).await.unwrap() {
                        self.t().checkpoint_finish(job).unwrap();
                        self.durable = m;
                    } else {
                        self.job = Some((job, m));
                    }
                }
            },
            Op::Put(k, l, s) => {
                let v = value(*k, *l, *s);
                self.t().put(&key(*k), &v).await.unwrap();
                self.model.insert(key(*k), v);
            }
            Op::Delete(k) => {
                let had = self.t().delete(&key(*k)).await.unwrap();
                assert_eq!(had, self.model.remove(&key(*k)).is_some());
            }
            Op::Batch(ops) => {
                let mut b = WriteBatch::new();
                for (k, v) in ops {
                    match v {
                        Some(l) => {
                            let v = value(*k, *l, 7);
                            b.put(&key(*k), &v);
                            self.model.insert(key(*k), v);
                        }
                        None => {
                            b.delete(&key(*k));
                            self.model.remove(&key(*k));
                        }
                    }
                }
                self.t().apply(&b).await.unwrap();
            }
            Op::Get(k) => {
                let got = self.t().get(&key(*k)).await.unwrap();
                assert_eq!(got.as_ref(), self.model.get(&key(*k)));
                // The waitless read, once the waiting one has cached the path, answers the
                // same (before, when it may answer nothing).
                let now = self
                    .t()
                    .get_cached_with(&key(*k), |v| v.map(<[u8]>::to_vec));
                if let Some(now) = now.unwrap() {
                    assert_eq!(now.as_ref(), self.model.get(&key(*k)));
                }
            }
            Op::Range(a, b, ai, bi, fwd) => {
                let (a, b) = (key(*a).min(key(*b)), key(*a).max(key(*b)));
                let lo = if *ai {
                    Bound::Included(a.as_slice())
                } else {
                    Bound::Excluded(a.as_slice())
                };
                let hi = if *bi {
                    Bound::Included(b.as_slice())
                } else {
                    Bound::Excluded(b.as_slice())
                };
                if a == b && !(*ai && *bi) {
                    return; // BTreeMap panics on an empty excluded range; nothing to compare
                }
                let dir = if *fwd {
                    Direction::Forward
                } else {
                    Direction::Reverse
                };
                let mut c = self.t().range((lo, hi), dir).await.unwrap();
                let mut got = Vec::new();
                while let Some(kv) = c.next().await.unwrap() {
                    got.push(kv);
                }
                let mut want: Vec<(Vec<u8>, Vec<u8>)> = self
                    .model
                    .range::<[u8], _>((lo, hi))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !*fwd {
                    want.reverse();
                }
                assert_eq!(got, want);
            }
            Op::Snapshot => {
                if self.snaps.len() < 4 {
                    let s = self.t().snapshot();
                    self.snaps.push((s, self.model.clone()));
                }
            }
            Op::CheckSnapshot(i) => {
                if !self.snaps.is_empty() {
                    let (s, m) = &self.snaps[i % self.snaps.len()];
                    assert_eq!(&contents(s).await.unwrap(), m);
                    // Point gets through the snapshot (they follow the branch nodes' weak
                    // child links, which the writer's changes must never mislead).
                    for (k, v) in m.iter().step_by(7) {
                        assert_eq!(s.get(k).await.unwrap().as_ref(), Some(v));
                        if let Some(now) = s.get_cached_with(k, |v| v.map(<[u8]>::to_vec)) {
                            assert_eq!(now.as_ref(), Some(v));
                        }
                    }
                    assert_eq!(s.get(b"absent").await.unwrap(), None);
                    assert_eq!(s.len(), m.len() as u64);
                }
            }
            Op::DropSnapshot(i) => {
                if !self.snaps.is_empty() {
                    let n = self.snaps.len();
                    self.snaps.remove(i % n);
                }
            }
            Op::Checkpoint => {
                self.t().checkpoint().await.unwrap();
                self.durable = self.model.clone();
                self.in_flight = None;
            }
            Op::CheckpointStep(budget) => {
                if self.in_flight.is_none() {
                    self.in_flight = Some(self.model.clone());
                }
                match self
                    .t()
                    .checkpoint_step(*budget as usize % 8 + 1)
                    .await
                    .unwrap()
                {
                    btree::CheckpointProgress::Done(_) => {
                        self.durable = self.in_flight.take().unwrap();
                    }
                    btree::CheckpointProgress::InProgress { .. } => {}
                }
            }
            Op::Fill(start, n, l) => {
                for k in *start..start.saturating_add(*n).min(2000) {
                    let v = value(k, l.wrapping_add(k) % 300 + 1, 3);
                    self.t().put(&key(k), &v).await.unwrap();
                    self.model.insert(key(k), v);
                }
            }
            Op::Shrink => {
                self.t().shrink().await.unwrap();
                self.durable = self.model.clone();
                self.in_flight = None;
            }
            Op::Crash => self.crash_and_reopen(Vec::new()).await,
            Op::FaultInCheckpoint(n) => {
                let newer: Vec<Model> = self
                    .in_flight
                    .iter()
                    .cloned()
                    .chain([self.model.clone()])
                    .collect();
                self.store.fail_after(*n as u64 % 24);
                let r = self.t().checkpoint().await;
                self.store.clear_faults();
                match r {
                    Ok(_) => {
                        self.durable = self.model.clone();
                        self.in_flight = None;
                    }
                    Err(Error::Store(_)) => {
                        // Poisoned until reopened; whichever checkpoint finished is fine.
                        assert_eq!(self.t().put(b"x", b"y").await, Err(Error::Poisoned));
                        self.crash_and_reopen(newer).await;
                    }
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
        }
        if let Some(t) = &self.tree {
            t.check_invariants().await.unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, max_shrink_iters: 2000, ..ProptestConfig::default() })]
    #[test]
    fn tree_matches_model_through_crashes(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..120)) {
        block_on(async {
            let config = Config::test_min();
            let store = SimStore::new(config.page_size_bytes, seed);
            let tree = Tree::open(store.clone(), config.clone()).await.unwrap();
            let mut w = World {
                store, config, tree: Some(tree), model: Model::new(), durable: Model::new(),
                in_flight: None, job: None, snaps: Vec::new(),
            };
            for op in &ops {
                w.run(op).await;
            }
            w.crash_and_reopen(Vec::new()).await;
        });
    }
}
