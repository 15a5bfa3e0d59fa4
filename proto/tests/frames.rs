//! Frames: round trips, every way a frame can be bad, and the fuzz target's proptest twin.

use proptest::prelude::*;
use proto::*;

fn one_frame(bytes: &[u8]) -> Frame {
    let mut r = FrameReader::new();
    r.push(bytes);
    r.next_frame().expect("framing").expect("a whole frame")
}

fn requests() -> Vec<Request> {
    let key = Key::new(b"user#1".to_vec(), b"2026".to_vec());
    vec![
        Request::CreateTable(CreateTable {
            name: "orders".into(),
            key_schema: KeySchema {
                partition_key: "customer".into(),
                sort_key: Some("date".into()),
            },
            capacity: CapacityMode::Provisioned {
                read_units_per_s: 10,
                write_units_per_s: 5,
            },
            partitions: 8,
        }),
        Request::DescribeTable {
            name: "orders".into(),
        },
        Request::ListTables {
            start_after: Some("a".into()),
            limit: 3,
        },
        Request::DeleteTable {
            name: "orders".into(),
        },
        Request::Put(Put {
            table: "orders".into(),
            key: key.clone(),
            value: vec![7; 1000],
            condition: Condition::IfVersion(42),
        }),
        Request::Get(Get {
            table: "orders".into(),
            key: key.clone(),
            consistency: Consistency::Eventual,
        }),
        Request::Delete(Delete {
            table: "orders".into(),
            key: key.clone(),
            condition: Condition::IfPresent,
        }),
        Request::Query(Query {
            table: "orders".into(),
            partition_key: b"user#1".to_vec(),
            start: SortBound::Included(b"2025".to_vec()),
            end: SortBound::Excluded(b"2027".to_vec()),
            direction: Direction::Backward,
            limit: 10,
            resume: Some(b"2026-05".to_vec()),
            consistency: Consistency::Strong,
        }),
        Request::Scan(Scan {
            table: "orders".into(),
            limit: 0,
            resume: Some(ScanResume {
                partition: 3,
                after: Some(key.clone()),
            }),
            consistency: Consistency::Strong,
        }),
        Request::BatchGet(BatchGet {
            table: "orders".into(),
            keys: vec![key.clone(); 3],
            consistency: Consistency::Strong,
        }),
        Request::BatchWrite(BatchWrite {
            table: "orders".into(),
            writes: vec![
                WriteOp::Put {
                    key: key.clone(),
                    value: vec![1],
                },
                WriteOp::Delete {
                    key: Key::simple(b"x".to_vec()),
                },
            ],
        }),
    ]
}

#[test]
fn every_request_round_trips() {
    for (i, request) in requests().into_iter().enumerate() {
        let bytes = encode_request(i as u64, &request, 0);
        let frame = one_frame(&bytes);
        assert_eq!(frame.header.request_id, i as u64);
        assert_eq!(frame.header.kind, FrameKind::Request);
        assert_eq!(decode_request(&frame).unwrap(), request);
    }
}

#[test]
fn responses_round_trip() {
    let item = Item {
        key: Key::new(b"a".to_vec(), b"b".to_vec()),
        value: vec![3; 10],
        version: 9,
    };
    let responses = vec![
        Response::Written { version: 5 },
        Response::Item(item.clone()),
        Response::Deleted {
            version: 6,
            existed: true,
        },
        Response::QueryPage {
            items: vec![item.clone(); 2],
            resume: Some(b"b".to_vec()),
        },
        Response::ScanPage {
            items: vec![item.clone()],
            resume: Some(ScanResume {
                partition: 1,
                after: None,
            }),
        },
        Response::BatchItems {
            items: vec![item],
            unprocessed: vec![Key::simple(b"z".to_vec())],
        },
        Response::BatchWritten {
            outcomes: vec![
                WriteOutcome::Written { version: 1 },
                WriteOutcome::Failed(Error::Throttled { retry_after_ms: 5 }),
            ],
        },
        Response::Tables {
            names: vec!["abc".into()],
            last: None,
        },
        Response::Error(Error::WrongOwner {
            owner: Owner {
                node: 1,
                core: 2,
                addr: "127.0.0.1:7001".into(),
            },
            epoch: 3,
        }),
        Response::Error(Error::TooLarge {
            field: Field::Item,
            bytes: 409_601,
            max: 409_600,
        }),
    ];
    for r in responses {
        let frame = one_frame(&encode_response(77, &r));
        assert_eq!(decode_response(&frame).unwrap(), r);
    }
}

#[test]
fn a_bad_checksum_is_a_typed_error_and_framing_holds() {
    let mut bytes = encode_request(1, &Request::DescribeTable { name: "abc".into() }, 0);
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    bytes.extend_from_slice(&encode_request(
        2,
        &Request::DescribeTable { name: "abc".into() },
        0,
    ));
    let mut r = FrameReader::new();
    r.push(&bytes);
    let bad = r.next_frame().unwrap().unwrap();
    assert!(
        matches!(decode_request(&bad), Err(Error::BadFrame { reason }) if reason.contains("crc32"))
    );
    let good = r.next_frame().unwrap().unwrap();
    assert_eq!(good.header.request_id, 2);
    assert!(decode_request(&good).is_ok());
}

#[test]
fn another_version_is_a_typed_error() {
    let mut bytes = encode_request(1, &Request::DescribeTable { name: "abc".into() }, 0);
    bytes[4..6].copy_from_slice(&2u16.to_le_bytes());
    let frame = one_frame(&bytes);
    assert_eq!(
        decode_request(&frame),
        Err(Error::UnsupportedVersion {
            got: 2,
            supported: FORMAT_VERSION
        })
    );
}

#[test]
fn a_response_is_not_a_request() {
    let frame = one_frame(&encode_response(1, &Response::Written { version: 1 }));
    assert!(matches!(
        decode_request(&frame),
        Err(Error::BadFrame { .. })
    ));
}

#[test]
fn lost_framing_is_named() {
    let good = encode_request(1, &Request::DescribeTable { name: "abc".into() }, 0);
    let check = |mutate: &dyn Fn(&mut Vec<u8>), expected: FramingLost| {
        let mut b = good.clone();
        mutate(&mut b);
        let mut r = FrameReader::new();
        r.push(&b);
        assert_eq!(r.next_frame().unwrap_err(), expected);
    };
    check(&|b| b[0] = b'X', FramingLost::BadMagic { got: *b"XCR1" });
    check(&|b| b[6] = 9, FramingLost::BadKind { got: 9 });
    check(&|b| b[7] = 0x80, FramingLost::UnknownFlags { got: 0x80 });
    let over = limits::FRAME_PAYLOAD_BYTES_MAX as u32 + 1;
    check(
        &|b| b[16..20].copy_from_slice(&over.to_le_bytes()),
        FramingLost::PayloadTooLarge {
            bytes: over as u64,
            max: limits::FRAME_PAYLOAD_BYTES_MAX as u64,
        },
    );
}

#[test]
fn a_payload_of_exactly_the_limit_frames_and_one_more_does_not() {
    let mut h = FrameHeader {
        version: FORMAT_VERSION,
        kind: FrameKind::Request,
        flags: 0,
        request_id: 1,
        payload_bytes: limits::FRAME_PAYLOAD_BYTES_MAX as u32,
        payload_crc32: 0,
    };
    assert!(FrameHeader::decode(&h.encode()).is_ok());
    h.payload_bytes += 1;
    assert!(FrameHeader::decode(&h.encode()).is_err());
}

#[test]
fn frames_split_anywhere_reassemble() {
    let mut stream = Vec::new();
    for (i, r) in requests().iter().enumerate() {
        stream.extend_from_slice(&encode_request(i as u64, r, 0));
    }
    for step in [1, 7, 24, 100, 4096] {
        let mut reader = FrameReader::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(step) {
            reader.push(chunk);
            while let Some(f) = reader.next_frame().unwrap() {
                got.push(decode_request(&f).unwrap());
            }
        }
        assert_eq!(got, requests(), "chunks of {step}");
        assert_eq!(reader.buffered_bytes(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The twin of `proto/fuzz/fuzz_targets/decode_frame.rs`: arbitrary bytes never panic.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        proto::frame::fuzz_one(&data);
    }

    /// A valid header followed by arbitrary payload bytes (with a matching checksum, so the
    /// bytes reach rkyv's validation) never panics either.
    #[test]
    fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..256), kind in 1u8..=2) {
        let header = FrameHeader {
            version: FORMAT_VERSION,
            kind: if kind == 1 { FrameKind::Request } else { FrameKind::Response },
            flags: 0,
            request_id: 9,
            payload_bytes: payload.len() as u32,
            payload_crc32: crc32fast_hash(&payload),
        };
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(&payload);
        proto::frame::fuzz_one(&bytes);
    }

    /// Mutating one byte of a valid frame gives an error or a valid request, never a panic.
    #[test]
    fn one_flipped_byte_never_panics(which in 0usize..11, at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = encode_request(3, &requests()[which], 0);
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        proto::frame::fuzz_one(&bytes);
    }
}

fn crc32fast_hash(b: &[u8]) -> u32 {
    // The same crc32 the header carries, computed the way a foreign client would.
    let mut crc = 0xffff_ffffu32;
    for &byte in b {
        crc ^= byte as u32;
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
