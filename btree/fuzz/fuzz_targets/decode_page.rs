//! Arbitrary bytes as a page: decoding gives an error or a valid page, never a panic.
//! Its proptest twin is `btree/tests/decode.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    btree::page::fuzz_one(data);
});
