//! The request checks, as a table of inputs and the error each must give.

use proto::limits::*;
use proto::*;

fn put(pk: usize, sk: usize, value: usize) -> Request {
    Request::Put(Put {
        table: "tbl".into(),
        key: Key::new(vec![b'p'; pk], vec![b's'; sk]),
        value: vec![0; value],
        condition: Condition::None,
    })
}

fn check(request: Request, expected: Result<(), Error>) {
    assert_eq!(validate(&request), expected, "{request:?}");
}

fn too_large(field: Field, bytes: usize, max: usize) -> Result<(), Error> {
    Err(Error::TooLarge {
        field,
        bytes: bytes as u64,
        max: max as u64,
    })
}

#[test]
fn key_and_item_sizes_at_and_over_the_limits() {
    check(put(PARTITION_KEY_BYTES_MAX, 0, 1), Ok(()));
    check(
        put(PARTITION_KEY_BYTES_MAX + 1, 0, 1),
        too_large(Field::PartitionKey, 2049, 2048),
    );
    check(put(1, SORT_KEY_BYTES_MAX, 1), Ok(()));
    check(
        put(1, SORT_KEY_BYTES_MAX + 1, 1),
        too_large(Field::SortKey, 1025, 1024),
    );
    check(put(10, 10, ITEM_BYTES_MAX - 20), Ok(()));
    check(
        put(10, 10, ITEM_BYTES_MAX - 19),
        too_large(Field::Item, ITEM_BYTES_MAX + 1, ITEM_BYTES_MAX),
    );
    assert!(matches!(
        validate(&put(0, 0, 1)),
        Err(Error::InvalidRequest { .. })
    ));
}

#[test]
fn table_names() {
    assert_eq!(check_table_name("a.b_c-9"), Ok(()));
    assert!(matches!(
        check_table_name("ab"),
        Err(Error::InvalidRequest { .. })
    ));
    assert!(matches!(
        check_table_name("a b c"),
        Err(Error::InvalidRequest { .. })
    ));
    assert_eq!(check_table_name(&"x".repeat(255)), Ok(()));
    assert_eq!(
        check_table_name(&"x".repeat(256)),
        Err(Error::TooLarge {
            field: Field::TableName,
            bytes: 256,
            max: 255
        })
    );
}

#[test]
fn batch_sizes_and_duplicates() {
    let writes = |n: usize| {
        Request::BatchWrite(BatchWrite {
            table: "tbl".into(),
            writes: (0..n)
                .map(|i| WriteOp::Put {
                    key: Key::simple(format!("k{i}").into_bytes()),
                    value: vec![1],
                })
                .collect(),
        })
    };
    check(writes(BATCH_WRITES_MAX), Ok(()));
    check(
        writes(BATCH_WRITES_MAX + 1),
        too_large(Field::BatchWrites, 26, 25),
    );
    assert!(matches!(
        validate(&writes(0)),
        Err(Error::InvalidRequest { .. })
    ));
    let dup = Request::BatchWrite(BatchWrite {
        table: "tbl".into(),
        writes: vec![
            WriteOp::Put {
                key: Key::simple(b"a".to_vec()),
                value: vec![],
            },
            WriteOp::Delete {
                key: Key::simple(b"a".to_vec()),
            },
        ],
    });
    assert!(
        matches!(validate(&dup), Err(Error::InvalidRequest { reason }) if reason.contains("twice"))
    );
    let gets = |n: usize| {
        Request::BatchGet(BatchGet {
            table: "tbl".into(),
            keys: (0..n)
                .map(|i| Key::simple(format!("k{i}").into_bytes()))
                .collect(),
            consistency: Consistency::Strong,
        })
    };
    check(gets(BATCH_GETS_MAX), Ok(()));
    check(
        gets(BATCH_GETS_MAX + 1),
        too_large(Field::BatchGets, 101, 100),
    );
}

#[test]
fn placement_covers_the_hash_space_in_order() {
    for n in [1u32, 2, 3, 7, 64, 4096] {
        assert_eq!(partition_start(0, n), 0);
        assert_eq!(partition_index(0, n), 0);
        assert_eq!(partition_index(u128::MAX, n), n - 1);
        for i in 1..n.min(100) {
            let s = partition_start(i, n);
            assert!(s > partition_start(i - 1, n));
            assert_eq!(partition_index(s, n), i, "start of {i} of {n}");
            assert_eq!(partition_index(s - 1, n), i - 1, "end of {} of {n}", i - 1);
        }
    }
}

#[test]
fn the_hash_is_fixed_forever() {
    // Placement depends on these values: if this test fails, every stored item moves.
    assert_eq!(partition_key_hash(b""), xxhash_known(b""));
    assert_eq!(partition_key_hash(b"user#42"), xxhash_known(b"user#42"));
}

fn xxhash_known(key: &[u8]) -> u128 {
    match key {
        b"" => 0x99aa06d3014798d86001c324468d497f,
        b"user#42" => 0x0181a55291bf790e3bafb1ea6fd819f4,
        _ => unreachable!("only pinned keys are asked for"),
    }
}

#[test]
fn idempotence_follows_the_condition() {
    let mut p = Put {
        table: "tbl".into(),
        key: Key::simple(b"a".to_vec()),
        value: vec![],
        condition: Condition::None,
    };
    assert!(!Request::Put(p.clone()).is_idempotent());
    p.condition = Condition::IfAbsent;
    assert!(Request::Put(p.clone()).is_idempotent());
    p.condition = Condition::IfVersion(3);
    assert!(Request::Put(p).is_idempotent());
}

mod archived_items {
    //! `item_target`, which a router reads from a frame in place, agrees with `validate`,
    //! `Request::table` and `Request::is_idempotent` on the owned request.

    use proptest::prelude::*;
    use proto::limits::*;
    use proto::*;

    fn sizes(max: usize) -> impl Strategy<Value = usize> {
        prop_oneof![0..4usize, max - 1..max + 2]
    }

    fn condition() -> impl Strategy<Value = Condition> {
        prop_oneof![
            Just(Condition::None),
            Just(Condition::IfAbsent),
            Just(Condition::IfPresent),
            any::<u64>().prop_map(Condition::IfVersion),
        ]
    }

    fn request() -> impl Strategy<Value = Request> {
        let table = prop_oneof![
            Just("tbl".to_string()),
            Just("ab".to_string()),
            Just("a b c".to_string()),
            Just("t".repeat(TABLE_NAME_BYTES_MAX + 1)),
        ];
        (
            0u8..4,
            table,
            sizes(PARTITION_KEY_BYTES_MAX),
            sizes(SORT_KEY_BYTES_MAX),
            prop_oneof![0..4usize, ITEM_BYTES_MAX - 3100..ITEM_BYTES_MAX + 2],
            condition(),
        )
            .prop_map(|(kind, table, pk, sk, value, condition)| {
                let key = Key::new(vec![b'p'; pk], vec![b's'; sk]);
                match kind {
                    0 => Request::Put(Put {
                        table,
                        key,
                        value: vec![0; value],
                        condition,
                    }),
                    1 => Request::Get(Get {
                        table,
                        key,
                        consistency: Consistency::Strong,
                    }),
                    2 => Request::Delete(Delete {
                        table,
                        key,
                        condition,
                    }),
                    _ => Request::BatchGet(BatchGet {
                        table,
                        keys: vec![key],
                        consistency: Consistency::Eventual,
                    }),
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn item_target_agrees_with_the_owned_request(request in request()) {
            let bytes = encode_request(3, &request, 0);
            let mut reader = FrameReader::new();
            reader.push(&bytes);
            let frame = reader.next_frame().unwrap().unwrap();
            let archived = access_request(&frame).unwrap();
            match (&request, item_target(archived)) {
                (Request::Put(_) | Request::Get(_) | Request::Delete(_), Some(target)) => {
                    match (validate(&request), target) {
                        (Ok(()), Ok(t)) => {
                            prop_assert_eq!(t.table, request.table());
                            let key = match &request {
                                Request::Put(p) => &p.key,
                                Request::Get(g) => &g.key,
                                Request::Delete(d) => &d.key,
                                _ => unreachable!(),
                            };
                            prop_assert_eq!(t.partition_key, &key.partition[..]);
                            prop_assert_eq!(t.idempotent, request.is_idempotent());
                        }
                        (Err(owned), Err(archived)) => prop_assert_eq!(owned, archived),
                        (owned, archived) => {
                            prop_assert!(false, "validate {owned:?}, item_target {archived:?}")
                        }
                    }
                }
                (Request::BatchGet(_), None) => {}
                (_, t) => prop_assert!(false, "item_target answered {} for this kind", t.is_some()),
            }
        }
    }
}
