//! The node's side of the cluster against a scripted metadata service: registration and
//! heartbeats, assignments (only the assigned ranges are served; the rest answer
//! `WrongOwner` with owner node 0), drops, and a partition moved from one node to another
//! with every acknowledged write on the new node.
//!
//! The "metadata service" here is a thread of the test answering `Register` and `Heartbeat`
//! frames; assignments and moves are sent by the test itself, as the real service would.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::proto::cluster::{ClusterReply, ClusterRequest, Placement, Route};
use client::proto::{self, CapacityMode, Consistency, Key, KeySchema, TableDescription};
use common::{temp_data_dir, Node, NodeOptions};

/// Partitions of the test's table.
const PARTITIONS: u32 = 4;

/// What the scripted service answers a registration with.
type Assignment = Arc<Mutex<Vec<(TableDescription, Vec<Route>)>>>;

/// A scripted metadata service: answers Register with `assigned` and counts heartbeats.
struct FakeMeta {
    addr: SocketAddr,
    heartbeats: Arc<AtomicU64>,
    /// Each node's last reported partitions.
    stats: Arc<Mutex<std::collections::HashMap<u64, Vec<proto::cluster::PartitionStats>>>>,
    assigned: Assignment,
}

impl FakeMeta {
    fn start() -> FakeMeta {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let heartbeats = Arc::new(AtomicU64::new(0));
        let stats: Arc<Mutex<std::collections::HashMap<u64, Vec<proto::cluster::PartitionStats>>>> =
            Arc::default();
        let st = stats.clone();
        let assigned: Assignment = Arc::default();
        let (hb, asg) = (heartbeats.clone(), assigned.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let (hb, asg, st) = (hb.clone(), asg.clone(), st.clone());
                std::thread::spawn(move || {
                    let mut reader = proto::FrameReader::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        while let Ok(Some(frame)) = reader.next_frame() {
                            let reply = match proto::decode_cluster(&frame) {
                                Ok(ClusterRequest::Register(_)) => ClusterReply::Assigned {
                                    tables: asg.lock().unwrap().clone(),
                                },
                                Ok(ClusterRequest::Heartbeat { node, stats }) => {
                                    hb.fetch_add(1, Ordering::Relaxed);
                                    st.lock().unwrap().insert(node, stats);
                                    ClusterReply::Ok
                                }
                                other => ClusterReply::Error(proto::Error::invalid(format!(
                                    "the fake meta does not answer {other:?}"
                                ))),
                            };
                            let out = proto::encode_cluster_reply(frame.header.request_id, &reply);
                            if stream.write_all(&out).is_err() {
                                return;
                            }
                        }
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => reader.push(&buf[..n]),
                        }
                    }
                });
            }
        });
        FakeMeta {
            addr,
            heartbeats,
            stats,
            assigned,
        }
    }
}

fn description() -> TableDescription {
    TableDescription {
        name: "alpha".into(),
        id: 7,
        key_schema: KeySchema {
            partition_key: "pk".into(),
            sort_key: None,
        },
        capacity: CapacityMode::OnDemand,
        partitions: PARTITIONS,
        status: proto::TableStatus::Active,
        created_unix_ms: 1,
    }
}

fn route(index: u32, node: &Node, node_id: u64, epoch: u64) -> Route {
    Route {
        table_id: 7,
        table: "alpha".into(),
        index,
        partitions: PARTITIONS,
        partition_id: 100 + index as u64,
        epoch,
        replicas: vec![Placement {
            node: node_id,
            core: 0,
            addr: node.core_addr(0).to_string(),
        }],
        leader: 0,
    }
}

fn cluster_node(meta: &FakeMeta, id: u64) -> (tempfile::TempDir, Node) {
    let (dir, data) = temp_data_dir();
    let node = Node::start(
        &data,
        NodeOptions {
            cores: 1,
            extra_args: vec![
                "--meta".into(),
                meta.addr.to_string(),
                "--node-id".into(),
                id.to_string(),
                "--heartbeat-ms".into(),
                "50".into(),
            ],
        },
    );
    (dir, node)
}

/// One cluster message over a fresh connection.
fn call(addr: SocketAddr, request: &ClusterRequest) -> ClusterReply {
    client::blocking::Client::connect(addr, Some(Duration::from_secs(60)))
        .expect("connect")
        .cluster_call(request)
        .expect("a reply")
}

fn key(i: usize) -> Key {
    Key::simple(format!("k{i:05}"))
}

fn index_of(i: usize) -> u32 {
    proto::partition_index(proto::partition_key_hash(&key(i).partition), PARTITIONS)
}

#[test]
fn a_node_serves_what_it_is_assigned_and_a_partition_moves_with_its_writes() {
    let meta = FakeMeta::start();
    let (_d1, a) = cluster_node(&meta, 1);
    let (_d2, b) = cluster_node(&meta, 2);
    // Heartbeats arrive.
    let deadline = Instant::now() + Duration::from_secs(20);
    while meta.heartbeats.load(Ordering::Relaxed) < 4 {
        assert!(
            Instant::now() < deadline,
            "no heartbeats reached the metadata service"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Node a holds partitions 0 and 1, node b 2 and 3.
    let on_a = vec![route(0, &a, 1, 1), route(1, &a, 1, 1)];
    let on_b = vec![route(2, &b, 2, 1), route(3, &b, 2, 1)];
    for (node, routes) in [(&a, &on_a), (&b, &on_b)] {
        let reply = call(
            node.core_addr(0),
            &ClusterRequest::Assign {
                table: description(),
                routes: routes.clone(),
            },
        );
        assert_eq!(reply, ClusterReply::Ok);
    }
    // A cluster node refuses to create tables itself.
    let mut ca = a.client();
    assert!(ca
        .create_table(client::create_table_request("beta", "pk", None, 1))
        .is_err());
    let mut cb = b.client();
    let mut versions = std::collections::HashMap::new();
    for i in 0..400 {
        let (mine, other) = if index_of(i) < 2 {
            (&mut ca, &mut cb)
        } else {
            (&mut cb, &mut ca)
        };
        let v = mine
            .put("alpha", key(i), format!("v{i}").into_bytes())
            .expect("a put on the node holding the key");
        versions.insert(i, v);
        match other.get("alpha", key(i), Consistency::Strong) {
            Err(client::Error::Server(proto::Error::WrongOwner { owner, .. })) => {
                assert_eq!(owner.node, 0, "owner unknown here")
            }
            r => panic!("a key on the other node answered {r:?}"),
        }
    }

    // Move partition 1 from a to b.
    let moved = route(1, &b, 2, 2);
    let reply = call(
        a.core_addr(0),
        &ClusterRequest::MoveOut {
            partition_id: 101,
            to: moved.replicas[0].clone(),
            epoch: 2,
        },
    );
    assert_eq!(reply, ClusterReply::Ok, "the move out");
    // Frozen at the source: writes refused as unavailable (never applied), reads served.
    let one = (0..400)
        .find(|&i| index_of(i) == 1)
        .expect("a key of partition 1");
    match ca.put("alpha", key(one), b"late".to_vec()) {
        Err(client::Error::Server(proto::Error::Unavailable { .. })) => {}
        r => panic!("a write to a frozen partition answered {r:?}"),
    }
    assert!(ca
        .get("alpha", key(one), Consistency::Strong)
        .unwrap()
        .is_some());
    // The metadata service's switch: b gets it, a gives it up.
    let mut b_routes = on_b.clone();
    b_routes.push(moved);
    assert_eq!(
        call(
            b.core_addr(0),
            &ClusterRequest::Assign {
                table: description(),
                routes: b_routes.clone(),
            },
        ),
        ClusterReply::Ok
    );
    assert_eq!(
        call(
            a.core_addr(0),
            &ClusterRequest::Assign {
                table: description(),
                routes: vec![on_a[0].clone()],
            },
        ),
        ClusterReply::Ok
    );
    for i in (0..400).filter(|&i| index_of(i) == 1) {
        let item = cb
            .get("alpha", key(i), Consistency::Strong)
            .expect("get on the new owner")
            .expect("every acknowledged write moved");
        assert_eq!(item.value, format!("v{i}").into_bytes());
        assert!(
            matches!(
                ca.get("alpha", key(i), Consistency::Strong),
                Err(client::Error::Server(proto::Error::WrongOwner { .. }))
            ),
            "the old owner gave the range up"
        );
    }
    // The moved partition takes writes on its new node, with versions above the old ones.
    let v = cb
        .put("alpha", key(one), b"after".to_vec())
        .expect("put after the move");
    let before = (0..400)
        .filter(|&i| index_of(i) == 1)
        .map(|i| versions[&i])
        .max()
        .unwrap_or(0);
    assert!(
        v > before,
        "versions go on rising on the new node ({v} after {before})"
    );

    // b's heartbeats report the moved partition under its new epoch, with its requests.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reported = meta
            .stats
            .lock()
            .unwrap()
            .get(&2)
            .cloned()
            .unwrap_or_default();
        if let Some(s) = reported.iter().find(|s| s.partition_id == 101) {
            assert_eq!(s.epoch, 2, "the epoch the move gave it");
            if s.requests > 0 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "b never reported partition 101: {reported:?}"
        );
        cb.get("alpha", key(one), Consistency::Strong).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }

    // A restart re-registers: the fake meta now assigns b everything it holds.
    *meta.assigned.lock().unwrap() = vec![(description(), b_routes)];
    let mut b = b;
    b.stop().expect("stops");
    b.restart();
    let mut cb = b.client();
    let item = cb
        .get("alpha", key(one), Consistency::Strong)
        .expect("get after a restart")
        .expect("present");
    assert_eq!(item.value, b"after".to_vec());

    // A drop removes the table's partitions from the node.
    assert_eq!(
        call(
            a.core_addr(0),
            &ClusterRequest::Drop {
                partition_ids: vec![100],
            },
        ),
        ClusterReply::Ok
    );
    assert!(matches!(
        ca.get("alpha", key(0), Consistency::Strong),
        Err(client::Error::Server(proto::Error::UnknownTable { .. }))
    ));
}
