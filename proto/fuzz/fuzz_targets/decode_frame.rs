//! Arbitrary bytes as a connection's stream: splitting and decoding give frames or errors,
//! never a panic, and whatever decodes encodes back to itself.
//! Its proptest twin is `proto/tests/frames.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::frame::fuzz_one(data);
});
