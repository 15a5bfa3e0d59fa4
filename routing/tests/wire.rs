//! Whatever arrives from the wire, the conversions and the sync session answer with a value
//! or a typed error, never a panic, and the local trie stays sound.

use proptest::prelude::*;
use proto::cluster::{Expansion as WireExpansion, Placement, Prefix as WirePrefix, Route};
use routing::{
    expansion_from_wire, expansions_from_wire, prefix_from_wire, prefix_to_wire,
    prefixes_from_wire, route_key, Expansion, Prefix, SyncSession, Trie, KEY_BITS, KEY_BYTES,
};

fn route() -> impl Strategy<Value = Route> {
    (
        any::<u64>(),
        "[a-z]{0,6}",
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        0u32..3,
    )
        .prop_map(
            |(table_id, table, index, partitions, partition_id, epoch, leader)| Route {
                table_id,
                table,
                index,
                partitions,
                partition_id,
                epoch,
                replicas: vec![Placement {
                    node: 1,
                    core: 0,
                    addr: "127.0.0.1:1".into(),
                }],
                leader,
            },
        )
}

/// Keys that are mostly the right length and sit in a tiny space, so that some of them
/// land under the prefixes a session asks.
fn wire_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (0u64..2, 0u128..4).prop_map(|(t, s)| route_key(t, s << 126).to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..30),
    ]
}

fn wire_prefix() -> impl Strategy<Value = WirePrefix> {
    prop_oneof![
        // Canonical halves of a real key.
        3 => (wire_key(), 0u32..=KEY_BITS).prop_map(|(key, bits)| match <[u8; KEY_BYTES]>::try_from(&key[..]) {
            Ok(k) => prefix_to_wire(&Prefix::of(&k, bits)),
            Err(_) => WirePrefix { key, bits },
        }),
        1 => (wire_key(), any::<u32>()).prop_map(|(key, bits)| WirePrefix { key, bits }),
    ]
}

fn wire_expansion() -> impl Strategy<Value = WireExpansion> {
    let half = || (wire_prefix(), any::<u128>(), 0u64..4);
    prop_oneof![
        1 => Just(WireExpansion::Empty),
        2 => (wire_key(), route()).prop_map(|(key, route)| WireExpansion::Leaf { key, route }),
        2 => (half(), half()).prop_map(|(left, right)| WireExpansion::Split { left, right }),
        // A well-formed split under a random prefix.
        2 => (wire_key(), 1u32..=KEY_BITS, any::<u128>(), any::<u128>(), 1u64..4, 1u64..4)
            .prop_filter_map("24-byte key", |(key, bits, lh, rh, lc, rc)| {
                let k = <[u8; KEY_BYTES]>::try_from(&key[..]).ok()?;
                let left = Prefix::of(&k, bits - 1);
                let mut right = left;
                right.key[((bits - 1) / 8) as usize] |= 0x80 >> ((bits - 1) % 8);
                let left = Prefix { bits, ..left };
                right.bits = bits;
                Some(WireExpansion::Split {
                    left: (prefix_to_wire(&left), lh, lc),
                    right: (prefix_to_wire(&right), rh, rc),
                })
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn prefixes_from_anything(wire in proptest::collection::vec(wire_prefix(), 0..8)) {
        if let Ok(prefixes) = prefixes_from_wire(&wire) {
            for (p, w) in prefixes.iter().zip(&wire) {
                prop_assert!(p.is_canonical());
                prop_assert_eq!(&prefix_to_wire(p), w);
            }
        }
        for w in &wire {
            let _ = prefix_from_wire(w);
        }
    }

    #[test]
    fn sessions_survive_any_reply(
        local_keys in proptest::collection::vec((0u64..2, 0u128..4, 0u64..3), 0..12),
        replies in proptest::collection::vec(proptest::collection::vec(wire_expansion(), 0..4), 1..6),
        remote_root in (any::<u128>(), 0u64..10),
    ) {
        let mut local: Trie<Route> = Trie::new();
        for (t, s, epoch) in local_keys {
            let route = Route {
                table_id: t, table: "t".into(), index: s as u32, partitions: 4,
                partition_id: t * 10 + s as u64, epoch, replicas: vec![], leader: 0,
            };
            local.insert(route_key(t, s << 126), route);
        }
        let mut session = SyncSession::start(&local, remote_root);
        for reply in replies {
            let asked = session.next_request();
            let Ok(reply) = expansions_from_wire(reply) else { continue };
            // Answer as many prefixes as were asked when we can, to get past the length check.
            let reply: Vec<Expansion<Route>> = match &asked {
                Some(a) => reply.into_iter().cycle().take(a.len()).collect(),
                None => reply,
            };
            let _ = session.on_reply(&mut local, reply);
            local.check_invariants();
            if session.is_done() {
                break;
            }
        }
    }

    #[test]
    fn expansions_from_anything(wire in proptest::collection::vec(wire_expansion(), 0..8)) {
        let _ = expansions_from_wire(wire.clone());
        for w in wire {
            if let Ok(e) = expansion_from_wire(w.clone()) {
                prop_assert_eq!(WireExpansion::from(e), w);
            }
        }
    }
}

#[test]
fn too_many_prefixes_is_refused() {
    let one = prefix_to_wire(&Prefix::ROOT);
    let wire = vec![one; routing::SYNC_PREFIXES_PER_REQUEST_MAX + 1];
    assert!(matches!(
        prefixes_from_wire(&wire),
        Err(routing::WireError::TooMany { .. })
    ));
}
