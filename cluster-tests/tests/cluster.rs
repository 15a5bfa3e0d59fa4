//! A cluster of real processes (meta, three nodes, a router) driven through the router as a
//! client would: table admin, data across nodes, restarts, a dead node, a moved partition.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::blocking;
use cluster_tests::Cluster;
use proto::cluster::{ClusterReply, ClusterRequest, Route};
use proto::{CapacityMode, Consistency, CreateTable, Key, KeySchema};

/// Items each test writes: enough that every partition on every node gets some.
const ITEMS: usize = 300;

fn create(c: &mut blocking::Client, name: &str, partitions: u32) -> proto::TableDescription {
    c.create_table(CreateTable {
        name: name.into(),
        key_schema: KeySchema {
            partition_key: "pk".into(),
            sort_key: None,
        },
        capacity: CapacityMode::OnDemand,
        partitions,
    })
    .expect("create the table through the router")
}

fn key(i: usize) -> Key {
    Key::simple(format!("user{i:06}"))
}

fn value(i: usize, round: usize) -> Vec<u8> {
    format!("value {i} round {round}").into_bytes()
}

fn table_map(cluster: &Cluster, table: &str) -> Vec<Route> {
    match cluster.meta_call(&ClusterRequest::TableMap {
        table: table.into(),
    }) {
        Ok(ClusterReply::Routes(r)) => r,
        other => panic!("the table map of {table}: {other:?}"),
    }
}

#[test]
fn tables_and_items_through_the_router_and_a_restarted_meta_keeps_the_map() {
    let mut cluster = Cluster::start(3);
    let mut c = cluster.client();
    let t = create(&mut c, "alpha", 6);
    assert_eq!(t.partitions, 6);
    create(&mut c, "beta", 0);
    assert!(matches!(
        c.create_table(CreateTable {
            name: "alpha".into(),
            key_schema: KeySchema {
                partition_key: "pk".into(),
                sort_key: None,
            },
            capacity: CapacityMode::OnDemand,
            partitions: 1,
        }),
        Err(client::Error::Server(proto::Error::TableExists { .. }))
    ));
    let page = c.list_tables(None, 0).expect("list");
    assert_eq!(page.names, vec!["alpha".to_string(), "beta".to_string()]);
    assert_eq!(c.describe_table("alpha").expect("describe").id, t.id);

    // The six partitions are spread over the three nodes.
    let routes = table_map(&cluster, "alpha");
    assert_eq!(routes.len(), 6);
    let mut per_node: HashMap<u64, usize> = HashMap::new();
    for r in &routes {
        *per_node.entry(r.replicas[0].node).or_default() += 1;
    }
    assert_eq!(
        per_node.len(),
        3,
        "every node holds some of alpha: {per_node:?}"
    );

    for i in 0..ITEMS {
        c.put("alpha", key(i), value(i, 0))
            .expect("put through the router");
    }
    for i in 0..ITEMS {
        let item = c
            .get("alpha", key(i), Consistency::Strong)
            .expect("get")
            .expect("present");
        assert_eq!(item.value, value(i, 0));
    }

    // A restarted meta serves the same map; the router keeps routing meanwhile.
    cluster.meta.stop();
    for i in 0..20 {
        c.get("alpha", key(i), Consistency::Strong)
            .expect("reads go on from the router's cache while meta is down");
    }
    assert!(
        c.create_table(CreateTable {
            name: "gamma".into(),
            key_schema: KeySchema {
                partition_key: "pk".into(),
                sort_key: None,
            },
            capacity: CapacityMode::OnDemand,
            partitions: 1,
        })
        .is_err(),
        "creating a table fails while meta is down"
    );
    cluster.meta.restart();
    cluster.wait_for_nodes(3);
    assert_eq!(table_map(&cluster, "alpha"), routes);
    assert_eq!(c.describe_table("alpha").expect("describe").id, t.id);

    let gone = c.delete_table("beta").expect("delete");
    assert_eq!(gone.name, "beta");
    let page = c.list_tables(None, 0).expect("list");
    assert_eq!(page.names, vec!["alpha".to_string()]);
    assert!(c.get("beta", key(1), Consistency::Strong).is_err());
}

#[test]
fn a_router_restarted_under_load_serves_with_a_cold_cache_without_errors() {
    let mut cluster = Cluster::start(3);
    let mut c = cluster.client();
    create(&mut c, "alpha", 6);
    for i in 0..ITEMS {
        c.put("alpha", key(i), value(i, 0)).expect("put");
    }
    drop(c);
    cluster.router.stop();
    cluster.router.restart();
    // A cold cache: every first touch of a partition is a miss that asks meta.
    let mut c = cluster.client();
    for i in 0..ITEMS {
        let item = c
            .get("alpha", key(i), Consistency::Strong)
            .expect("get after a router restart")
            .expect("present");
        assert_eq!(item.value, value(i, 0));
        c.put("alpha", key(i), value(i, 1))
            .expect("put after a router restart");
    }
}

#[test]
fn a_dead_node_makes_its_partitions_fail_fast_and_the_others_serve() {
    let mut cluster = Cluster::start(3);
    let mut c = cluster.client();
    create(&mut c, "alpha", 6);
    for i in 0..ITEMS {
        c.put("alpha", key(i), value(i, 0)).expect("put");
    }
    let routes = table_map(&cluster, "alpha");
    let dead = cluster.nodes[1].id;
    cluster.nodes[1].daemon.kill();
    let on_dead = |i: usize| {
        let h = proto::partition_key_hash(&key(i).partition);
        let index = proto::partition_index(h, 6);
        routes
            .iter()
            .find(|r| r.index == index)
            .expect("a route per partition")
            .replicas[0]
            .node
            == dead
    };
    let mut failed = 0;
    for i in 0..ITEMS {
        // A hang would end in the client's timeout (`client::Error::Timeout`), not in the
        // node's typed refusal: the match below is the fail-fast check, without a clock.
        let got = c.get("alpha", key(i), Consistency::Strong);
        if on_dead(i) {
            failed += 1;
            match got {
                Err(client::Error::Server(proto::Error::Unavailable { .. })) => {}
                other => panic!("a key on the dead node answered {other:?}"),
            }
        } else {
            assert!(got.expect("a live node's key").is_some());
        }
    }
    assert!(failed > 0, "some keys live on the dead node");
}

#[test]
fn a_partition_moved_under_load_loses_no_acknowledged_write() {
    let cluster = Cluster::start(3);
    let mut c = cluster.client();
    create(&mut c, "alpha", 3);
    for i in 0..ITEMS {
        c.put("alpha", key(i), value(i, 0)).expect("put");
    }
    // Writers keep updating every key while partition 0 moves to another node.
    let acked: Arc<Mutex<HashMap<usize, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (acked, stop, mut c) = (acked.clone(), stop.clone(), cluster.client());
        writers.push(std::thread::spawn(move || {
            let mut round = 1;
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for i in (w..ITEMS).step_by(2) {
                    match c.put("alpha", key(i), value(i, round)) {
                        Ok(_) => {
                            acked.lock().unwrap().insert(i, round);
                        }
                        Err(e) => errors.push(format!("{i}: {e:?}")),
                    }
                }
                round += 1;
            }
            errors
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = table_map(&cluster, "alpha");
    let moving = before
        .iter()
        .find(|r| r.index == 0)
        .expect("partition 0")
        .clone();
    let to = cluster
        .nodes
        .iter()
        .find(|n| n.id != moving.replicas[0].node)
        .expect("another node")
        .id;
    let answer = cluster.meta_call(&ClusterRequest::MovePartition {
        partition_id: moving.partition_id,
        to_node: to,
        to_core: 0,
    });
    assert!(
        matches!(answer, Ok(ClusterReply::Ok)),
        "the move: {answer:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let errors = w.join().expect("writer");
        assert!(
            errors.is_empty(),
            "writes failed during the move: {errors:?}"
        );
    }
    let after = table_map(&cluster, "alpha");
    let moved = after.iter().find(|r| r.index == 0).expect("partition 0");
    assert_eq!(moved.replicas[0].node, to, "the route names the new node");
    assert!(moved.epoch > moving.epoch, "the move raised the epoch");
    // The new node warms the moved partition's page cache, as a restarted node does.
    let target = cluster
        .nodes
        .iter()
        .find(|n| n.id == to)
        .expect("the target");
    let warmed = format!("partition={}", moving.partition_id);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = target.daemon.log_tail(200);
        if log
            .lines()
            .any(|l| l.contains("opened partition warmed") && l.contains(&warmed))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no warm-up of partition {} logged by node {to}:\n{log}",
            moving.partition_id
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every acknowledged write is there with its latest acknowledged value.
    let acked = acked.lock().unwrap().clone();
    for i in 0..ITEMS {
        let item = c
            .get("alpha", key(i), Consistency::Strong)
            .expect("get after the move")
            .expect("present");
        let round = acked.get(&i).copied().unwrap_or(0);
        assert_eq!(
            item.value,
            value(i, round),
            "item {i} after the move (last acknowledged round {round})"
        );
    }
}
