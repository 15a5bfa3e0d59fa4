//! The log under crashes anywhere: a seeded simulated device completes writes in any order,
//! fails writes on a countdown, and on a crash loses or tears every write in flight.
//!
//! Properties, checked after every crash and at the end:
//! 1. every acknowledged record that its stream still needs is recovered, with its LSN;
//! 2. nothing that was never appended appears;
//! 3. recovered LSNs are contiguous and in order; reads match recovery.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use proptest::prelude::*;
use wal::sim::{block_on, LocalExecutor};
use wal::{recover, Config, SimDevice, Wal, WalError};

#[derive(Clone, Debug)]
enum Op {
    /// Spawn an appender for this stream with a payload of this many bytes.
    Append(u64, usize),
    /// Complete this many writes in flight.
    Complete(u8),
    /// Release the stream below (its highest acknowledged index) * fraction / 4.
    Release(u64, u8),
    /// Make a write fail after this many more.
    FailAfter(u8),
    /// Lose power.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..4u64, 0..1500usize).prop_map(|(s, n)| Op::Append(s, n)),
        6 => (1..6u8).prop_map(Op::Complete),
        2 => (0..4u64, 0..5u8).prop_map(|(s, f)| Op::Release(s, f)),
        1 => (0..20u8).prop_map(Op::FailAfter),
        1 => Just(Op::Crash),
    ]
}

/// The payload of (stream, index) written in generation `generation`: recognisable, so that
/// anything recovered can be traced to the one append that wrote it.
fn payload(stream: u64, index: u64, generation: u64, len: usize) -> Vec<u8> {
    let mut p = format!("{stream}/{index}/{generation}/").into_bytes();
    p.resize(len.max(p.len()), (index % 251) as u8);
    p
}

type Key = (u64, u64); // (stream, index)

#[derive(Default)]
struct Model {
    /// Every append ever started: (stream, index) → payloads (one per generation).
    appended: BTreeMap<Key, BTreeSet<Vec<u8>>>,
    /// Acknowledged records: (stream, index) → (lsn, payload).
    acked: BTreeMap<Key, (u64, Vec<u8>)>,
    /// Per stream, the next index to append.
    next_index: BTreeMap<u64, u64>,
    /// Per stream, released below.
    released: BTreeMap<u64, u64>,
    generation: u64,
    failed: bool,
}

struct Harness {
    config: Config,
    device: SimDevice,
    exec: LocalExecutor,
    wal: Rc<Wal<SimDevice>>,
    model: Rc<RefCell<Model>>,
}

impl Harness {
    fn open(config: Config, device: SimDevice, model: Rc<RefCell<Model>>) -> Harness {
        let d = device.clone();
        let c = config.clone();
        let seed = model.borrow().generation;
        let (wal, report) = block_on(
            Some(&device),
            async move { Wal::open_seeded(d, c, seed).await },
        )
        .unwrap_or_else(|e| panic!("recovery failed: {e}"));
        {
            let mut m = model.borrow_mut();
            m.generation += 1;
            m.failed = false;
            // Like raft: continue each stream after what recovery found.
            for s in 0..4 {
                let next = report.streams.get(&s).map_or(1, |r| r.last_index + 1);
                m.next_index.insert(s, next);
            }
        }
        let wal = Rc::new(wal);
        // The host re-releases from its checkpoints after a restart.
        for (&s, &below) in &model.borrow().released {
            wal.release(s, below);
        }
        let exec = LocalExecutor::new();
        let w = wal.clone();
        exec.spawn(async move {
            let _ = w.run().await;
        });
        exec.run_until_stalled();
        Harness {
            config,
            device,
            exec,
            wal,
            model,
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Append(stream, len) => {
                let (index, data) = {
                    let mut m = self.model.borrow_mut();
                    if m.failed {
                        return;
                    }
                    let index = *m.next_index.get(&stream).unwrap_or(&1);
                    m.next_index.insert(stream, index + 1);
                    let data = payload(stream, index, m.generation, len);
                    m.appended
                        .entry((stream, index))
                        .or_default()
                        .insert(data.clone());
                    (index, data)
                };
                let wal = self.wal.clone();
                let model = self.model.clone();
                self.exec.spawn(async move {
                    match wal.append(stream, index, 0, &data).await {
                        Ok(lsn) => {
                            let mut m = model.borrow_mut();
                            m.acked.insert((stream, index), (lsn, data));
                        }
                        Err(WalError::Failed { .. }) => model.borrow_mut().failed = true,
                        Err(e) => panic!("append failed unexpectedly: {e}"),
                    }
                });
            }
            Op::Complete(n) => {
                for _ in 0..n {
                    self.device.complete_one();
                    self.exec.run_until_stalled();
                }
            }
            Op::Release(stream, fraction) => {
                let m = self.model.borrow();
                let top = m
                    .acked
                    .range((stream, 0)..=(stream, u64::MAX))
                    .next_back()
                    .map_or(0, |((_, i), _)| *i);
                let below = top * fraction as u64 / 4;
                drop(m);
                let mut m = self.model.borrow_mut();
                let r = m.released.entry(stream).or_insert(0);
                *r = (*r).max(below);
                let below = *r;
                drop(m);
                self.wal.release(stream, below);
            }
            Op::FailAfter(n) => self.device.fail_after(n as u64),
            Op::Crash => self.crash(),
        }
        self.exec.run_until_stalled();
        self.wal.check_invariants();
    }

    fn crash(&mut self) {
        let survived = self.device.crash();
        self.exec.clear();
        let config = self.config.clone();
        let model = self.model.clone();
        check_recovered(&survived, &model.borrow());
        *self = Harness::open(config, survived, model);
        self.check_reads();
    }

    /// Reads every stream from its release point and compares with the model.
    fn check_reads(&self) {
        let m = self.model.borrow();
        for s in 0..4u64 {
            let from = m.released.get(&s).copied().unwrap_or(0).max(1);
            let to = m.next_index[&s];
            let wal = self.wal.clone();
            let got = block_on(
                Some(&self.device),
                async move { wal.read(s, from, to).await },
            )
            .unwrap_or_else(|e| panic!("read of stream {s} [{from}, {to}) failed: {e}"));
            for r in got {
                if let Some((lsn, data)) = m.acked.get(&(s, r.index)) {
                    assert!(
                        r.lsn == *lsn && r.payload[..] == data[..],
                        "read of acked record"
                    );
                }
            }
        }
    }
}

/// Recovers the device's bytes directly and checks the three properties.
fn check_recovered(device: &SimDevice, m: &Model) {
    let files = device.files();
    let views: Vec<(u64, &[u8])> = files.iter().map(|(f, b)| (*f, b.as_slice())).collect();
    let mut got: Vec<(u64, u64, u64, Vec<u8>)> = Vec::new();
    recover(&views, &mut |r| {
        got.push((r.lsn, r.stream, r.index, r.payload.to_vec()))
    })
    .unwrap_or_else(|e| panic!("recovery failed: {e}"));
    for w in got.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1, "recovered LSNs are contiguous");
    }
    let mut latest: BTreeMap<Key, (u64, Vec<u8>)> = BTreeMap::new();
    for (lsn, stream, index, data) in got {
        assert!(
            m.appended
                .get(&(stream, index))
                .is_some_and(|p| p.contains(&data)),
            "recovered a record never appended: stream {stream} index {index} lsn {lsn}"
        );
        // A rewrite of index i drops every index above it.
        latest.retain(|(s, i), _| *s != stream || *i < index);
        latest.insert((stream, index), (lsn, data));
    }
    for ((stream, index), (lsn, data)) in &m.acked {
        if *index < m.released.get(stream).copied().unwrap_or(0) {
            continue;
        }
        let found = latest.get(&(*stream, *index));
        assert!(
            found.is_some_and(|(l, d)| l == lsn && d == data),
            "acknowledged record stream {stream} index {index} lsn {lsn} lost (found lsn {:?})",
            found.map(|(l, _)| l)
        );
    }
}

fn run_case(seed: u64, ops: &[Op]) -> Rc<RefCell<Model>> {
    let model = Rc::new(RefCell::new(Model::default()));
    let mut h = Harness::open(Config::test_min(), SimDevice::new(seed), model.clone());
    for op in ops {
        h.apply(op);
    }
    // Finish cleanly: drain, close, check, reopen, check.
    if !model.borrow().failed {
        while h.device.complete_one() {
            h.exec.run_until_stalled();
        }
    }
    h.wal.check_invariants();
    h.crash();
    let stats = h.wal.stats();
    eprintln!(
        "acked {} appended {} generations {} stats {stats:?} files {}",
        model.borrow().acked.len(),
        model.borrow().appended.len(),
        model.borrow().generation,
        h.device.files().len()
    );
    model
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(3000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn acknowledged_records_survive_crashes_anywhere(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        run_case(seed, &ops);
    }
}

#[test]
fn long_run_wraps_segments_and_recycles() {
    // Many records over 16-block segments: wrap-around, recycling and back-pressure.
    let mut ops = Vec::new();
    for round in 0..400u64 {
        ops.push(Op::Append(round % 4, (round as usize * 37) % 1400));
        if round % 3 == 0 {
            ops.push(Op::Complete(3));
        }
        if round % 50 == 49 {
            for s in 0..4 {
                ops.push(Op::Release(s, 3));
            }
        }
        if round % 130 == 129 {
            ops.push(Op::Crash);
        }
    }
    let model = run_case(42, &ops);
    assert!(
        model.borrow().acked.len() > 350,
        "most appends were acknowledged"
    );
}
