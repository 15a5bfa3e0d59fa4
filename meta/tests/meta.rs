//! The real `percore-meta` on 127.0.0.1 with fake nodes: table admin, placement and
//! assignment, routing answers and the sync, restarts, bad input.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use client::Error as ClientError;
use common::{create, FakeNode, MetaProc};
use proto::cluster::{ClusterReply, ClusterRequest, Prefix as WirePrefix, Route};
use proto::{Error, Request, TableStatus};

fn temp() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("percore-meta-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("meta");
    (dir, data)
}

fn register(meta: &MetaProc, node: &FakeNode) -> Vec<(proto::TableDescription, Vec<Route>)> {
    match meta
        .cluster()
        .call(&ClusterRequest::Register(node.info.clone()))
    {
        ClusterReply::Assigned { tables } => tables,
        other => panic!("register answered {other:?}"),
    }
}

fn table_map(meta: &MetaProc, table: &str) -> Vec<Route> {
    match meta.cluster().call(&ClusterRequest::TableMap {
        table: table.into(),
    }) {
        ClusterReply::Routes(r) => r,
        other => panic!("table map answered {other:?}"),
    }
}

fn server_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Error {
    match r {
        Err(ClientError::Server(e)) => e,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// Assign messages received, as (table name, partition indexes).
fn assigned(node: &FakeNode) -> Vec<(String, Vec<u32>)> {
    node.take()
        .into_iter()
        .filter_map(|m| match m {
            ClusterRequest::Assign { table, routes } => {
                Some((table.name, routes.iter().map(|r| r.index).collect()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn tables_are_placed_assigned_looked_up_synced_and_deleted() {
    let (_dir, data) = temp();
    let meta = MetaProc::start(&data, &["--node-timeout-ms", "60000"]);
    let mut c = meta.client();

    // No node yet: nowhere to place a table.
    let e = server_error(c.create_table(create("alpha", 0)));
    assert!(
        matches!(&e, Error::Unavailable { reason } if reason.contains("no node")),
        "{e}"
    );

    let n1 = FakeNode::start(1, 2);
    let n2 = FakeNode::start(2, 1);
    assert!(register(&meta, &n1).is_empty());
    assert!(register(&meta, &n2).is_empty());

    // Two per live core: three cores, six partitions, node-major round-robin.
    let t = c.create_table(create("alpha", 0)).unwrap();
    assert_eq!(
        (t.name.as_str(), t.partitions, t.status),
        ("alpha", 6, TableStatus::Active)
    );
    assert_eq!(assigned(&n1), vec![("alpha".to_string(), vec![0, 2, 3, 5])]);
    assert_eq!(assigned(&n2), vec![("alpha".to_string(), vec![1, 4])]);
    let map = table_map(&meta, "alpha");
    let placed: Vec<(u64, u32)> = map
        .iter()
        .map(|r| (r.replicas[0].node, r.replicas[0].core))
        .collect();
    assert_eq!(placed, vec![(1, 0), (2, 0), (1, 1), (1, 0), (2, 0), (1, 1)]);
    for r in &map {
        assert_eq!((r.epoch, r.leader, r.table_id), (1, 0, t.id));
        let node = if r.replicas[0].node == 1 { &n1 } else { &n2 };
        assert_eq!(
            r.replicas[0].addr,
            node.info.core_addrs[r.replicas[0].core as usize]
        );
    }

    // Describe, list, a taken name.
    assert_eq!(c.describe_table("alpha").unwrap(), t);
    c.create_table(create("beta", 3)).unwrap();
    let page = c.list_tables(None, 0).unwrap();
    assert_eq!(page.names, vec!["alpha".to_string(), "beta".to_string()]);
    let e = server_error(c.create_table(create("alpha", 1)));
    assert_eq!(
        e,
        Error::TableExists {
            name: "alpha".into()
        }
    );
    let e = server_error(c.describe_table("nope"));
    assert!(matches!(e, Error::UnknownTable { .. }));

    // Lookup is a floor query over the range starts.
    let mut cl = meta.cluster();
    for key in [&b"a"[..], b"user#42", b"zzz", b""] {
        let h = proto::partition_key_hash(key);
        match cl.call(&ClusterRequest::Lookup {
            table: "alpha".into(),
            hash: h,
        }) {
            ClusterReply::Route(r) => assert_eq!(r, map[proto::partition_index(h, 6) as usize]),
            other => panic!("lookup answered {other:?}"),
        }
    }
    assert!(matches!(
        cl.call(&ClusterRequest::Lookup {
            table: "nope".into(),
            hash: 0
        }),
        ClusterReply::Error(Error::UnknownTable { .. })
    ));

    // A router's trie synced from meta holds exactly the map.
    let root = match cl.call(&ClusterRequest::SyncRoot) {
        ClusterReply::SyncRoot { hash, count } => (hash, count),
        other => panic!("sync root answered {other:?}"),
    };
    assert_eq!(root.1, 9);
    let mut local: routing::Trie<Route> = routing::Trie::new();
    let mut session = routing::SyncSession::start(&local, root);
    while let Some(ask) = session.next_request() {
        let reply = match cl.call(&ClusterRequest::SyncExpand {
            prefixes: routing::prefixes_to_wire(&ask),
        }) {
            ClusterReply::Expansions(e) => routing::expansions_from_wire(e).unwrap(),
            other => panic!("sync expand answered {other:?}"),
        };
        session.on_reply(&mut local, reply).unwrap();
    }
    assert_eq!(local.root(), root);
    let synced: Vec<Route> = local
        .iter()
        .map(|(_, r)| r.clone())
        .filter(|r| r.table == "alpha")
        .collect();
    assert_eq!(synced, map);

    // Nodes: both alive, with their partition counts.
    match cl.call(&ClusterRequest::ListNodes) {
        ClusterReply::Nodes(nodes) => {
            let got: Vec<(u64, bool, u32)> = nodes
                .iter()
                .map(|n| (n.info.node, n.alive, n.partitions))
                .collect();
            assert_eq!(got, vec![(1, true, 6), (2, true, 3)]);
        }
        other => panic!("list nodes answered {other:?}"),
    }
    assert_eq!(
        cl.call(&ClusterRequest::Heartbeat {
            node: 2,
            stats: vec![]
        }),
        ClusterReply::Ok
    );

    // Registering again tells a node everything it holds.
    let held = register(&meta, &n2);
    let held: BTreeMap<String, Vec<u32>> = held
        .into_iter()
        .map(|(t, r)| (t.name, r.iter().map(|r| r.index).collect()))
        .collect();
    assert_eq!(
        held,
        BTreeMap::from([("alpha".into(), vec![1, 4]), ("beta".into(), vec![1])])
    );

    // Delete: each node is told to drop its partitions, then the table is gone.
    n1.take();
    n2.take();
    let d = c.delete_table("alpha").unwrap();
    assert_eq!((d.id, d.status), (t.id, TableStatus::Deleting));
    let dropped = |n: &FakeNode| -> Vec<u64> {
        n.take()
            .into_iter()
            .flat_map(|m| match m {
                ClusterRequest::Drop { partition_ids } => partition_ids,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    };
    let mut all = dropped(&n1);
    all.extend(dropped(&n2));
    all.sort();
    assert_eq!(all, map.iter().map(|r| r.partition_id).collect::<Vec<_>>());
    assert!(matches!(
        server_error(c.describe_table("alpha")),
        Error::UnknownTable { .. }
    ));
    assert!(matches!(
        cl.call(&ClusterRequest::TableMap {
            table: "alpha".into()
        }),
        ClusterReply::Error(Error::UnknownTable { .. })
    ));
    assert!(matches!(
        server_error(c.delete_table("alpha")),
        Error::UnknownTable { .. }
    ));
    // A new table of the same name gets a new id.
    let again = c.create_table(create("alpha", 2)).unwrap();
    assert!(again.id > t.id);
}

#[test]
fn a_restarted_meta_serves_the_same_map_after_a_stop_and_after_a_kill() {
    let (_dir, data) = temp();
    let mut meta = MetaProc::start(&data, &["--node-timeout-ms", "60000"]);
    let n1 = FakeNode::start(7, 2);
    register(&meta, &n1);
    let mut c = meta.client();
    let a = c.create_table(create("alpha", 5)).unwrap();
    let b = c.create_table(create("beta", 0)).unwrap();
    c.create_table(create("gone", 1)).unwrap();
    c.delete_table("gone").unwrap();
    let before = (table_map(&meta, "alpha"), table_map(&meta, "beta"));
    drop(c);

    // A clean stop exits 0 and checkpoints.
    assert!(meta.stop().success(), "exit status:\n{}", meta.log());
    meta.restart();
    let mut c = meta.client();
    assert_eq!(c.describe_table("alpha").unwrap(), a);
    assert_eq!(c.describe_table("beta").unwrap(), b);
    assert!(matches!(
        server_error(c.describe_table("gone")),
        Error::UnknownTable { .. }
    ));
    assert_eq!(
        (table_map(&meta, "alpha"), table_map(&meta, "beta")),
        before
    );
    // The node is known but must register again before it counts as alive.
    match meta.cluster().call(&ClusterRequest::ListNodes) {
        ClusterReply::Nodes(n) => assert_eq!(
            n.iter().map(|n| (n.info.node, n.alive)).collect::<Vec<_>>(),
            vec![(7, false)]
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        meta.cluster().call(&ClusterRequest::Heartbeat {
            node: 7,
            stats: vec![]
        }),
        ClusterReply::Error(Error::InvalidRequest { .. })
    ));
    let held = register(&meta, &n1);
    assert_eq!(held.len(), 2);

    // Changes after the restart, then SIGKILL: the WAL alone brings them back.
    let g = c.create_table(create("gamma", 3)).unwrap();
    assert!(
        g.id > b.id + 1,
        "ids are never reused (gone had {})",
        b.id + 1
    );
    c.delete_table("alpha").unwrap();
    let gamma = table_map(&meta, "gamma");
    drop(c);
    let recoveries = meta.log().matches("map recovered").count();
    meta.kill();
    meta.restart();
    let mut c = meta.client();
    assert!(matches!(
        server_error(c.describe_table("alpha")),
        Error::UnknownTable { .. }
    ));
    assert_eq!(c.describe_table("gamma").unwrap(), g);
    assert_eq!(table_map(&meta, "gamma"), gamma);
    assert_eq!(table_map(&meta, "beta"), before.1);
    // The log is written by a background thread: wait for the restart's line.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = meta.log();
        if log.matches("map recovered").count() > recoveries {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restart logged no recovery"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let recovered = log
        .lines()
        .rev()
        .find(|l| l.contains("map recovered"))
        .unwrap();
    assert!(
        !recovered.contains("replayed=0"),
        "the WAL was replayed: {recovered}"
    );
}

#[test]
fn bad_input_gets_typed_errors_and_never_a_crash() {
    let (_dir, data) = temp();
    let meta = MetaProc::start(&data, &[]);
    let mut c = meta.client();

    // Item requests are not meta's.
    let e = server_error(c.get("alpha", proto::Key::simple("k"), proto::Consistency::Strong));
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e}");
    // A bad table name is refused before anything else.
    let e = server_error(c.create_table(create("x", 1)));
    assert!(
        matches!(e, Error::InvalidRequest { .. } | Error::TooLarge { .. }),
        "{e}"
    );

    // A frame with a bad checksum: a typed error, and the connection goes on.
    let mut frame = proto::encode_request(
        5,
        &Request::ListTables {
            start_after: None,
            limit: 0,
        },
        0,
    );
    let last = frame.len() - 1;
    frame[last] ^= 0xff;
    c.send_raw(&frame).unwrap();
    let (id, r) = c.read_response().unwrap();
    assert_eq!(id, 5);
    assert!(
        matches!(r, proto::Response::Error(Error::BadFrame { .. })),
        "{r:?}"
    );
    assert!(c.list_tables(None, 0).unwrap().names.is_empty());

    // Cluster messages meta does not take, bad sync prefixes, moves.
    let mut cl = meta.cluster();
    assert!(matches!(
        cl.call(&ClusterRequest::Drop {
            partition_ids: vec![1]
        }),
        ClusterReply::Error(Error::InvalidRequest { .. })
    ));
    let bad = WirePrefix {
        key: vec![0xff; 3],
        bits: 9,
    };
    assert!(matches!(
        cl.call(&ClusterRequest::SyncExpand {
            prefixes: vec![bad]
        }),
        ClusterReply::Error(Error::InvalidRequest { .. })
    ));
    let trailing = WirePrefix {
        key: vec![0xff; routing::KEY_BYTES],
        bits: 3,
    };
    assert!(matches!(
        cl.call(&ClusterRequest::SyncExpand {
            prefixes: vec![trailing]
        }),
        ClusterReply::Error(Error::InvalidRequest { .. })
    ));
    let too_many = vec![
        routing::prefix_to_wire(&routing::Prefix::ROOT);
        routing::SYNC_PREFIXES_PER_REQUEST_MAX + 1
    ];
    assert!(matches!(
        cl.call(&ClusterRequest::SyncExpand { prefixes: too_many }),
        ClusterReply::Error(Error::InvalidRequest { .. })
    ));
    assert!(matches!(
        cl.call(&ClusterRequest::MovePartition {
            partition_id: 1,
            to_node: 2,
            to_core: 0
        }),
        ClusterReply::Error(Error::InvalidRequest { .. })
    ));
    let mut bad_node = FakeNode::start(3, 1).info;
    bad_node.core_addrs.clear();
    assert!(matches!(
        cl.call(&ClusterRequest::Register(bad_node)),
        ClusterReply::Error(Error::InvalidRequest { .. })
    ));
    assert!(matches!(
        cl.call(&ClusterRequest::Heartbeat {
            node: 99,
            stats: vec![]
        }),
        ClusterReply::Error(Error::InvalidRequest { .. })
    ));

    // Lost framing closes that connection only.
    let mut junk = meta.client();
    junk.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(junk.is_closed_by_server(Duration::from_secs(5)).unwrap());
    assert_eq!(
        cl.call(&ClusterRequest::SyncRoot),
        ClusterReply::SyncRoot { hash: 0, count: 0 }
    );
    assert!(c.list_tables(None, 0).is_ok());
}

#[test]
fn a_node_that_refuses_leaves_the_table_in_the_map_and_dead_nodes_get_nothing() {
    let (_dir, data) = temp();
    let meta = MetaProc::start(&data, &["--node-timeout-ms", "600"]);
    let n1 = FakeNode::start(1, 1);
    let n2 = FakeNode::start(2, 1);
    register(&meta, &n1);
    register(&meta, &n2);
    let mut c = meta.client();

    *n2.refuse.lock().unwrap() = Some(Error::internal("disk full"));
    let e = server_error(c.create_table(create("alpha", 2)));
    assert!(
        matches!(&e, Error::Unavailable { reason } if reason.contains("disk full")),
        "{e}"
    );
    // The table stays in the map; the node learns it when it registers again.
    assert_eq!(c.describe_table("alpha").unwrap().partitions, 2);
    let held = register(&meta, &n2);
    assert_eq!(held.len(), 1);
    *n2.refuse.lock().unwrap() = None;

    // Node 1 goes quiet; node 2 beats. New tables go to node 2 only.
    let mut cl = meta.cluster();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(
            cl.call(&ClusterRequest::Heartbeat {
                node: 2,
                stats: vec![]
            }),
            ClusterReply::Ok
        );
    }
    match cl.call(&ClusterRequest::ListNodes) {
        ClusterReply::Nodes(n) => assert_eq!(
            n.iter().map(|n| (n.info.node, n.alive)).collect::<Vec<_>>(),
            vec![(1, false), (2, true)]
        ),
        other => panic!("{other:?}"),
    }
    n1.take();
    let t = c.create_table(create("beta", 0)).unwrap();
    assert_eq!(t.partitions, 2, "two per live core");
    assert!(table_map(&meta, "beta")
        .iter()
        .all(|r| r.replicas[0].node == 2));
    assert!(n1.take().is_empty());

    // Deleting "alpha" does not wait for the dead node 1 (it drops it when it registers).
    c.delete_table("alpha").unwrap();
    assert!(matches!(
        server_error(c.describe_table("alpha")),
        Error::UnknownTable { .. }
    ));
    assert!(register(&meta, &n1).is_empty(), "node 1 holds nothing now");
}

#[test]
fn a_move_ships_at_the_source_then_switches_the_route_and_reassigns() {
    let (_dir, data) = temp();
    let mut meta = MetaProc::start(&data, &["--node-timeout-ms", "60000"]);
    let n1 = FakeNode::start(1, 1);
    let n2 = FakeNode::start(2, 2);
    register(&meta, &n1);
    register(&meta, &n2);
    let mut c = meta.client();
    c.create_table(create("alpha", 2)).unwrap();
    let before = table_map(&meta, "alpha");
    let moving = before[0].clone();
    assert_eq!(moving.replicas[0].node, 1);
    n1.take();
    n2.take();

    // The source refuses to ship: it is thawed and nothing changes.
    *n1.refuse.lock().unwrap() = Some(Error::unavailable("busy"));
    let mut cl = meta.cluster();
    let move_it = ClusterRequest::MovePartition {
        partition_id: moving.partition_id,
        to_node: 2,
        to_core: 1,
    };
    assert!(matches!(
        cl.call(&move_it),
        ClusterReply::Error(Error::Unavailable { .. })
    ));
    let got = n1.take();
    assert!(matches!(got[0], ClusterRequest::MoveOut { .. }), "{got:?}");
    assert_eq!(
        got[1],
        ClusterRequest::Thaw {
            partition_id: moving.partition_id
        }
    );
    assert_eq!(table_map(&meta, "alpha"), before);
    *n1.refuse.lock().unwrap() = None;

    // A move that works.
    assert_eq!(cl.call(&move_it), ClusterReply::Ok);
    let after = table_map(&meta, "alpha");
    assert_eq!(after[0].epoch, 2);
    assert_eq!(
        (after[0].replicas[0].node, after[0].replicas[0].core),
        (2, 1)
    );
    assert_eq!(after[1], before[1]);
    let got = n1.take();
    assert_eq!(
        got[0],
        ClusterRequest::MoveOut {
            partition_id: moving.partition_id,
            to: after[0].replicas[0].clone(),
            epoch: 2
        }
    );
    match &got[1] {
        ClusterRequest::Assign { routes, .. } => {
            assert!(routes.is_empty(), "the source gives it up")
        }
        other => panic!("{other:?}"),
    }
    match &n2.take()[..] {
        [ClusterRequest::Assign { routes, .. }] => assert_eq!(routes, &after),
        other => panic!("{other:?}"),
    }
    assert!(register(&meta, &n1).is_empty());

    // The switch is durable.
    drop((c, cl));
    meta.kill();
    meta.restart();
    assert_eq!(table_map(&meta, "alpha"), after);
}
