//! Arbitrary bytes as a connection's stream, fed in arbitrary pieces: the parser yields
//! commands, refusals or a fatal error, never a panic, and never holds more than its limits.
//! Its proptest twin is `resp/tests/parser.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    resp::fuzz_one(data);
});
