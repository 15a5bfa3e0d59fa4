//! The fuzz target's property on stable: arbitrary bytes decode to an error or a valid
//! page, never a panic; and real pages survive the trip.

use btree::page::{decode_checked, fix_checksum, fuzz_one, PageView};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..4200)) {
        fuzz_one(&data);
    }

    /// Structured-ish pages: a valid header and kind with random cells, so decoding goes
    /// past the checksum and kind checks into the cell parser.
    #[test]
    fn plausible_pages_never_panic(kind in 1u8..=5, count in 0u32..300, body in prop::collection::vec(any::<u8>(), 0..4064)) {
        let mut buf = vec![0u8; 4096];
        buf[4] = kind;
        buf[5] = 1;
        buf[24..28].copy_from_slice(&count.to_le_bytes());
        buf[28..32].copy_from_slice(&(count * 13).to_le_bytes());
        buf[32..32 + body.len()].copy_from_slice(&body);
        fix_checksum(&mut buf);
        if let Ok(PageView::Leaf(cells)) = decode_checked(&buf, 0) {
            prop_assert!(cells.len() == count as usize);
        }
    }
}
