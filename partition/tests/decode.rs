//! The command decoder and the WAL record decoders never panic, whatever the bytes; what they
//! accept re-encodes to the same bytes.

use partition::records;
use partition::Command;
use proptest::prelude::*;
use proto::{Condition, Key, WriteOp};

fn valid_command() -> impl Strategy<Value = Command> {
    let bytes = |n| prop::collection::vec(any::<u8>(), 0..n);
    let key =
        (prop::collection::vec(any::<u8>(), 1..8), bytes(8)).prop_map(|(p, s)| Key::new(p, s));
    let cond = prop_oneof![
        Just(Condition::None),
        Just(Condition::IfAbsent),
        Just(Condition::IfPresent),
        any::<u64>().prop_map(Condition::IfVersion),
    ];
    let op = prop_oneof![
        (key.clone(), bytes(16)).prop_map(|(key, value)| WriteOp::Put { key, value }),
        key.clone().prop_map(|key| WriteOp::Delete { key }),
    ];
    prop_oneof![
        (key.clone(), bytes(32), cond.clone()).prop_map(|(key, value, condition)| Command::Put {
            key,
            value,
            condition
        }),
        (key, cond).prop_map(|(key, condition)| Command::Delete { key, condition }),
        prop::collection::vec(op, 1..5).prop_map(|writes| Command::Batch { writes }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(c) = Command::decode(&bytes) {
            prop_assert_eq!(&c.encode(), &bytes);
        }
        let _ = records::decode_entry(0, 1, records::KIND_ENTRY, &bytes);
        let _ = records::decode_hard_state(1, 1, records::KIND_HARD_STATE, &bytes);
    }

    #[test]
    fn mutated_commands_never_panic(
        c in valid_command(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = c.encode();
        let decoded = Command::decode(&bytes);
        prop_assert_eq!(decoded, Ok(c));
        for (at, b, kind) in edits {
            let i = at.index(bytes.len() + 1);
            match kind {
                0 if i < bytes.len() => bytes[i] = b,
                1 => bytes.insert(i, b),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        if let Ok(d) = Command::decode(&bytes) {
            prop_assert_eq!(d.encode(), bytes);
        }
    }
}
