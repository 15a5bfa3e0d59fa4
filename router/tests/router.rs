//! percore-router as a real process in front of a fake metadata service and fake node cores
//! (see `common`): forwarding, split batches, scans, refusals and retries, dead nodes, a
//! dead meta, the constant-rate refresh, and a clean stop.

mod common;

use std::time::Duration;

use common::{key, FakeMeta, FakeNode, RouterProc};
use proto::{Consistency, Error, Scan, WriteOp, WriteOutcome};

fn create(c: &mut client::blocking::Client, name: &str, partitions: u32) {
    c.create_table(proto::CreateTable {
        name: name.into(),
        key_schema: proto::KeySchema {
            partition_key: "pk".into(),
            sort_key: None,
        },
        capacity: proto::CapacityMode::OnDemand,
        partitions,
    })
    .expect("create through the router");
}

fn server_error(e: client::Error) -> Error {
    match e {
        client::Error::Server(e) => e,
        other => panic!("expected a server error, got {other}"),
    }
}

#[test]
fn requests_reach_the_owning_core_and_batches_are_split_and_merged() {
    let (a, b) = (FakeNode::start(), FakeNode::start());
    let meta = FakeMeta::start(vec![a.addr(), b.addr()]);
    // A long refresh period, so that meta's calls below are the misses' alone.
    let mut router = RouterProc::start(
        meta.addr(),
        &["--cores", "0", "--refresh-interval-ms", "60000"],
    );
    let mut c = router.client();
    create(&mut c, "users", 4);
    a.hold_from(&meta.routes("users"));
    b.hold_from(&meta.routes("users"));

    // Table admin goes to meta.
    assert_eq!(c.describe_table("users").unwrap().partitions, 4);
    assert_eq!(
        c.list_tables(None, 0).unwrap().names,
        vec!["users".to_string()]
    );

    // Single-key operations: a node answers WrongOwner for any key it does not hold, and
    // the fake meta never moves anything, so a success means the first route was right.
    for i in 0..40 {
        c.put("users", key(i), vec![i as u8]).expect("put");
    }
    assert_eq!(a.items() + b.items(), 40);
    assert!(a.items() > 0 && b.items() > 0, "both nodes hold some keys");
    for i in 0..40 {
        let item = c
            .get("users", key(i), Consistency::Strong)
            .unwrap()
            .unwrap();
        assert_eq!(item.value, vec![i as u8]);
    }
    assert!(c
        .get("users", key(999), Consistency::Strong)
        .unwrap()
        .is_none());
    assert!(
        c.delete("users", key(0), proto::Condition::None)
            .unwrap()
            .existed
    );

    // A batch write spanning every partition: outcomes come back in the request's order.
    let writes: Vec<WriteOp> = (100..125)
        .map(|i| WriteOp::Put {
            key: key(i),
            value: vec![7],
        })
        .collect();
    let outcomes = c.batch_write("users", writes).unwrap();
    assert_eq!(outcomes.len(), 25);
    let versions: Vec<u64> = outcomes
        .iter()
        .map(|o| match o {
            WriteOutcome::Written { version } => *version,
            WriteOutcome::Failed(e) => panic!("a batch write failed: {e}"),
        })
        .collect();
    assert!(versions.iter().all(|&v| v > 0));
    assert_eq!(a.items() + b.items(), 39 + 25);

    // A batch get across partitions and nodes, absent keys left out.
    let keys: Vec<_> = (95..125).map(key).collect();
    let got = c.batch_get("users", keys, Consistency::Strong).unwrap();
    assert_eq!(got.items.len(), 25);
    assert!(got.unprocessed.is_empty());

    // A scan follows the pages partition after partition, each page to its owner.
    let all = c
        .scan_all(Scan {
            table: "users".into(),
            limit: 0,
            resume: None,
            consistency: Consistency::Strong,
        })
        .unwrap();
    assert_eq!(all.len(), 64);

    // A cold cache of one table costs meta one table map, not a lookup per request.
    let (maps, lookups) = {
        let st = meta.state.lock().unwrap();
        (st.table_maps, st.lookups)
    };
    assert_eq!(
        (maps, lookups),
        (1, 0),
        "one fill for the table, then no lookup"
    );

    // Errors from meta and from validation come back typed.
    // Requests to a table that does not exist: meta is asked once, not once per request.
    for _ in 0..20 {
        assert!(matches!(
            server_error(c.put("nosuch", key(1), vec![]).unwrap_err()),
            Error::UnknownTable { .. }
        ));
    }
    let asked = meta.lookups() - 1;
    assert!(
        asked <= 2,
        "20 requests to an unknown table cost meta {asked} calls"
    );
    assert!(matches!(
        server_error(c.put("users", proto::Key::simple(""), vec![]).unwrap_err()),
        Error::InvalidRequest { .. } | Error::TooLarge { .. }
    ));

    c.delete_table("users").unwrap();
    assert!(c.list_tables(None, 0).unwrap().names.is_empty());
    drop(c);

    let status = router.stop(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM drains and exits 0: {status:?}");
    let log = router.log_text();
    assert!(
        log.contains("core stopped") && log.contains("hits="),
        "{log}"
    );
}

#[test]
fn a_moved_partition_costs_a_retry_through_meta() {
    let (a, b) = (FakeNode::start(), FakeNode::start());
    let meta = FakeMeta::start(vec![a.addr()]);
    // A long refresh period: the move must be found through the refusal, not the refresh.
    let router = RouterProc::start(
        meta.addr(),
        &["--cores", "0", "--refresh-interval-ms", "60000"],
    );
    let mut c = router.client();
    create(&mut c, "moving", 2);
    a.hold_from(&meta.routes("moving"));
    for i in 0..20 {
        c.put("moving", key(i), b"v".to_vec()).unwrap();
    }
    let before = meta.lookups();

    // Partition 0 moves to b: a no longer holds it (answers WrongOwner), meta names b.
    meta.move_partition("moving", 0, b.addr());
    a.hold_from(&meta.routes("moving"));
    b.hold_from(&meta.routes("moving"));

    // A batch get over both partitions, sent as one request to a by the stale cache: a
    // refuses it whole, and the router asks partition by partition, partition 0 at b (the
    // fake move carried no items, so only partition 1's keys are found).
    let in_partition_1 = (0..20)
        .filter(|&i| proto::partition_index(proto::partition_key_hash(&key(i).partition), 2) == 1)
        .count();
    assert!(in_partition_1 > 0 && in_partition_1 < 20);
    let got = c
        .batch_get("moving", (0..20).map(key).collect(), Consistency::Strong)
        .expect("a batch get refused by a stale owner is sent again by partition");
    assert_eq!(got.items.len(), in_partition_1);
    assert!(got.unprocessed.is_empty());
    let mut moved = 0;
    for i in 20..60 {
        let k = key(i);
        c.put("moving", k.clone(), b"w".to_vec())
            .expect("a put to a moved partition succeeds after a retry");
        if proto::partition_index(proto::partition_key_hash(&k.partition), 2) == 0 {
            moved += 1;
        }
    }
    assert!(moved > 0);
    assert_eq!(
        b.items(),
        moved,
        "every write to partition 0 went to its new owner"
    );
    let fetched = meta.lookups() - before;
    assert!(
        (1..=3).contains(&fetched),
        "the move cost {fetched} calls to meta; one lookup should do"
    );
}

#[test]
fn a_dead_node_fails_fast_with_unavailable_and_a_live_one_goes_on() {
    let (a, b) = (FakeNode::start(), FakeNode::start());
    let meta = FakeMeta::start(vec![a.addr(), b.addr()]);
    let router = RouterProc::start(meta.addr(), &["--cores", "0"]);
    let mut c = router.client();
    create(&mut c, "halfdead", 2);
    a.hold_from(&meta.routes("halfdead"));
    b.hold_from(&meta.routes("halfdead"));
    let on = |node: u32| {
        (0..)
            .map(key)
            .find(|k| proto::partition_index(proto::partition_key_hash(&k.partition), 2) == node)
            .unwrap()
    };
    let (ka, kb) = (on(0), on(1));
    c.put("halfdead", ka.clone(), b"x".to_vec()).unwrap();
    c.put("halfdead", kb.clone(), b"x".to_vec()).unwrap();

    b.server.kill();
    // A hang would surface as the client's timeout, not as the router's typed refusal:
    // the matches below are the fail-fast checks, without a clock.
    for _ in 0..20 {
        let e = server_error(
            c.get("halfdead", kb.clone(), Consistency::Strong)
                .unwrap_err(),
        );
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        let e = server_error(c.put("halfdead", kb.clone(), b"y".to_vec()).unwrap_err());
        assert!(
            matches!(e, Error::Unavailable { .. }),
            "a write that was never sent: {e}"
        );
        assert!(c
            .get("halfdead", ka.clone(), Consistency::Strong)
            .unwrap()
            .is_some());
    }
    // A batch write with a write on each node: the dead node's write fails, the other's
    // is applied, in order.
    let outcomes = c
        .batch_write(
            "halfdead",
            vec![
                WriteOp::Put {
                    key: kb.clone(),
                    value: vec![1],
                },
                WriteOp::Put {
                    key: ka.clone(),
                    value: vec![1],
                },
            ],
        )
        .unwrap();
    assert!(
        matches!(outcomes[0], WriteOutcome::Failed(Error::Unavailable { .. })),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[1], WriteOutcome::Written { .. }),
        "{outcomes:?}"
    );
}

#[test]
fn with_meta_down_routing_goes_on_and_admin_fails_clearly() {
    let a = FakeNode::start();
    let meta = FakeMeta::start(vec![a.addr()]);
    let router = RouterProc::start(
        meta.addr(),
        &["--cores", "0", "--refresh-interval-ms", "50"],
    );
    let mut c = router.client();
    create(&mut c, "steady", 2);
    a.hold_from(&meta.routes("steady"));
    for i in 0..10 {
        c.put("steady", key(i), b"v".to_vec()).unwrap();
    }
    meta.server.kill();
    // Several refresh periods go by with meta gone: the cache keeps what it had.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..10 {
        assert!(c
            .get("steady", key(i), Consistency::Strong)
            .unwrap()
            .is_some());
        c.put("steady", key(i), b"w".to_vec()).unwrap();
    }
    match server_error(c.describe_table("steady").unwrap_err()) {
        Error::Unavailable { reason } => {
            assert!(reason.contains("metadata service"), "{reason}")
        }
        e => panic!("{e}"),
    }
    let e = server_error(c.delete_table("steady").unwrap_err());
    assert!(
        matches!(&e, Error::Unavailable { reason } if reason.contains("metadata service")),
        "{e}"
    );
    // A table the cache never saw cannot be routed.
    let e = server_error(c.get("other", key(1), Consistency::Strong).unwrap_err());
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    let log = router.log_text();
    assert!(log.contains("refresh failed"), "{log}");
}

#[test]
fn the_refresh_finds_a_move_before_any_request_is_refused() {
    let (a, b) = (FakeNode::start(), FakeNode::start());
    let meta = FakeMeta::start(vec![a.addr()]);
    let router = RouterProc::start(
        meta.addr(),
        &["--cores", "0", "--refresh-interval-ms", "50"],
    );
    let mut c = router.client();
    create(&mut c, "drift", 1);
    a.hold_from(&meta.routes("drift"));
    c.put("drift", key(1), b"v".to_vec()).unwrap();

    // Meta moves the partition; the old owner would now refuse it.
    meta.move_partition("drift", 0, b.addr());
    a.hold_from(&meta.routes("drift"));
    b.hold_from(&meta.routes("drift"));
    let a_before = a.requests();
    std::thread::sleep(Duration::from_millis(400));
    c.put("drift", key(2), b"v".to_vec()).unwrap();
    assert_eq!(
        a.requests(),
        a_before,
        "the refresh moved the route before the request"
    );
    assert_eq!(b.items(), 1);
    // Refreshes happen whether requests come or not.
    let (syncs, lookups) = (meta.syncs(), meta.lookups());
    std::thread::sleep(Duration::from_millis(300));
    assert!(meta.syncs() >= syncs + 3, "refreshes at a constant rate");
    assert_eq!(meta.lookups(), lookups, "a synced cache needs no lookups");
}

#[test]
fn two_cores_share_the_port_and_each_routes_on_its_own() {
    let a = FakeNode::start();
    let meta = FakeMeta::start(vec![a.addr()]);
    let router = RouterProc::start(meta.addr(), &["--cores", "0,1"]);
    let mut c = router.client();
    create(&mut c, "spread", 4);
    a.hold_from(&meta.routes("spread"));
    drop(c);
    // Several connections: the kernel spreads them over both cores.
    let mut clients: Vec<_> = (0..8).map(|_| router.client()).collect();
    for (n, c) in clients.iter_mut().enumerate() {
        for i in 0..10 {
            c.put("spread", key(n * 100 + i), b"v".to_vec()).unwrap();
        }
    }
    assert_eq!(a.items(), 80);
}

#[test]
fn the_merkle_sync_fetches_what_changed_and_drops_what_is_gone() {
    let (a, b) = (FakeNode::start(), FakeNode::start());
    let meta = FakeMeta::start(vec![a.addr()]);
    let router = RouterProc::start(
        meta.addr(),
        &["--cores", "0", "--refresh-interval-ms", "100"],
    );
    let mut c = router.client();
    create(&mut c, "wide", 64);
    create(&mut c, "gone", 2);
    a.hold_from(&meta.routes("wide"));
    a.hold_from(&meta.routes("gone"));
    // Let a few refreshes bring the whole map over, then count what one move costs.
    std::thread::sleep(Duration::from_millis(500));
    let asked = meta.state.lock().unwrap().prefixes_expanded;
    meta.move_partition("wide", 17, b.addr());
    a.hold_from(&meta.routes("wide"));
    b.hold_from(&meta.routes("wide"));
    std::thread::sleep(Duration::from_millis(400));
    let asked_for_move = meta.state.lock().unwrap().prefixes_expanded - asked;
    // One changed leaf among 66: about two prefixes per level down to it, far from 66.
    assert!(
        (1..=32).contains(&asked_for_move),
        "one move cost {asked_for_move} prefixes"
    );
    let lookups = meta.lookups();
    let k = (0..)
        .map(key)
        .find(|k| proto::partition_index(proto::partition_key_hash(&k.partition), 64) == 17)
        .unwrap();
    c.put("wide", k, b"v".to_vec()).unwrap();
    assert_eq!(
        b.items(),
        1,
        "the synced route led to the new owner at once"
    );
    assert_eq!(meta.lookups(), lookups);

    // A table deleted elsewhere (through another router) leaves this cache at the next sync.
    meta.state.lock().unwrap().tables.remove("gone");
    std::thread::sleep(Duration::from_millis(400));
    let e = server_error(c.get("gone", key(1), Consistency::Strong).unwrap_err());
    assert!(matches!(e, Error::UnknownTable { .. }), "{e}");
}
