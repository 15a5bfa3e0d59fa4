//! Conditions, versions, throttling, group commit, checkpoints and recovery.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::Node;
use partition::limits::PROPOSALS_IN_FLIGHT_MAX;
use partition::{CheckpointStep, Command, WriteOutcome};
use proto::{Condition, Key, WriteOp};

fn put(pk: &str, sk: &str, v: &[u8], condition: Condition) -> Command {
    Command::Put {
        key: Key::new(pk, sk),
        value: v.to_vec(),
        condition,
    }
}

fn del(pk: &str, sk: &str, condition: Condition) -> Command {
    Command::Delete {
        key: Key::new(pk, sk),
        condition,
    }
}

fn write(node: &Node, i: usize, c: Command) -> Result<WriteOutcome, proto::Error> {
    let r = node.replica(i);
    node.block_on(async move { r.write(&c).await })
}

fn get(node: &Node, i: usize, pk: &str, sk: &str) -> Option<proto::Item> {
    let r = node.replica(i);
    let key = Key::new(pk, sk);
    node.block_on(async move { r.get(&key).await })
        .expect("get")
}

fn checkpoint(node: &Node, i: usize, budget: usize) -> u64 {
    let r = node.replica(i);
    node.block_on(async move {
        loop {
            match r.checkpoint_step(budget).await.expect("checkpoint step") {
                CheckpointStep::Done { covers_index, .. } => return covers_index,
                CheckpointStep::InProgress { .. } => {}
            }
        }
    })
}

#[test]
fn conditions_are_checked_at_apply_and_versions_are_log_indexes() {
    let node = Node::new(7, 1);
    let v1 = write(&node, 0, put("p", "s", b"1", Condition::IfAbsent)).unwrap();
    assert_eq!(v1.existed, Some(false));
    assert_eq!(
        write(&node, 0, put("p", "s", b"x", Condition::IfAbsent)),
        Err(proto::Error::ConditionFailed {
            current_version: Some(v1.version)
        })
    );
    assert_eq!(
        write(
            &node,
            0,
            put("p", "s", b"x", Condition::IfVersion(v1.version + 99))
        ),
        Err(proto::Error::ConditionFailed {
            current_version: Some(v1.version)
        })
    );
    let v2 = write(
        &node,
        0,
        put("p", "s", b"2", Condition::IfVersion(v1.version)),
    )
    .unwrap();
    assert_eq!(v2.existed, Some(true));
    assert!(v2.version > v1.version, "versions grow with the log");
    let item = get(&node, 0, "p", "s").unwrap();
    assert_eq!(
        (item.value.as_slice(), item.version),
        (&b"2"[..], v2.version)
    );
    assert_eq!(
        write(&node, 0, del("p", "other", Condition::IfPresent)),
        Err(proto::Error::ConditionFailed {
            current_version: None
        })
    );
    let gone = write(&node, 0, del("p", "other", Condition::None)).unwrap();
    assert_eq!(
        gone.existed,
        Some(false),
        "deleting nothing is not an error"
    );
    let d = write(&node, 0, del("p", "s", Condition::IfVersion(v2.version))).unwrap();
    assert!(d.existed == Some(true) && d.version > v2.version);
    assert_eq!(get(&node, 0, "p", "s"), None);
    assert_eq!(
        write(&node, 0, put("p", "s", b"3", Condition::IfPresent)),
        Err(proto::Error::ConditionFailed {
            current_version: None
        })
    );
    // A batch applies atomically at one version.
    let b = write(
        &node,
        0,
        Command::Batch {
            writes: vec![
                WriteOp::Put {
                    key: Key::new("p", "a"),
                    value: b"A".to_vec(),
                },
                WriteOp::Put {
                    key: Key::new("q", ""),
                    value: b"Q".to_vec(),
                },
            ],
        },
    )
    .unwrap();
    assert_eq!(get(&node, 0, "p", "a").unwrap().version, b.version);
    assert_eq!(get(&node, 0, "q", "").unwrap().version, b.version);
    assert_eq!(node.replica(0).stats().conditions_failed, 4);
}

#[test]
fn bad_writes_are_refused_before_consensus() {
    let node = Node::new(8, 1);
    let r = node.replica(0);
    let empty = write(&node, 0, put("", "s", b"v", Condition::None));
    assert!(matches!(empty, Err(proto::Error::InvalidRequest { .. })));
    let long_sort = vec![b's'; proto::limits::SORT_KEY_BYTES_MAX + 1];
    let c = Command::Put {
        key: Key::new("p", long_sort),
        value: vec![],
        condition: Condition::None,
    };
    assert!(matches!(
        write(&node, 0, c),
        Err(proto::Error::TooLarge {
            field: proto::Field::SortKey,
            ..
        })
    ));
    // Larger than one WAL record of the test config.
    let big = put(
        "p",
        "s",
        &vec![0u8; common::wal_config().record_payload_bytes_max],
        Condition::None,
    );
    assert!(matches!(
        write(&node, 0, big),
        Err(proto::Error::TooLarge { .. })
    ));
    assert_eq!(r.stats().writes_proposed, 0);
}

#[test]
fn writes_over_the_in_flight_limit_are_throttled_not_queued() {
    let node = Node::new(9, 1);
    let results = Rc::new(RefCell::new(Vec::new()));
    let n = PROPOSALS_IN_FLIGHT_MAX + 40;
    for i in 0..n {
        let (r, results) = (node.replica(0), results.clone());
        node.spawn(async move {
            let c = put("p", &format!("{i:04}"), b"v", Condition::None);
            let out = r.write(&c).await;
            results.borrow_mut().push(out);
        });
    }
    common::drive_until(&node.exec, &node.device, || results.borrow().len() == n);
    let results = results.borrow();
    let throttled = results
        .iter()
        .filter(|r| matches!(r, Err(proto::Error::Throttled { .. })))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(throttled, 40);
    assert_eq!(ok, PROPOSALS_IN_FLIGHT_MAX);
    let stats = node.replica(0).stats();
    assert_eq!(stats.writes_throttled, 40);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.in_flight_bytes, 0);
    // Slots free up once the writes are applied.
    assert!(write(&node, 0, put("p", "after", b"v", Condition::None)).is_ok());
}

#[test]
fn the_byte_budget_throttles_large_writes() {
    let node = Node::new(10, 1);
    let value = vec![7u8; 60 * 1024];
    let results = Rc::new(RefCell::new(Vec::new()));
    let n = 200;
    for i in 0..n {
        let (r, results, value) = (node.replica(0), results.clone(), value.clone());
        node.spawn(async move {
            let out = r
                .write(&put("p", &format!("{i:04}"), &value, Condition::None))
                .await;
            results.borrow_mut().push(out);
        });
    }
    common::drive_until(&node.exec, &node.device, || results.borrow().len() == n);
    let ok = results.borrow().iter().filter(|r| r.is_ok()).count();
    let budget = partition::limits::PROPOSAL_BYTES_IN_FLIGHT_MAX;
    assert!(
        ok < n && ok * value.len() <= budget + value.len() + 64 * ok,
        "{ok}"
    );
    assert!(ok >= budget / (value.len() + 64) - 1, "{ok}");
}

#[test]
fn proposals_of_two_replicas_share_one_wal_write() {
    let node = Node::new(11, 2);
    node.advance(usize::MAX); // the start-up records' writes complete
    let before = node.wal.stats();
    assert_eq!(node.device.in_flight(), 0);
    let done = Rc::new(RefCell::new(0));
    for i in 0..2 {
        let (r, done) = (node.replica(i), done.clone());
        node.spawn(async move {
            r.write(&put("k", "", b"v", Condition::None)).await.unwrap();
            *done.borrow_mut() += 1;
        });
    }
    node.exec.run_until_stalled();
    let during = node.wal.stats();
    assert_eq!(during.records_appended - before.records_appended, 2);
    assert_eq!(
        node.device.in_flight(),
        1,
        "both entries travel in one batch write"
    );
    assert_eq!(during.batches_in_flight, 1);
    common::drive_until(&node.exec, &node.device, || *done.borrow() == 2);
}

#[test]
fn every_partition_holding_the_oldest_segment_lets_go_in_one_checkpoint_round() {
    let node = Node::new(13, 3);
    // Replicas 1 and 2 write once, early, and then idle: their entries and hard states sit
    // in the oldest segment while replica 0 fills the next ones.
    write(&node, 1, put("idle", "", b"1", Condition::None)).unwrap();
    write(&node, 2, put("idle", "", b"2", Condition::None)).unwrap();
    let value = vec![5u8; 8 * 1024];
    for i in 0..160 {
        write(
            &node,
            0,
            put("big", &format!("{i:03}"), &value, Condition::None),
        )
        .unwrap();
    }
    let held = node.wal.stats().segments_live;
    assert!(held >= 4, "the writes span several segments: {held}");
    // One round: each replica checkpoints once. Both idle ones find their hard state in the
    // oldest segment and write it anew; the old one is released once the new one is
    // durable, without waiting for another checkpoint.
    for i in 0..3 {
        checkpoint(&node, i, 64);
    }
    node.advance(100);
    assert_eq!(node.replica(1).stats().hard_state_rewrites, 1);
    assert_eq!(node.replica(2).stats().hard_state_rewrites, 1);
    node.advance(100);
    let after = node.wal.stats().segments_live;
    assert!(
        after <= 2,
        "segments live after one round: {after} (was {held})"
    );
    let node = node.crash_and_restart();
    assert_eq!(get(&node, 1, "idle", "").unwrap().value, b"1");
    assert_eq!(get(&node, 2, "idle", "").unwrap().value, b"2");
    assert_eq!(get(&node, 0, "big", "159").unwrap().value, value);
}

#[test]
fn checkpoint_then_release_then_restart_recovers_exactly() {
    let node = Node::new(12, 2);
    let value = vec![3u8; 8 * 1024];
    let mut versions = Vec::new();
    for i in 0..120 {
        let v = write(
            &node,
            0,
            put("big", &format!("{i:03}"), &value, Condition::None),
        )
        .unwrap();
        versions.push(v.version);
    }
    // Replica 1 writes once, early, and then idles: its records sit in the oldest segment.
    write(&node, 1, put("idle", "", b"i", Condition::None)).unwrap();
    for i in 120..160 {
        let v = write(
            &node,
            0,
            put("big", &format!("{i:03}"), &value, Condition::None),
        )
        .unwrap();
        versions.push(v.version);
    }
    let held = node.wal.stats().segments_live;
    assert!(held >= 4, "the writes span several segments: {held}");
    let covers = checkpoint(&node, 0, 3);
    assert_eq!(covers, node.replica(0).applied_index());
    assert_eq!(node.replica(0).stats().log_entries, 0, "raft log compacted");
    checkpoint(&node, 1, 3);
    // Releasing lets the flusher recycle; the idle replica's hard state may need one more
    // round (it is rewritten when it holds the oldest segment).
    for _ in 0..3 {
        write(&node, 0, put("tick", "", b"t", Condition::None)).unwrap();
        checkpoint(&node, 0, 64);
        checkpoint(&node, 1, 64);
        node.advance(100);
    }
    assert!(node.replica(1).stats().hard_state_rewrites >= 1);
    let after = node.wal.stats().segments_live;
    assert!(
        after <= 2,
        "segments live after release: {after} (was {held})"
    );
    // More writes after the checkpoint, then a crash with nothing in flight.
    let last = write(&node, 0, put("big", "999", b"tail", Condition::None)).unwrap();
    let node = node.crash_and_restart();
    for (i, v) in versions.iter().enumerate() {
        let item = get(&node, 0, "big", &format!("{i:03}")).expect("item survives");
        assert_eq!(item.version, *v);
        assert_eq!(item.value, value);
    }
    assert_eq!(get(&node, 0, "big", "999").unwrap().version, last.version);
    assert_eq!(get(&node, 1, "idle", "").unwrap().value, b"i");
    assert!(
        node.replica(0).applied_index() > last.version,
        "new term's entry applied"
    );
}

#[test]
fn query_pages_follow_direction_bounds_and_limit() {
    let node = Node::new(13, 1);
    for i in 0..10u8 {
        write(&node, 0, put("q", &format!("{i}"), &[i], Condition::None)).unwrap();
    }
    write(&node, 0, put("other", "5", b"x", Condition::None)).unwrap();
    let r = node.replica(0);
    let mut q = proto::Query {
        table: "t".into(),
        partition_key: b"q".to_vec(),
        start: proto::SortBound::Included(b"2".to_vec()),
        end: proto::SortBound::Excluded(b"8".to_vec()),
        direction: proto::Direction::Backward,
        limit: 4,
        resume: None,
        consistency: proto::Consistency::Strong,
    };
    let page = node.block_on({
        let (r, q) = (r.clone(), q.clone());
        async move { r.query(&q).await.unwrap() }
    });
    let sorts: Vec<_> = page.items.iter().map(|i| i.key.sort.clone()).collect();
    assert_eq!(
        sorts,
        vec![b"7".to_vec(), b"6".to_vec(), b"5".to_vec(), b"4".to_vec()]
    );
    assert_eq!(page.resume, Some(b"4".to_vec()));
    q.resume = page.resume;
    let page = node.block_on({
        let (r, q) = (r.clone(), q.clone());
        async move { r.query(&q).await.unwrap() }
    });
    let sorts: Vec<_> = page.items.iter().map(|i| i.key.sort.clone()).collect();
    assert_eq!(sorts, vec![b"3".to_vec(), b"2".to_vec()]);
    assert_eq!(page.resume, None, "no resume key when nothing is left");
    let scan = node.block_on(async move { r.scan_page(None, 0).await.unwrap() });
    assert_eq!(scan.items.len(), 11);
    assert_eq!(scan.resume, None);
}

#[test]
fn a_hard_state_that_moves_only_its_commit_index_is_not_written() {
    let node = Node::new(12, 1);
    let first = write(&node, 0, put("p", "0", b"v0", Condition::None)).unwrap();
    let before = node.replica(0).stats();
    let n = 10u64;
    let mut last = first.version;
    for i in 1..=n {
        let key = i.to_string();
        last = write(&node, 0, put("p", &key, b"v", Condition::None))
            .unwrap()
            .version;
    }
    let after = node.replica(0).stats();
    // One record per entry, none for the commit index each write moved.
    assert_eq!(after.wal_records - before.wal_records, n);
    assert!(after.hard_states_skipped - before.hard_states_skipped >= n);
    // A restart finds every write, though no durable hard state names their commit, and
    // the next write follows them.
    let node = node.crash_and_restart();
    for i in 0..=n {
        let item = get(&node, 0, "p", &i.to_string()).expect("an acknowledged write");
        assert_eq!(item.version, first.version + i);
    }
    let next = write(&node, 0, put("p", "next", b"v", Condition::None)).unwrap();
    assert!(next.version > last);
}
