//! The model test: random writes (with conditions), deletes, batches, gets, queries, scans,
//! paced checkpoints and crashes, against a `BTreeMap` oracle.
//!
//! Writes run in concurrent groups. A group that completes is checked write by write in log
//! order (a group's proposals get consecutive indexes in spawn order): each outcome —
//! applied with which version, or the condition failed with which current version — must be
//! what the oracle says. A group cut by a crash must leave a prefix of its writes applied,
//! at least up to the last one acknowledged, with the versions the log gave them.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use common::Node;
use partition::{CheckpointStep, Command, WriteOutcome};
use proptest::prelude::*;
use proto::{Condition, Key, WriteOp};

const PKS: [&str; 3] = ["a", "b", "c"];
const SKS: [&str; 4] = ["", "1", "2", "3"];
const KEYS: usize = PKS.len() * SKS.len();
/// Versions of writes whose log index is not known yet (cut by a crash) are written as
/// `UNKNOWN + position in the group`: above every real index, so no condition matches them.
const UNKNOWN: u64 = 1 << 62;

fn key(k: usize) -> Key {
    Key::new(PKS[k / SKS.len()], SKS[k % SKS.len()])
}

#[derive(Clone, Debug)]
enum Cond {
    None,
    IfAbsent,
    IfPresent,
    IfVersionCurrent,
    IfVersionWrong,
}

#[derive(Clone, Debug)]
enum W {
    Put(usize, Vec<u8>, Cond),
    Delete(usize, Cond),
    Batch(Vec<(usize, Option<Vec<u8>>)>),
}

#[derive(Clone, Debug)]
enum Op {
    Writes(Vec<W>),
    WritesThenCrash(Vec<W>, u8),
    Get(usize),
    Query {
        pk: usize,
        start: Option<(usize, bool)>,
        end: Option<(usize, bool)>,
        backward: bool,
        limit: u32,
    },
    Scan(u32),
    Checkpoint {
        steps: u8,
        budget: u8,
    },
    Crash,
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..24),
        1 => (3000usize..6000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        3 => Just(Cond::None),
        1 => Just(Cond::IfAbsent),
        1 => Just(Cond::IfPresent),
        2 => Just(Cond::IfVersionCurrent),
        1 => Just(Cond::IfVersionWrong),
    ]
}

fn write_op() -> impl Strategy<Value = W> {
    prop_oneof![
        5 => (0..KEYS, value(), cond()).prop_map(|(k, v, c)| W::Put(k, v, c)),
        2 => (0..KEYS, cond()).prop_map(|(k, c)| W::Delete(k, c)),
        1 => prop::collection::btree_map(0..KEYS, prop::option::weighted(0.8, value()), 1..5)
            .prop_map(|m| W::Batch(m.into_iter().collect())),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let bound = prop::option::of((0..SKS.len(), any::<bool>()));
    prop_oneof![
        6 => prop::collection::vec(write_op(), 1..6).prop_map(Op::Writes),
        2 => (prop::collection::vec(write_op(), 1..6), 0u8..6)
            .prop_map(|(w, n)| Op::WritesThenCrash(w, n)),
        2 => (0..KEYS).prop_map(Op::Get),
        2 => (0..PKS.len(), bound.clone(), bound, any::<bool>(), 0u32..4).prop_map(
            |(pk, start, end, backward, limit)| Op::Query { pk, start, end, backward, limit }
        ),
        1 => (0u32..5).prop_map(Op::Scan),
        2 => (1u8..4, 1u8..8).prop_map(|(steps, budget)| Op::Checkpoint { steps, budget }),
        1 => Just(Op::Crash),
    ]
}

/// The oracle: key index -> (version, value).
type Model = BTreeMap<usize, (u64, Vec<u8>)>;

/// A write with its condition resolved against the model when it was submitted.
#[derive(Clone, Debug)]
struct Resolved {
    command: Command,
    /// (key, Some(value) for a put) for every write, and the condition (batches: none).
    writes: Vec<(usize, Option<Vec<u8>>)>,
    condition: Condition,
}

fn resolve(w: &W, model: &Model) -> Resolved {
    let current = |k: usize| model.get(&k).map(|e| e.0);
    let condition = |k: usize, c: &Cond| match c {
        Cond::None => Condition::None,
        Cond::IfAbsent => Condition::IfAbsent,
        Cond::IfPresent => Condition::IfPresent,
        Cond::IfVersionCurrent => Condition::IfVersion(current(k).unwrap_or(1)),
        Cond::IfVersionWrong => Condition::IfVersion(current(k).map_or(999_999, |v| v + 1000)),
    };
    match w {
        W::Put(k, v, c) => Resolved {
            command: Command::Put {
                key: key(*k),
                value: v.clone(),
                condition: condition(*k, c),
            },
            writes: vec![(*k, Some(v.clone()))],
            condition: condition(*k, c),
        },
        W::Delete(k, c) => Resolved {
            command: Command::Delete {
                key: key(*k),
                condition: condition(*k, c),
            },
            writes: vec![(*k, None)],
            condition: condition(*k, c),
        },
        W::Batch(ws) => Resolved {
            command: Command::Batch {
                writes: ws
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => WriteOp::Put {
                            key: key(*k),
                            value: v.clone(),
                        },
                        None => WriteOp::Delete { key: key(*k) },
                    })
                    .collect(),
            },
            writes: ws.clone(),
            condition: Condition::None,
        },
    }
}

/// Applies `w` to the model at `version`: Ok(existed) or Err(current version).
fn model_apply(model: &mut Model, w: &Resolved, version: u64) -> Result<bool, Option<u64>> {
    let (k0, _) = &w.writes[0];
    let current = model.get(k0).map(|e| e.0);
    let holds = match w.condition {
        Condition::None => true,
        Condition::IfAbsent => current.is_none(),
        Condition::IfPresent => current.is_some(),
        Condition::IfVersion(v) => current == Some(v),
    };
    if !holds {
        return Err(current);
    }
    let mut existed = false;
    for (k, v) in &w.writes {
        existed |= model.contains_key(k);
        match v {
            Some(v) => {
                model.insert(*k, (version, v.clone()));
            }
            None => {
                model.remove(k);
            }
        }
    }
    Ok(existed)
}

type Outcomes = Rc<RefCell<Vec<Option<Result<WriteOutcome, proto::Error>>>>>;

/// Replica 1 shares the WAL and takes unconditional puts of fresh keys next to every group,
/// so that crashes cut batches holding both streams. Every acknowledged one must survive,
/// and nothing that was never written may appear.
#[derive(Default)]
struct Neighbour {
    issued: usize,
    acked: Rc<RefCell<Vec<usize>>>,
}

impl Neighbour {
    fn spawn(&mut self, node: &Node, n: usize) {
        for _ in 0..n {
            let i = self.issued;
            self.issued += 1;
            let (r, acked) = (node.replica(1), self.acked.clone());
            node.spawn(async move {
                let c = Command::Put {
                    key: Key::simple(format!("n{i}")),
                    value: i.to_le_bytes().to_vec(),
                    condition: Condition::None,
                };
                if r.write(&c).await.is_ok() {
                    acked.borrow_mut().push(i);
                }
            });
        }
    }

    fn check(&self, node: &Node) -> Result<(), TestCaseError> {
        let r = node.replica(1);
        let items = node.block_on(async move {
            let mut items = Vec::new();
            let mut after: Option<Key> = None;
            loop {
                let page = r.scan_page(after.as_ref(), 0).await.expect("scan");
                items.extend(page.items);
                match page.resume {
                    Some(k) => after = Some(k),
                    None => return items,
                }
            }
        });
        let mut present = std::collections::BTreeSet::new();
        for item in items {
            let i: usize = std::str::from_utf8(&item.key.partition[1..])
                .expect("utf8")
                .parse()
                .expect("a number");
            prop_assert!(i < self.issued, "a neighbour write that was never sent");
            prop_assert_eq!(item.value, i.to_le_bytes().to_vec());
            present.insert(i);
        }
        for i in self.acked.borrow().iter() {
            prop_assert!(
                present.contains(i),
                "acknowledged neighbour write {} lost",
                i
            );
        }
        Ok(())
    }
}

fn spawn_group(node: &Node, group: &[Resolved]) -> Outcomes {
    let out: Outcomes = Rc::new(RefCell::new(vec![None; group.len()]));
    for (j, w) in group.iter().enumerate() {
        let (r, out, c) = (node.replica(0), out.clone(), w.command.clone());
        node.spawn(async move {
            let o = r.write(&c).await;
            out.borrow_mut()[j] = Some(o);
        });
    }
    out
}

/// Checks one outcome against the model's verdict.
fn check_outcome(
    j: usize,
    w: &Resolved,
    got: &Result<WriteOutcome, proto::Error>,
    want: &Result<bool, Option<u64>>,
    known_version: Option<u64>,
) -> Result<(), TestCaseError> {
    match (got, want) {
        (Ok(o), Ok(existed)) => {
            // Only a write that had to look (a delete or a condition) says what was there.
            let looks = w.condition != Condition::None || w.writes.iter().any(|(_, v)| v.is_none());
            let want = looks.then_some(*existed);
            prop_assert_eq!(o.existed, want, "write {} existed", j);
            if let Some(v) = known_version {
                prop_assert_eq!(o.version, v, "write {} version", j);
            }
        }
        (Err(proto::Error::ConditionFailed { current_version }), Err(current)) => {
            if current.is_none_or(|c| c < UNKNOWN) {
                prop_assert_eq!(current_version, current, "write {} current version", j);
            }
        }
        _ => prop_assert!(
            false,
            "write {}: got {:?}, the model says {:?}",
            j,
            got,
            want
        ),
    }
    Ok(())
}

/// Everything the replica holds, by key index, from paged scans.
fn actual(node: &Node, limit: u32) -> Result<BTreeMap<usize, (u64, Vec<u8>)>, TestCaseError> {
    let r = node.replica(0);
    let items = node.block_on(async move {
        let mut items = Vec::new();
        let mut after: Option<Key> = None;
        loop {
            let page = r.scan_page(after.as_ref(), limit).await.expect("scan");
            if limit > 0 {
                assert!(page.items.len() <= limit as usize);
            }
            items.extend(page.items);
            match page.resume {
                Some(k) => after = Some(k),
                None => return items,
            }
        }
    });
    let tree_keys: Vec<_> = items
        .iter()
        .map(|i| partition::keys::item_key(&i.key))
        .collect();
    prop_assert!(
        tree_keys.windows(2).all(|w| w[0] < w[1]),
        "scan in key order"
    );
    let mut out = BTreeMap::new();
    for item in items {
        let k = (0..KEYS)
            .find(|&k| key(k) == item.key)
            .expect("a model key");
        out.insert(k, (item.version, item.value));
    }
    Ok(out)
}

fn values(m: &Model) -> BTreeMap<usize, Vec<u8>> {
    m.iter().map(|(k, (_, v))| (*k, v.clone())).collect()
}

fn run_ops(seed: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut node = Node::new(seed, 2);
    let mut model = Model::new();
    let mut neighbour = Neighbour::default();
    for op in ops {
        match op {
            Op::Writes(ws) => {
                let group: Vec<Resolved> = ws.iter().map(|w| resolve(w, &model)).collect();
                let out = spawn_group(&node, &group);
                neighbour.spawn(&node, group.len() % 3);
                common::drive_until(&node.exec, &node.device, || {
                    out.borrow().iter().all(Option::is_some)
                });
                let out = out.borrow();
                let mut prev = 0;
                for (j, w) in group.iter().enumerate() {
                    let got = out[j].as_ref().expect("resolved");
                    let version = got.as_ref().map(|o| o.version).unwrap_or(0);
                    let want = model_apply(&mut model, w, version);
                    check_outcome(j, w, got, &want, None)?;
                    if let Ok(o) = got {
                        prop_assert!(o.version > prev, "versions follow the spawn order");
                        prev = o.version;
                    }
                }
            }
            Op::WritesThenCrash(ws, completions) => {
                let group: Vec<Resolved> = ws.iter().map(|w| resolve(w, &model)).collect();
                let out = spawn_group(&node, &group);
                neighbour.spawn(&node, 1 + group.len() % 2);
                node.advance(completions as usize);
                let acked: Vec<_> = out.borrow().clone();
                node = node.crash_and_restart();
                neighbour.check(&node)?;
                let got = actual(&node, 0)?;
                // The base index of the group, if an acknowledged write tells it.
                let base = acked.iter().enumerate().find_map(|(j, o)| match o {
                    Some(Ok(o)) => Some(o.version - j as u64),
                    _ => None,
                });
                let lo = acked.iter().rposition(Option::is_some).map_or(0, |j| j + 1);
                let mut found = None;
                for p in (lo..=group.len()).rev() {
                    let mut sim = model.clone();
                    let verdicts: Vec<_> = group[..p]
                        .iter()
                        .enumerate()
                        .map(|(j, w)| model_apply(&mut sim, w, UNKNOWN + j as u64))
                        .collect();
                    if values(&sim) == values(&got) {
                        found = Some((sim, verdicts));
                        break;
                    }
                }
                let Some((sim, verdicts)) = found else {
                    return Err(TestCaseError::fail(format!(
                        "no prefix of the cut group explains the state: acked {acked:?}, \
                         model {model:?}, got {got:?}"
                    )));
                };
                for (j, a) in acked.iter().enumerate() {
                    if let Some(a) = a {
                        check_outcome(j, &group[j], a, &verdicts[j], base.map(|b| b + j as u64))?;
                    }
                }
                // Learn (and check) the versions the log gave the group's writes.
                let mut learned = base;
                for (k, (v, _)) in &sim {
                    let actual_version = got[k].0;
                    if *v >= UNKNOWN {
                        let j = v - UNKNOWN;
                        let b = actual_version - j;
                        prop_assert!(learned.is_none_or(|l| l == b), "consistent group base");
                        learned = Some(b);
                    } else {
                        prop_assert_eq!(actual_version, *v, "untouched key keeps its version");
                    }
                }
                model = got;
            }
            Op::Get(k) => {
                let r = node.replica(0);
                let item = node.block_on(async move { r.get(&key(k)).await.expect("get") });
                let want = model.get(&k).cloned();
                prop_assert_eq!(item.map(|i| (i.version, i.value)), want);
            }
            Op::Query {
                pk,
                start,
                end,
                backward,
                limit,
            } => {
                let bound = |b: Option<(usize, bool)>| match b {
                    None => proto::SortBound::Unbounded,
                    Some((s, true)) => proto::SortBound::Included(SKS[s].as_bytes().to_vec()),
                    Some((s, false)) => proto::SortBound::Excluded(SKS[s].as_bytes().to_vec()),
                };
                let mut q = proto::Query {
                    table: "t".into(),
                    partition_key: PKS[pk].as_bytes().to_vec(),
                    start: bound(start),
                    end: bound(end),
                    direction: if backward {
                        proto::Direction::Backward
                    } else {
                        proto::Direction::Forward
                    },
                    limit,
                    resume: None,
                    consistency: proto::Consistency::Strong,
                };
                let mut got = Vec::new();
                loop {
                    let r = node.replica(0);
                    let qq = q.clone();
                    let page = node.block_on(async move { r.query(&qq).await.expect("query") });
                    if limit > 0 {
                        prop_assert!(page.items.len() <= limit as usize);
                    }
                    got.extend(
                        page.items
                            .into_iter()
                            .map(|i| (i.key.sort, i.version, i.value)),
                    );
                    match page.resume {
                        Some(r) => q.resume = Some(r),
                        None => break,
                    }
                }
                let inside = |sk: &[u8]| {
                    let lo = match start {
                        None => true,
                        Some((s, true)) => sk >= SKS[s].as_bytes(),
                        Some((s, false)) => sk > SKS[s].as_bytes(),
                    };
                    let hi = match end {
                        None => true,
                        Some((s, true)) => sk <= SKS[s].as_bytes(),
                        Some((s, false)) => sk < SKS[s].as_bytes(),
                    };
                    lo && hi
                };
                let mut want: Vec<_> = model
                    .iter()
                    .filter(|(k, _)| **k / SKS.len() == pk)
                    .map(|(k, (v, val))| (key(*k).sort, *v, val.clone()))
                    .filter(|(sk, _, _)| inside(sk))
                    .collect();
                want.sort();
                if backward {
                    want.reverse();
                }
                prop_assert_eq!(got, want);
            }
            Op::Scan(limit) => {
                let got = actual(&node, limit)?;
                prop_assert_eq!(got, model.clone());
            }
            Op::Checkpoint { steps, budget } => {
                let r = node.replica(0);
                node.block_on(async move {
                    for _ in 0..steps {
                        let step = r.checkpoint_step(budget as usize).await.expect("step");
                        if let CheckpointStep::Done { covers_index, .. } = step {
                            assert!(covers_index <= r.applied_index());
                        }
                    }
                });
            }
            Op::Crash => {
                node = node.crash_and_restart();
                neighbour.check(&node)?;
            }
        }
        let got = actual(&node, 0)?;
        prop_assert_eq!(got, model.clone(), "state after the step");
    }
    let node = node.crash_and_restart();
    let got = actual(&node, 0)?;
    prop_assert_eq!(got, model, "state after a final crash");
    neighbour.check(&node)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replica_matches_the_model_across_crashes(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run_ops(seed, ops)?;
    }
}
