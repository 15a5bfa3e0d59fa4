//! The model test's key and value generators, shared so that `regressions.rs` replays the
//! model test's shrunk cases byte for byte.
#![allow(dead_code)] // each test binary uses a different subset

/// A key longer than the inline limit of 4 KiB pages, sharing a long prefix with its
/// neighbours so that long keys and long separators both occur.
pub fn long_key(i: u16) -> Vec<u8> {
    let mut k = vec![b'L'; 1100];
    k.extend_from_slice(format!("{i:05}").as_bytes());
    k
}

/// A short, fixed-width key.
pub fn short_key(i: u16) -> Vec<u8> {
    format!("k{i:05}").into_bytes()
}

/// The model test's keys: every 41st is a long key.
pub fn model_key(i: u16) -> Vec<u8> {
    if i % 41 == 0 {
        long_key(i)
    } else {
        short_key(i)
    }
}

/// The model test's values: a length that is a multiple of 37 gives an overflow value.
pub fn value(i: u16, len: u16, salt: u8) -> Vec<u8> {
    let len = if len % 37 == 0 {
        3000 + (len as usize % 1000) * 20
    } else {
        len as usize % 300
    };
    (0..len)
        .map(|j| {
            (j as u8)
                .wrapping_mul(31)
                .wrapping_add(salt)
                .wrapping_add(i as u8)
        })
        .collect()
}
