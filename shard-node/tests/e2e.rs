//! End to end against the real `percore-node` on 127.0.0.1: every operation and every error
//! case a client can cause, sizes exactly at each limit and one over, protocol abuse, and
//! requests sent to a core that does not own their partition.
//!
//! Each test starts its own node (two cores) on a temporary data directory and stops it at
//! the end; the client is `client::blocking` (one request at a time, no retries, no checks
//! of its own), so that every answer seen is the node's.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use client::proto::limits::{
    BATCH_GETS_MAX, BATCH_WRITES_MAX, FRAME_PAYLOAD_BYTES_MAX, ITEM_BYTES_MAX,
    PARTITION_KEY_BYTES_MAX, SORT_KEY_BYTES_MAX, TABLE_NAME_BYTES_MAX, TABLE_PARTITIONS_MAX,
};
use client::proto::{
    self, CapacityMode, Condition, Consistency, CreateTable, Direction, Field, FrameHeader,
    FrameKind, Key, KeySchema, Query, Request, Response, Scan, SortBound, TableStatus, WriteOp,
    WriteOutcome, FORMAT_VERSION,
};
use client::{blocking, create_table_request, Error};
use common::{temp_data_dir, Node, NodeOptions};

/// Unwraps a server error, failing the test on success or on any other error.
#[track_caller]
fn server_error<T: Debug>(r: client::Result<T>) -> proto::Error {
    match r {
        Err(Error::Server(e)) => e,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// A node with two cores, and a client on its shared port.
fn node() -> (tempfile::TempDir, Node, blocking::Client) {
    let (dir, data) = temp_data_dir();
    let node = Node::start(&data, NodeOptions::default());
    let client = node.client();
    (dir, node, client)
}

fn stop(mut node: Node) {
    let status = node
        .stop()
        .expect("the node stops on SIGTERM within the timeout");
    assert!(status.success(), "the node exited with {status} on SIGTERM");
}

/// A table with a sort key, `partitions` partitions (0: the node's default).
fn sorted_table(c: &mut blocking::Client, name: &str, partitions: u32) {
    c.create_table(create_table_request(name, "pk", Some("sk"), partitions))
        .unwrap();
}

/// A table without a sort key.
fn simple_table(c: &mut blocking::Client, name: &str, partitions: u32) {
    c.create_table(create_table_request(name, "pk", None, partitions))
        .unwrap();
}

fn query(table: &str, pk: &[u8]) -> Query {
    Query {
        table: table.into(),
        partition_key: pk.to_vec(),
        start: SortBound::Unbounded,
        end: SortBound::Unbounded,
        direction: Direction::Forward,
        limit: 0,
        resume: None,
        consistency: Consistency::Strong,
    }
}

fn sort_keys(items: &[proto::Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| String::from_utf8(i.key.sort.clone()).unwrap())
        .collect()
}

fn s(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("s{i:02}")).collect()
}

// ---------------------------------------------------------------------------------------
// Tables

#[test]
fn tables_are_created_described_listed_and_deleted() {
    let (_dir, node, mut c) = node();

    let created = c
        .create_table(CreateTable {
            name: "orders".into(),
            key_schema: KeySchema {
                partition_key: "customer".into(),
                sort_key: Some("order".into()),
            },
            capacity: CapacityMode::OnDemand,
            partitions: 6,
        })
        .unwrap();
    assert_eq!(created.name, "orders");
    assert_eq!(created.partitions, 6);
    assert_eq!(created.status, TableStatus::Active);
    assert_eq!(created.key_schema.sort_key.as_deref(), Some("order"));
    assert_eq!(c.describe_table("orders").unwrap(), created);

    // The default cut: two partitions per core.
    let default_cut = c
        .create_table(create_table_request("users", "id", None, 0))
        .unwrap();
    assert_eq!(
        default_cut.partitions, 4,
        "two partitions per core, two cores"
    );
    assert_ne!(default_cut.id, created.id);

    let provisioned = c
        .create_table(CreateTable {
            capacity: CapacityMode::Provisioned {
                read_units_per_s: 100,
                write_units_per_s: 50,
            },
            ..create_table_request("paid.table-1", "id", None, 1)
        })
        .unwrap();
    assert_eq!(
        c.describe_table("paid.table-1").unwrap().capacity,
        provisioned.capacity
    );

    // Exists already, whatever the schema.
    assert_eq!(
        server_error(c.create_table(create_table_request("orders", "x", None, 1))),
        proto::Error::TableExists {
            name: "orders".into()
        }
    );

    // Listing: in name order, paged.
    let all = c.list_tables(None, 0).unwrap();
    assert_eq!(all.names, vec!["orders", "paid.table-1", "users"]);
    assert_eq!(all.last, None);
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = c.list_tables(after.as_deref(), 1).unwrap();
        assert!(page.names.len() <= 1);
        paged.extend(page.names);
        match page.last {
            Some(l) => after = Some(l),
            None => break,
        }
    }
    assert_eq!(paged, all.names);
    assert_eq!(
        c.list_tables(Some("p"), 0).unwrap().names,
        vec!["paid.table-1", "users"]
    );

    // Items go with their table.
    c.put("orders", Key::new("alice", "1"), b"book".to_vec())
        .unwrap();
    let deleted = c.delete_table("orders").unwrap();
    assert_eq!(deleted.name, "orders");
    assert_eq!(
        server_error(c.describe_table("orders")),
        proto::Error::UnknownTable {
            name: "orders".into()
        }
    );
    assert_eq!(
        server_error(c.delete_table("orders")),
        proto::Error::UnknownTable {
            name: "orders".into()
        }
    );
    assert_eq!(
        server_error(c.get("orders", Key::new("alice", "1"), Consistency::Strong)),
        proto::Error::UnknownTable {
            name: "orders".into()
        }
    );
    assert_eq!(
        c.list_tables(None, 0).unwrap().names,
        vec!["paid.table-1", "users"]
    );

    // A new table of the same name is a new table: a new id, and none of the old items.
    let again = c
        .create_table(create_table_request("orders", "customer", Some("order"), 2))
        .unwrap();
    assert!(again.id != created.id, "table ids are never reused");
    assert_eq!(
        c.get("orders", Key::new("alice", "1"), Consistency::Strong)
            .unwrap(),
        None
    );

    stop(node);
}

#[test]
fn bad_table_names_and_partition_counts_are_refused() {
    let (_dir, node, mut c) = node();
    for name in ["ab", "", "has space", "slash/name", "é-accent"] {
        let e = server_error(c.create_table(create_table_request(name, "pk", None, 1)));
        assert!(
            matches!(e, proto::Error::InvalidRequest { .. }),
            "{name:?}: {e:?}"
        );
        let e = server_error(c.describe_table(name));
        assert!(
            matches!(e, proto::Error::InvalidRequest { .. }),
            "{name:?}: {e:?}"
        );
    }
    // Exactly at the name limit, then one over.
    let longest = "n".repeat(TABLE_NAME_BYTES_MAX);
    c.create_table(create_table_request(&longest, "pk", None, 1))
        .unwrap();
    assert_eq!(c.describe_table(&longest).unwrap().name, longest);
    let too_long = "n".repeat(TABLE_NAME_BYTES_MAX + 1);
    assert_eq!(
        server_error(c.create_table(create_table_request(&too_long, "pk", None, 1))),
        proto::Error::TooLarge {
            field: Field::TableName,
            bytes: TABLE_NAME_BYTES_MAX as u64 + 1,
            max: TABLE_NAME_BYTES_MAX as u64,
        }
    );
    // The smallest name.
    c.create_table(create_table_request("abc", "pk", None, 1))
        .unwrap();

    // Partition counts: the limit, one over.
    assert_eq!(
        server_error(c.create_table(create_table_request(
            "too_many",
            "pk",
            None,
            TABLE_PARTITIONS_MAX + 1
        ))),
        proto::Error::TooLarge {
            field: Field::Partitions,
            bytes: TABLE_PARTITIONS_MAX as u64 + 1,
            max: TABLE_PARTITIONS_MAX as u64,
        }
    );
    // An empty partition-key attribute name, and provisioned capacity of zero.
    assert!(matches!(
        server_error(c.create_table(create_table_request("no_pk_name", "", None, 1))),
        proto::Error::InvalidRequest { .. }
    ));
    assert!(matches!(
        server_error(c.create_table(CreateTable {
            capacity: CapacityMode::Provisioned {
                read_units_per_s: 0,
                write_units_per_s: 1
            },
            ..create_table_request("zero_units", "pk", None, 1)
        })),
        proto::Error::InvalidRequest { .. }
    ));
    // None of the refused tables exists.
    assert_eq!(
        c.list_tables(None, 0).unwrap().names,
        vec!["abc".to_string(), longest]
    );
    stop(node);
}

// ---------------------------------------------------------------------------------------
// Items

#[test]
fn put_get_delete_and_every_condition() {
    let (_dir, node, mut c) = node();
    simple_table(&mut c, "items", 0);
    let t = "items";
    let k = || Key::simple("user#1");

    assert_eq!(c.get(t, k(), Consistency::Strong).unwrap(), None);
    assert_eq!(c.get(t, k(), Consistency::Eventual).unwrap(), None);

    // Plain puts: each makes a new, larger version.
    let v1 = c.put(t, k(), b"one".to_vec()).unwrap();
    let item = c.get(t, k(), Consistency::Strong).unwrap().unwrap();
    assert_eq!(
        (item.key, item.value, item.version),
        (k(), b"one".to_vec(), v1)
    );
    let v2 = c.put(t, k(), b"two".to_vec()).unwrap();
    assert!(v2 > v1, "versions grow: {v1} then {v2}");
    assert_eq!(
        c.get(t, k(), Consistency::Eventual).unwrap().unwrap().value,
        b"two"
    );

    // IfAbsent.
    assert_eq!(
        server_error(c.put_if(t, k(), b"x".to_vec(), Condition::IfAbsent)),
        proto::Error::ConditionFailed {
            current_version: Some(v2)
        }
    );
    let other = Key::simple("user#2");
    let o1 = c
        .put_if(t, other.clone(), b"new".to_vec(), Condition::IfAbsent)
        .unwrap();
    assert_eq!(
        c.get(t, other.clone(), Consistency::Strong)
            .unwrap()
            .unwrap()
            .version,
        o1
    );

    // IfPresent.
    assert_eq!(
        server_error(c.put_if(
            t,
            Key::simple("nobody"),
            b"x".to_vec(),
            Condition::IfPresent
        )),
        proto::Error::ConditionFailed {
            current_version: None
        }
    );
    let v3 = c
        .put_if(t, k(), b"three".to_vec(), Condition::IfPresent)
        .unwrap();
    assert!(v3 > v2);

    // IfVersion: the current one holds, a stale one and a missing item do not.
    assert_eq!(
        server_error(c.put_if(t, k(), b"x".to_vec(), Condition::IfVersion(v2))),
        proto::Error::ConditionFailed {
            current_version: Some(v3)
        }
    );
    assert_eq!(
        server_error(c.put_if(
            t,
            Key::simple("nobody"),
            b"x".to_vec(),
            Condition::IfVersion(v3)
        )),
        proto::Error::ConditionFailed {
            current_version: None
        }
    );
    let v4 = c
        .put_if(t, k(), b"four".to_vec(), Condition::IfVersion(v3))
        .unwrap();
    let item = c.get(t, k(), Consistency::Strong).unwrap().unwrap();
    assert_eq!((item.value, item.version), (b"four".to_vec(), v4));

    // A failed condition changed nothing.
    assert_eq!(
        c.get(t, Key::simple("nobody"), Consistency::Strong)
            .unwrap(),
        None
    );

    // Deletes: conditions, then unconditional, of a present and a missing item.
    assert_eq!(
        server_error(c.delete(t, k(), Condition::IfVersion(v3))),
        proto::Error::ConditionFailed {
            current_version: Some(v4)
        }
    );
    assert_eq!(
        server_error(c.delete(t, Key::simple("nobody"), Condition::IfPresent)),
        proto::Error::ConditionFailed {
            current_version: None
        }
    );
    assert_eq!(
        server_error(c.delete(t, k(), Condition::IfAbsent)),
        proto::Error::ConditionFailed {
            current_version: Some(v4)
        }
    );
    let d = c.delete(t, k(), Condition::IfVersion(v4)).unwrap();
    assert!(d.existed);
    assert!(d.version > v4);
    assert_eq!(c.get(t, k(), Consistency::Strong).unwrap(), None);
    let d = c.delete(t, k(), Condition::None).unwrap();
    assert!(!d.existed, "deleting a missing item is not an error");
    let d = c.delete(t, other.clone(), Condition::IfPresent).unwrap();
    assert!(d.existed);
    assert_eq!(c.get(t, other, Consistency::Strong).unwrap(), None);

    // After a delete, IfAbsent holds again.
    c.put_if(t, k(), b"five".to_vec(), Condition::IfAbsent)
        .unwrap();

    // Empty values are values.
    c.put(t, Key::simple("empty"), Vec::new()).unwrap();
    assert_eq!(
        c.get(t, Key::simple("empty"), Consistency::Strong)
            .unwrap()
            .unwrap()
            .value,
        Vec::<u8>::new()
    );
    stop(node);
}

#[test]
fn bad_item_requests_get_typed_errors() {
    let (_dir, node, mut c) = node();
    simple_table(&mut c, "simple", 2);
    sorted_table(&mut c, "sorted", 2);

    // Unknown table, for every item operation.
    let unknown = || proto::Error::UnknownTable {
        name: "missing".into(),
    };
    assert_eq!(
        server_error(c.put("missing", Key::simple("k"), b"v".to_vec())),
        unknown()
    );
    assert_eq!(
        server_error(c.get("missing", Key::simple("k"), Consistency::Strong)),
        unknown()
    );
    assert_eq!(
        server_error(c.delete("missing", Key::simple("k"), Condition::None)),
        unknown()
    );
    assert_eq!(server_error(c.query(query("missing", b"k"))), unknown());
    assert_eq!(
        server_error(c.scan(Scan {
            table: "missing".into(),
            limit: 0,
            resume: None,
            consistency: Consistency::Strong
        })),
        unknown()
    );
    assert_eq!(
        server_error(c.batch_get("missing", vec![Key::simple("k")], Consistency::Strong)),
        unknown()
    );
    assert_eq!(
        server_error(c.batch_write(
            "missing",
            vec![WriteOp::Delete {
                key: Key::simple("k")
            }]
        )),
        unknown()
    );

    // An empty partition key.
    for e in [
        server_error(c.put("simple", Key::simple(""), b"v".to_vec())),
        server_error(c.get("simple", Key::simple(""), Consistency::Strong)),
        server_error(c.delete("simple", Key::simple(""), Condition::None)),
        server_error(c.query(query("sorted", b""))),
    ] {
        assert!(matches!(e, proto::Error::InvalidRequest { .. }), "{e:?}");
    }

    // A sort key on a table that has none.
    let e = server_error(c.put("simple", Key::new("k", "s"), b"v".to_vec()));
    assert!(matches!(e, proto::Error::InvalidRequest { .. }), "{e:?}");
    let e = server_error(c.get("simple", Key::new("k", "s"), Consistency::Strong));
    assert!(matches!(e, proto::Error::InvalidRequest { .. }), "{e:?}");

    // Bad table names on item operations.
    let e = server_error(c.put("x", Key::simple("k"), b"v".to_vec()));
    assert!(matches!(e, proto::Error::InvalidRequest { .. }), "{e:?}");
    stop(node);
}

// ---------------------------------------------------------------------------------------
// Query and scan

#[test]
fn query_forward_backward_bounds_limits_and_resume() {
    let (_dir, node, mut c) = node();
    sorted_table(&mut c, "events", 0);
    let t = "events";
    for i in (0..20).rev() {
        c.put(
            t,
            Key::new("pk", format!("s{i:02}")),
            format!("v{i}").into_bytes(),
        )
        .unwrap();
    }
    // Neighbours that must never show up: other partition keys, including prefixes and
    // extensions of "pk".
    for pk in ["p", "pk0", "pkk", "a", "zz"] {
        c.put(t, Key::new(pk, "s05"), b"other".to_vec()).unwrap();
    }

    let all = c.query(query(t, b"pk")).unwrap();
    assert_eq!(sort_keys(&all.items), s(0..20));
    assert_eq!(all.resume, None);
    assert!(all.items.iter().all(|i| i.key.partition == b"pk"));
    assert_eq!(all.items[7].value, b"v7");

    let backward = c
        .query(Query {
            direction: Direction::Backward,
            ..query(t, b"pk")
        })
        .unwrap();
    let mut expected = s(0..20);
    expected.reverse();
    assert_eq!(sort_keys(&backward.items), expected);

    // Bounds, each kind, both directions.
    let bounded = |start, end, direction| Query {
        start,
        end,
        direction,
        ..query(t, b"pk")
    };
    let inc = |i: usize| SortBound::Included(format!("s{i:02}").into_bytes());
    let exc = |i: usize| SortBound::Excluded(format!("s{i:02}").into_bytes());
    let cases = [
        (inc(5), exc(10), s(5..10)),
        (exc(5), inc(10), s(6..11)),
        (inc(5), inc(5), s(5..6)),
        (exc(5), exc(6), vec![]),
        (SortBound::Unbounded, exc(3), s(0..3)),
        (inc(17), SortBound::Unbounded, s(17..20)),
        // Bounds that fall between stored keys.
        (
            SortBound::Included(b"s04x".to_vec()),
            SortBound::Excluded(b"s07x".to_vec()),
            s(5..8),
        ),
        // An empty range (start above end) is empty, not an error.
        (inc(9), inc(3), vec![]),
    ];
    for (start, end, want) in cases {
        let fwd = c
            .query(bounded(start.clone(), end.clone(), Direction::Forward))
            .unwrap();
        assert_eq!(sort_keys(&fwd.items), want, "{start:?}..{end:?} forward");
        let bwd = c
            .query(bounded(start.clone(), end.clone(), Direction::Backward))
            .unwrap();
        let mut rev = want.clone();
        rev.reverse();
        assert_eq!(sort_keys(&bwd.items), rev, "{start:?}..{end:?} backward");
    }

    // Limits and resume, forward then backward, the limit dividing the items and not.
    for direction in [Direction::Forward, Direction::Backward] {
        for limit in [1u32, 6, 7, 20, 21] {
            let mut q = Query {
                limit,
                direction,
                ..query(t, b"pk")
            };
            let mut pages = Vec::new();
            loop {
                let page = c.query(q.clone()).unwrap();
                assert!(page.items.len() <= limit as usize);
                pages.push(sort_keys(&page.items));
                match page.resume {
                    Some(r) => {
                        assert_eq!(
                            Some(&r),
                            page.items.last().map(|i| &i.key.sort),
                            "resume is the last sort key of the page"
                        );
                        q.resume = Some(r);
                    }
                    None => break,
                }
                assert!(pages.len() <= 21, "a query that never ends");
            }
            let flat: Vec<String> = pages.concat();
            let mut want = s(0..20);
            if direction == Direction::Backward {
                want.reverse();
            }
            assert_eq!(flat, want, "limit {limit} {direction:?}");
            assert!(pages.len() >= 20usize.div_ceil(limit as usize));
        }
    }
    // Resume within bounds, and the helper that follows pages.
    let resumed = c
        .query(Query {
            resume: Some(b"s12".to_vec()),
            ..bounded(inc(10), inc(15), Direction::Forward)
        })
        .unwrap();
    assert_eq!(sort_keys(&resumed.items), s(13..16));
    let resumed = c
        .query(Query {
            resume: Some(b"s12".to_vec()),
            ..bounded(inc(10), inc(15), Direction::Backward)
        })
        .unwrap();
    assert_eq!(sort_keys(&resumed.items), vec!["s11", "s10"]);
    let followed = c
        .query_all(Query {
            limit: 3,
            ..query(t, b"pk")
        })
        .unwrap();
    assert_eq!(sort_keys(&followed), s(0..20));

    // A partition key with no items.
    let none = c.query(query(t, b"nobody")).unwrap();
    assert!(none.items.is_empty());
    assert_eq!(none.resume, None);
    // Eventual reads answer too.
    let eventual = c
        .query(Query {
            consistency: Consistency::Eventual,
            ..query(t, b"pk")
        })
        .unwrap();
    assert_eq!(eventual.items.len(), 20);
    stop(node);
}

#[test]
fn scan_pages_over_several_partitions_return_every_item_once() {
    let (_dir, node, mut c) = node();
    simple_table(&mut c, "wide", 8);
    sorted_table(&mut c, "wide_sorted", 5);
    let mut want = BTreeMap::new();
    for chunk in (0..300).collect::<Vec<_>>().chunks(BATCH_WRITES_MAX) {
        let writes = chunk
            .iter()
            .map(|i| WriteOp::Put {
                key: Key::simple(format!("key{i:03}")),
                value: format!("value{i}").into_bytes(),
            })
            .collect();
        for o in c.batch_write("wide", writes).unwrap() {
            assert!(matches!(o, WriteOutcome::Written { .. }), "{o:?}");
        }
        for i in chunk {
            want.insert(format!("key{i:03}"), format!("value{i}"));
        }
    }
    for i in 0..40 {
        c.put(
            "wide_sorted",
            Key::new(format!("p{}", i % 7), format!("s{i:02}")),
            vec![i as u8],
        )
        .unwrap();
    }

    for limit in [0u32, 1, 17, 50, 299, 300, 1000] {
        let mut scan = Scan {
            table: "wide".into(),
            limit,
            resume: None,
            consistency: Consistency::Strong,
        };
        let mut got = BTreeMap::new();
        let mut pages = 0;
        let mut partitions_seen = BTreeSet::new();
        loop {
            let page = c.scan(scan.clone()).unwrap();
            pages += 1;
            assert!(limit == 0 || page.items.len() <= limit as usize);
            for item in page.items {
                let k = String::from_utf8(item.key.partition).unwrap();
                let v = String::from_utf8(item.value).unwrap();
                assert!(got.insert(k.clone(), v).is_none(), "{k} returned twice");
            }
            match page.resume {
                Some(r) => {
                    partitions_seen.insert(r.partition);
                    scan.resume = Some(r);
                }
                None => break,
            }
            assert!(pages <= 400, "a scan that never ends");
        }
        assert_eq!(got, want, "scan with limit {limit}");
        if limit == 1 {
            assert!(pages >= 300, "one item per page at most");
            assert!(partitions_seen.len() >= 2, "pages cross partitions");
        }
    }

    let all = c
        .scan_all(Scan {
            table: "wide_sorted".into(),
            limit: 6,
            resume: None,
            consistency: Consistency::Eventual,
        })
        .unwrap();
    assert_eq!(all.len(), 40);
    // Within one partition key, sort-key order.
    let mut by_pk: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for item in &all {
        by_pk
            .entry(item.key.partition.clone())
            .or_default()
            .push(item.key.sort.clone());
    }
    for sorts in by_pk.values() {
        let mut sorted = sorts.clone();
        sorted.sort();
        assert_eq!(sorts, &sorted);
    }

    // A resume naming a partition the table does not have: refused by name, or the end.
    match c.scan(Scan {
        table: "wide".into(),
        limit: 0,
        resume: Some(proto::ScanResume {
            partition: 999,
            after: None,
        }),
        consistency: Consistency::Strong,
    }) {
        Err(Error::Server(proto::Error::InvalidRequest { .. })) => {}
        Ok(page) => assert!(page.items.is_empty() && page.resume.is_none(), "{page:?}"),
        other => panic!("a scan resuming at partition 999 of 8: {other:?}"),
    }

    // An empty table scans to nothing.
    simple_table(&mut c, "empty", 3);
    let empty = c
        .scan_all(Scan {
            table: "empty".into(),
            limit: 0,
            resume: None,
            consistency: Consistency::Strong,
        })
        .unwrap();
    assert!(empty.is_empty());
    stop(node);
}

// ---------------------------------------------------------------------------------------
// Batches

#[test]
fn batch_get_and_write_with_their_limits() {
    let (_dir, node, mut c) = node();
    simple_table(&mut c, "batch", 0);
    let t = "batch";
    let key = |i: usize| Key::simple(format!("b{i}"));

    // Exactly the write limit, mixing puts and deletes.
    c.put(t, key(1000), b"doomed".to_vec()).unwrap();
    let mut writes: Vec<WriteOp> = (0..BATCH_WRITES_MAX - 1)
        .map(|i| WriteOp::Put {
            key: key(i),
            value: format!("v{i}").into_bytes(),
        })
        .collect();
    writes.push(WriteOp::Delete { key: key(1000) });
    let outcomes = c.batch_write(t, writes).unwrap();
    assert_eq!(outcomes.len(), BATCH_WRITES_MAX);
    for o in &outcomes {
        assert!(matches!(o, WriteOutcome::Written { .. }), "{o:?}");
    }
    assert_eq!(c.get(t, key(1000), Consistency::Strong).unwrap(), None);
    let WriteOutcome::Written { version } = outcomes[3] else {
        unreachable!()
    };
    assert_eq!(
        c.get(t, key(3), Consistency::Strong)
            .unwrap()
            .unwrap()
            .version,
        version
    );

    // One over the write limit, an empty batch, a key twice.
    let over: Vec<WriteOp> = (0..=BATCH_WRITES_MAX)
        .map(|i| WriteOp::Put {
            key: key(500 + i),
            value: b"x".to_vec(),
        })
        .collect();
    assert_eq!(
        server_error(c.batch_write(t, over)),
        proto::Error::TooLarge {
            field: Field::BatchWrites,
            bytes: BATCH_WRITES_MAX as u64 + 1,
            max: BATCH_WRITES_MAX as u64,
        }
    );
    assert_eq!(c.get(t, key(500), Consistency::Strong).unwrap(), None);
    assert!(matches!(
        server_error(c.batch_write(t, vec![])),
        proto::Error::InvalidRequest { .. }
    ));
    let twice = vec![
        WriteOp::Put {
            key: key(600),
            value: b"a".to_vec(),
        },
        WriteOp::Delete { key: key(600) },
    ];
    assert!(matches!(
        server_error(c.batch_write(t, twice)),
        proto::Error::InvalidRequest { .. }
    ));
    assert_eq!(c.get(t, key(600), Consistency::Strong).unwrap(), None);

    // Exactly the get limit: the 24 present come back, the absent are left out.
    let keys: Vec<Key> = (0..BATCH_GETS_MAX).map(key).collect();
    let got = c.batch_get(t, keys, Consistency::Strong).unwrap();
    assert!(got.unprocessed.is_empty());
    let mut found: Vec<(Key, Vec<u8>)> = got.items.into_iter().map(|i| (i.key, i.value)).collect();
    found.sort();
    let mut want: Vec<(Key, Vec<u8>)> = (0..BATCH_WRITES_MAX - 1)
        .map(|i| (key(i), format!("v{i}").into_bytes()))
        .collect();
    want.sort();
    assert_eq!(found, want);
    let eventual = c
        .batch_get(t, vec![key(1), key(2)], Consistency::Eventual)
        .unwrap();
    assert_eq!(eventual.items.len(), 2);

    // One over the get limit; none.
    let over: Vec<Key> = (0..=BATCH_GETS_MAX).map(key).collect();
    assert_eq!(
        server_error(c.batch_get(t, over, Consistency::Strong)),
        proto::Error::TooLarge {
            field: Field::BatchGets,
            bytes: BATCH_GETS_MAX as u64 + 1,
            max: BATCH_GETS_MAX as u64,
        }
    );
    assert!(matches!(
        server_error(c.batch_get(t, vec![], Consistency::Strong)),
        proto::Error::InvalidRequest { .. }
    ));
    // A key asked twice: refused as DynamoDB does, or answered once; never twice, never
    // a broken connection.
    match c.batch_get(t, vec![key(1), key(1)], Consistency::Strong) {
        Err(Error::Server(proto::Error::InvalidRequest { .. })) => {}
        Ok(b) => assert!(!b.items.is_empty() && b.items.len() <= 2, "{b:?}"),
        other => panic!("a duplicate batch-get key: {other:?}"),
    }
    // A bad key inside a batch fails the whole batch.
    let e = server_error(c.batch_write(
        t,
        vec![
            WriteOp::Put {
                key: key(700),
                value: b"x".to_vec(),
            },
            WriteOp::Put {
                key: Key::simple(""),
                value: b"x".to_vec(),
            },
        ],
    ));
    assert!(matches!(e, proto::Error::InvalidRequest { .. }), "{e:?}");
    assert_eq!(c.get(t, key(700), Consistency::Strong).unwrap(), None);
    stop(node);
}

// ---------------------------------------------------------------------------------------
// Size limits: exactly at each, and one over

#[test]
fn sizes_exactly_at_the_limits_pass_and_one_over_fail() {
    let (_dir, node, mut c) = node();
    sorted_table(&mut c, "limits", 0);
    simple_table(&mut c, "limits_simple", 0);
    let t = "limits";

    // Partition key.
    let pk = vec![b'p'; PARTITION_KEY_BYTES_MAX];
    let v = c
        .put("limits_simple", Key::simple(pk.clone()), b"v".to_vec())
        .unwrap();
    assert_eq!(
        c.get(
            "limits_simple",
            Key::simple(pk.clone()),
            Consistency::Strong
        )
        .unwrap()
        .unwrap()
        .version,
        v
    );
    let over = vec![b'p'; PARTITION_KEY_BYTES_MAX + 1];
    let want = proto::Error::TooLarge {
        field: Field::PartitionKey,
        bytes: PARTITION_KEY_BYTES_MAX as u64 + 1,
        max: PARTITION_KEY_BYTES_MAX as u64,
    };
    assert_eq!(
        server_error(c.put("limits_simple", Key::simple(over.clone()), b"v".to_vec())),
        want
    );
    assert_eq!(
        server_error(c.get(
            "limits_simple",
            Key::simple(over.clone()),
            Consistency::Strong
        )),
        want
    );
    assert_eq!(server_error(c.query(query(t, &over))), want);
    assert_eq!(c.query(query(t, &pk)).unwrap().items.len(), 0);

    // Sort key.
    let sk = vec![b's'; SORT_KEY_BYTES_MAX];
    c.put(t, Key::new("p", sk.clone()), b"v".to_vec()).unwrap();
    assert_eq!(
        c.get(t, Key::new("p", sk.clone()), Consistency::Strong)
            .unwrap()
            .unwrap()
            .key
            .sort,
        sk
    );
    let over_sk = vec![b's'; SORT_KEY_BYTES_MAX + 1];
    let want = proto::Error::TooLarge {
        field: Field::SortKey,
        bytes: SORT_KEY_BYTES_MAX as u64 + 1,
        max: SORT_KEY_BYTES_MAX as u64,
    };
    assert_eq!(
        server_error(c.put(t, Key::new("p", over_sk.clone()), b"v".to_vec())),
        want
    );
    assert_eq!(
        server_error(c.query(Query {
            start: SortBound::Included(over_sk.clone()),
            ..query(t, b"p")
        })),
        want
    );
    // The largest keys together.
    c.put(t, Key::new(pk.clone(), sk.clone()), b"both".to_vec())
        .unwrap();
    let q = c.query(query(t, &pk)).unwrap();
    assert_eq!(
        sort_keys(&q.items),
        vec![String::from_utf8(sk.clone()).unwrap()]
    );

    // The item: key + value exactly 400 KiB, then one byte more.
    let key = Key::new("big", "item");
    let value_max = ITEM_BYTES_MAX - key.bytes();
    let value: Vec<u8> = (0..value_max).map(|i| (i % 251) as u8).collect();
    let v = c.put(t, key.clone(), value.clone()).unwrap();
    let got = c.get(t, key.clone(), Consistency::Strong).unwrap().unwrap();
    assert_eq!(got.version, v);
    assert!(
        got.value == value,
        "the largest item reads back byte for byte"
    );
    let mut one_more = value.clone();
    one_more.push(0);
    assert_eq!(
        server_error(c.put(t, key.clone(), one_more.clone())),
        proto::Error::TooLarge {
            field: Field::Item,
            bytes: ITEM_BYTES_MAX as u64 + 1,
            max: ITEM_BYTES_MAX as u64,
        }
    );
    // The refused put left the item as it was.
    assert_eq!(
        c.get(t, key.clone(), Consistency::Strong)
            .unwrap()
            .unwrap()
            .version,
        v
    );
    // In a batch too.
    let e = server_error(c.batch_write(
        t,
        vec![WriteOp::Put {
            key: Key::new("big", "batch"),
            value: one_more,
        }],
    ));
    assert!(
        matches!(
            e,
            proto::Error::TooLarge {
                field: Field::Item,
                ..
            }
        ),
        "{e:?}"
    );
    // Three items at the limit in one batch write, all in one partition: each is within
    // the item limit and the batch far within the frame (proto allows 25 such items), so
    // every write must be applied.
    let writes: Vec<WriteOp> = (0..3)
        .map(|i| WriteOp::Put {
            key: Key::new("big", format!("b{i}")),
            value: vec![i as u8; ITEM_BYTES_MAX - 8],
        })
        .collect();
    let outcomes = c.batch_write(t, writes).unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, WriteOutcome::Written { .. })),
        "a batch of three items at the limit: {outcomes:?}"
    );
    // A query page stops at 1 MiB of items (two of these) and resumes.
    let first = c.query(query(t, b"big")).unwrap();
    assert!(
        first.items.len() <= 2 && first.resume.is_some(),
        "a page of {} items of 400 KiB, resume {:?}",
        first.items.len(),
        first
            .resume
            .as_ref()
            .map(|r| String::from_utf8_lossy(r).into_owned())
    );
    let all_big = c.query_all(query(t, b"big")).unwrap();
    assert_eq!(
        sort_keys(&all_big),
        vec!["b0", "b1", "b2", "item"],
        "big/item and three batch items"
    );
    assert!(all_big[1].value == vec![1u8; ITEM_BYTES_MAX - 8]);
    stop(node);
}

// ---------------------------------------------------------------------------------------
// Protocol abuse

fn get_frame(request_id: u64) -> Vec<u8> {
    proto::encode_request(
        request_id,
        &Request::Get(proto::Get {
            table: "abuse".into(),
            key: Key::simple("k"),
            consistency: Consistency::Strong,
        }),
        0,
    )
}

/// Reads the answer to a get of key "k" in table "abuse", value "v".
#[track_caller]
fn assert_answers(c: &mut blocking::Client) {
    let (id, r) = {
        let id = c
            .send(&Request::Get(proto::Get {
                table: "abuse".into(),
                key: Key::simple("k"),
                consistency: Consistency::Strong,
            }))
            .unwrap();
        let (got, r) = c.read_response().unwrap();
        assert_eq!(got, id);
        (got, r)
    };
    match r {
        Response::Item(i) => assert_eq!(i.value, b"v", "request {id}"),
        other => panic!("expected the item, got {other:?}"),
    }
}

#[test]
fn bad_frames_get_typed_errors_and_the_connection_lives_on() {
    let (_dir, node, mut c) = node();
    simple_table(&mut c, "abuse", 0);
    c.put("abuse", Key::simple("k"), b"v".to_vec()).unwrap();

    // A bad checksum: the framing holds, the payload is refused by name.
    let mut frame = get_frame(41);
    frame[20] ^= 0xff;
    c.send_raw(&frame).unwrap();
    let (id, r) = c.read_response().unwrap();
    assert_eq!(id, 41);
    assert!(
        matches!(r, Response::Error(proto::Error::BadFrame { .. })),
        "{r:?}"
    );
    assert_answers(&mut c);

    // A flipped payload byte (the header's crc no longer matches).
    let mut frame = get_frame(42);
    let last = frame.len() - 1;
    frame[last] ^= 0x55;
    c.send_raw(&frame).unwrap();
    let (id, r) = c.read_response().unwrap();
    assert_eq!(id, 42);
    assert!(
        matches!(r, Response::Error(proto::Error::BadFrame { .. })),
        "{r:?}"
    );
    assert_answers(&mut c);

    // An unsupported format version.
    let mut frame = get_frame(43);
    frame[4..6].copy_from_slice(&(FORMAT_VERSION + 98).to_le_bytes());
    c.send_raw(&frame).unwrap();
    let (id, r) = c.read_response().unwrap();
    assert_eq!(id, 43);
    assert_eq!(
        r,
        Response::Error(proto::Error::UnsupportedVersion {
            got: FORMAT_VERSION + 98,
            supported: FORMAT_VERSION
        })
    );
    assert_answers(&mut c);

    // A payload with a good checksum that is not a request.
    let junk: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
    let header = FrameHeader {
        version: FORMAT_VERSION,
        kind: FrameKind::Request,
        flags: 0,
        request_id: 44,
        payload_bytes: junk.len() as u32,
        payload_crc32: crc32(&junk),
    };
    c.send_raw(&header.encode()).unwrap();
    c.send_raw(&junk).unwrap();
    let (id, r) = c.read_response().unwrap();
    assert_eq!(id, 44);
    assert!(
        matches!(r, Response::Error(proto::Error::BadFrame { .. })),
        "{r:?}"
    );
    // An empty payload.
    let header = FrameHeader {
        request_id: 45,
        payload_bytes: 0,
        payload_crc32: crc32(&[]),
        ..header
    };
    c.send_raw(&header.encode()).unwrap();
    let (id, r) = c.read_response().unwrap();
    assert_eq!(id, 45);
    assert!(
        matches!(r, Response::Error(proto::Error::BadFrame { .. })),
        "{r:?}"
    );
    // A response frame sent as a request.
    c.send_raw(&proto::encode_response(
        46,
        &Response::Written { version: 1 },
    ))
    .unwrap();
    let (id, r) = c.read_response().unwrap();
    assert_eq!(id, 46);
    assert!(
        matches!(r, Response::Error(proto::Error::BadFrame { .. })),
        "{r:?}"
    );
    assert_answers(&mut c);

    // Pipelined: a good request, a bad one, a good one, written at once; each answered.
    let mut burst = get_frame(50);
    let mut bad = get_frame(51);
    bad[20] ^= 1;
    burst.extend_from_slice(&bad);
    burst.extend_from_slice(&get_frame(52));
    c.send_raw(&burst).unwrap();
    let mut answers = BTreeMap::new();
    for _ in 0..3 {
        let (id, r) = c.read_response().unwrap();
        answers.insert(id, r);
    }
    assert!(matches!(answers[&50], Response::Item(_)));
    assert!(matches!(
        answers[&51],
        Response::Error(proto::Error::BadFrame { .. })
    ));
    assert!(matches!(answers[&52], Response::Item(_)));
    stop(node);
}

fn crc32(bytes: &[u8]) -> u32 {
    // The protocol's crc32 (IEEE), bit by bit: the tests need no crc crate of their own.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn lost_framing_closes_only_that_connection() {
    let (_dir, node, mut c) = node();
    simple_table(&mut c, "abuse", 0);
    c.put("abuse", Key::simple("k"), b"v".to_vec()).unwrap();
    let wait = Duration::from_secs(10);

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", (0..200u32).map(|i| (i * 7 + 3) as u8).collect()),
        ("bad magic", {
            let mut f = get_frame(1);
            f[0..4].copy_from_slice(b"XXXX");
            f
        }),
        ("unknown kind", {
            let mut f = get_frame(1);
            f[6] = 9;
            f
        }),
        ("unknown flags", {
            let mut f = get_frame(1);
            f[7] = 0x80;
            f
        }),
    ];
    // A length over the frame limit: the header alone must be enough to close.
    let header = FrameHeader {
        version: FORMAT_VERSION,
        kind: FrameKind::Request,
        flags: 0,
        request_id: 1,
        payload_bytes: FRAME_PAYLOAD_BYTES_MAX as u32 + 1,
        payload_crc32: 0,
    };
    cases.push(("oversized length", header.encode().to_vec()));
    let header = FrameHeader {
        payload_bytes: u32::MAX,
        ..header
    };
    cases.push(("u32::MAX length", header.encode().to_vec()));

    for (what, bytes) in cases {
        let mut bad = node.client();
        // A good request first, so that the connection is known to work.
        assert_answers(&mut bad);
        bad.send_raw(&bytes).unwrap();
        assert!(
            bad.is_closed_by_server(wait).unwrap(),
            "{what}: the node keeps a connection whose framing is lost"
        );
        // The node serves the other connection, and new ones.
        assert_answers(&mut c);
        assert_answers(&mut node.client());
    }

    // A good request whose answer is still owed when bad bytes follow on the same write:
    // the request already read is answered (or the connection closes); never a hang.
    let mut bad = node.client();
    let mut bytes = get_frame(7);
    bytes.extend_from_slice(b"XXXXnot a frame at all, but 24 bytes or more");
    bad.send_raw(&bytes).unwrap();
    match bad.read_response() {
        Ok((7, Response::Item(_))) | Err(Error::Closed) | Err(Error::Io(_)) => {}
        other => panic!("after lost framing: {other:?}"),
    }
    assert!(bad.is_closed_by_server(wait).unwrap());

    // A client that hangs up halfway through a frame.
    let mut half = node.client();
    half.send_raw(&get_frame(9)[..30]).unwrap();
    half.close();
    // Many connections opened and dropped at once.
    for _ in 0..50 {
        drop(node.client());
    }
    assert_answers(&mut c);
    stop(node);
}

// ---------------------------------------------------------------------------------------
// Cores and forwarding

#[test]
fn every_core_port_answers_for_every_partition() {
    let (_dir, node, mut c) = node();
    simple_table(&mut c, "spread", 8);
    sorted_table(&mut c, "spread_sorted", 8);
    // With eight partitions over two cores, some of these keys live on each core; every
    // request below goes to both cores' own ports, so about half are forwarded.
    let keys: Vec<Key> = (0..40).map(|i| Key::simple(format!("fw{i}"))).collect();
    let mut cores: Vec<blocking::Client> = (0..node.ports.cores.len())
        .map(|i| Node::client_at(node.core_addr(i)))
        .collect();
    assert_eq!(cores.len(), 2);
    for (i, k) in keys.iter().enumerate() {
        let via = &mut cores[i % 2];
        via.put("spread", k.clone(), format!("v{i}").into_bytes())
            .unwrap();
    }
    for (i, k) in keys.iter().enumerate() {
        for via in cores.iter_mut() {
            let item = via
                .get("spread", k.clone(), Consistency::Strong)
                .unwrap()
                .unwrap();
            assert_eq!(item.value, format!("v{i}").into_bytes());
        }
        let d = cores[(i + 1) % 2]
            .delete("spread", k.clone(), Condition::IfPresent)
            .unwrap();
        assert!(d.existed);
    }
    // Conditional writes, queries, scans and batches through each core's port.
    for (ci, via) in cores.iter_mut().enumerate() {
        for p in 0..10 {
            let pk = format!("q{p}");
            via.put_if(
                "spread_sorted",
                Key::new(pk.clone(), format!("c{ci}")),
                b"x".to_vec(),
                Condition::IfAbsent,
            )
            .unwrap();
        }
    }
    for via in cores.iter_mut() {
        for p in 0..10 {
            let q = via.query(query("spread_sorted", format!("q{p}").as_bytes()));
            assert_eq!(sort_keys(&q.unwrap().items), vec!["c0", "c1"]);
        }
        let all = via
            .scan_all(Scan {
                table: "spread_sorted".into(),
                limit: 3,
                resume: None,
                consistency: Consistency::Strong,
            })
            .unwrap();
        assert_eq!(all.len(), 20);
        let got = via
            .batch_get(
                "spread_sorted",
                (0..10).map(|p| Key::new(format!("q{p}"), "c1")).collect(),
                Consistency::Strong,
            )
            .unwrap();
        assert_eq!(got.items.len() + got.unprocessed.len(), 10);
        let outcomes = via
            .batch_write(
                "spread",
                keys.iter()
                    .take(BATCH_WRITES_MAX)
                    .map(|k| WriteOp::Put {
                        key: k.clone(),
                        value: b"batched".to_vec(),
                    })
                    .collect(),
            )
            .unwrap();
        assert!(outcomes
            .iter()
            .all(|o| matches!(o, WriteOutcome::Written { .. })));
        // Table admin through each core.
        assert_eq!(via.describe_table("spread").unwrap().partitions, 8);
    }
    let log_path = node.log_path.clone();
    stop(node);
    // The node counts forwarded requests in its stop line; when it says, some must have
    // been forwarded (a log without the counter checks nothing: the answers above are the
    // test).
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    let counts: Vec<u64> = log
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("forwarded_in="))
        .filter_map(|n| n.parse().ok())
        .collect();
    if !counts.is_empty() {
        let n: u64 = counts.iter().sum();
        assert!(n > 0, "no request was forwarded between cores");
    }
}

#[test]
fn the_async_client_pipelines_against_the_node() {
    use client::{Client, ClientConfig};
    use glommio::{LocalExecutorBuilder, Placement};

    let (_dir, node, mut c) = node();
    simple_table(&mut c, "pipelined", 0);
    let mut addrs = vec![node.addr()];
    addrs.extend((0..node.ports.cores.len()).map(|i| node.core_addr(i)));
    let written = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let client = Client::connect(ClientConfig {
                connections: 3,
                request_timeout: Duration::from_secs(20),
                ..ClientConfig::new(addrs)
            })
            .await
            .unwrap();
            let tasks: Vec<_> = (0..64)
                .map(|t| {
                    let c = client.clone();
                    glommio::spawn_local(async move {
                        for i in 0..30 {
                            let k = Key::simple(format!("t{t}-{i}"));
                            let v = c
                                .put("pipelined", k.clone(), format!("{t}/{i}").into_bytes())
                                .await
                                .unwrap();
                            let item = c.get("pipelined", k, Consistency::Strong).await.unwrap();
                            assert_eq!(item.unwrap().version, v);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            let items = client
                .scan_all(Scan {
                    table: "pipelined".into(),
                    limit: 100,
                    resume: None,
                    consistency: Consistency::Strong,
                })
                .await
                .unwrap();
            items.len()
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(written, 64 * 30);
    stop(node);
}

#[test]
fn items_and_tables_survive_a_clean_restart() {
    let (_dir, mut node, mut c) = node();
    sorted_table(&mut c, "durable", 4);
    let mut versions = BTreeMap::new();
    for i in 0..50 {
        let k = Key::new(format!("p{}", i % 5), format!("s{i:02}"));
        versions.insert(
            k.clone(),
            c.put("durable", k, vec![i as u8; i * 10]).unwrap(),
        );
    }
    c.delete("durable", Key::new("p0", "s00"), Condition::None)
        .unwrap();
    versions.remove(&Key::new("p0", "s00"));
    drop(c);
    let status = node.stop().expect("stops on SIGTERM");
    assert!(status.success(), "{status}");
    node.restart();
    let mut c = node.client();
    assert_eq!(c.describe_table("durable").unwrap().partitions, 4);
    for (k, v) in &versions {
        let item = c
            .get("durable", k.clone(), Consistency::Strong)
            .unwrap()
            .unwrap_or_else(|| panic!("{k:?} lost over a clean restart"));
        assert_eq!(item.version, *v);
    }
    assert_eq!(
        c.get("durable", Key::new("p0", "s00"), Consistency::Strong)
            .unwrap(),
        None
    );
    // A key's versions keep growing after a restart (versions are its partition's log
    // indices, so only one partition's versions compare).
    let k = Key::new("p1", "s01");
    let after = c.put("durable", k.clone(), b"new".to_vec()).unwrap();
    assert!(after > versions[&k], "{after} after {}", versions[&k]);
    stop(node);
}
