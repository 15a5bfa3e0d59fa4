//! A test node: one core's WAL and its replicas, driven by `wal::sim`'s executor over
//! simulated (or in-memory) devices, with crash and restart.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;

use btree::SimStore;
use partition::{PartitionId, Replica, ReplicaConfig};
use wal::sim::LocalExecutor;
use wal::{SimDevice, Wal};

pub type TestReplica = Replica<SimStore, SimDevice>;

/// WAL knobs for tests: small segments and batches (so recycling and disk reads happen), but
/// records large enough for a few KiB of value.
pub fn wal_config() -> wal::Config {
    let mut c = wal::Config::test_min();
    c.segment_bytes = 64 * 4096;
    c.record_payload_bytes_max = 16 * 4096;
    c.batch_bytes_target = 4 * 4096;
    c.tail_cache_bytes = 64 * 4096;
    c
}

pub fn tree_config() -> btree::Config {
    let mut c = btree::Config::test_min();
    // The model tests hold a few hundred items: the per-write invariant walk stays cheap.
    c.invariant_check_items_max = 300;
    c
}

/// One core: its executor, WAL device and replicas with their tree stores.
pub struct Node {
    pub exec: Rc<LocalExecutor>,
    pub device: SimDevice,
    pub stores: Vec<SimStore>,
    pub wal: Rc<Wal<SimDevice>>,
    pub replicas: Vec<Rc<TestReplica>>,
    seed: Cell<u64>,
}

fn step_seed(seed: u64) -> u64 {
    seed.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
}

impl Node {
    /// A fresh node with `partitions` single-voter replicas (ids 0..n).
    pub fn new(seed: u64, partitions: usize) -> Node {
        let device = SimDevice::new(seed);
        let stores = (0..partitions)
            .map(|i| SimStore::new(4096, seed ^ (i as u64 + 1)))
            .collect();
        Node::start(seed, device, stores)
    }

    fn start(seed: u64, device: SimDevice, stores: Vec<SimStore>) -> Node {
        let exec = Rc::new(LocalExecutor::new());
        let opened = Rc::new(RefCell::new(None));
        {
            let (device, stores, opened) = (device.clone(), stores.clone(), opened.clone());
            exec.spawn(async move {
                let (wal, report) = Wal::open_seeded(device, wal_config(), seed)
                    .await
                    .expect("wal opens");
                let wal = Rc::new(wal);
                let mut replicas = Vec::new();
                for (i, store) in stores.into_iter().enumerate() {
                    let tree = btree::Tree::open(store, tree_config())
                        .await
                        .expect("tree opens");
                    let r = Replica::open(
                        ReplicaConfig::single(PartitionId(i as u64)),
                        tree,
                        wal.clone(),
                        &report,
                    )
                    .await
                    .expect("replica opens");
                    replicas.push(Rc::new(r));
                }
                *opened.borrow_mut() = Some((wal, replicas));
            });
        }
        drive_until(&exec, &device, || opened.borrow().is_some());
        let (wal, replicas) = opened.borrow_mut().take().expect("opened");
        {
            let wal = wal.clone();
            exec.spawn(async move {
                let _ = wal.run().await;
            });
        }
        for r in &replicas {
            let r = r.clone();
            exec.spawn(async move {
                let _ = r.run().await;
            });
        }
        let node = Node {
            exec,
            device,
            stores,
            wal,
            replicas,
            seed: Cell::new(seed),
        };
        for i in 0..node.replicas.len() {
            let r = node.replicas[i].clone();
            node.block_on(async move { r.ready().await.expect("replica becomes ready") });
        }
        node
    }

    pub fn replica(&self, i: usize) -> Rc<TestReplica> {
        self.replicas[i].clone()
    }

    /// Runs `f` on the node's executor, completing device writes whenever it stalls.
    pub fn block_on<T: 'static>(&self, f: impl Future<Output = T> + 'static) -> T {
        let out = Rc::new(RefCell::new(None));
        let slot = out.clone();
        self.exec.spawn(async move {
            *slot.borrow_mut() = Some(f.await);
        });
        drive_until(&self.exec, &self.device, || out.borrow().is_some());
        let v = out.borrow_mut().take().expect("finished");
        v
    }

    /// Spawns `f` without waiting for it.
    pub fn spawn(&self, f: impl Future<Output = ()> + 'static) {
        self.exec.spawn(f);
    }

    /// Runs ready tasks and completes up to `writes` device writes.
    pub fn advance(&self, writes: usize) {
        self.exec.run_until_stalled();
        for _ in 0..writes {
            if !self.device.complete_one() {
                break;
            }
            self.exec.run_until_stalled();
        }
    }

    /// Power loss: every task stops, writes in flight are lost or torn, unsynced tree pages
    /// too; then the node restarts from what survived.
    pub fn crash_and_restart(self) -> Node {
        let Node {
            exec,
            device,
            stores,
            wal,
            replicas,
            seed,
        } = self;
        exec.clear();
        drop(replicas);
        drop(wal);
        let survived = device.crash();
        for s in &stores {
            s.crash();
        }
        Node::start(step_seed(seed.get()), survived, stores)
    }

    /// A clean restart: drains, then reopens over the same media (nothing lost).
    pub fn restart(self) -> Node {
        for r in &self.replicas {
            r.shutdown();
        }
        self.advance(usize::MAX);
        self.wal.close();
        self.advance(usize::MAX);
        let Node {
            exec,
            device,
            stores,
            seed,
            ..
        } = self;
        exec.clear();
        let survived = device.crash(); // nothing in flight: nothing lost
        Node::start(step_seed(seed.get()), survived, stores)
    }
}

/// Runs the executor until `done`, completing one device write whenever it stalls.
pub fn drive_until(exec: &LocalExecutor, device: &SimDevice, done: impl Fn() -> bool) {
    loop {
        exec.run_until_stalled();
        if done() {
            return;
        }
        if !device.complete_one() {
            panic!("stalled with no I/O in flight (a lost wake-up?)");
        }
    }
}
