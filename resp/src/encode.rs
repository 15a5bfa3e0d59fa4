//! Reply writers: each appends one RESP2 value to a buffer.
//!
//! Replies are appended rather than returned so that a connection gathers a whole
//! pipeline's replies in one buffer and sends them with one write.

use std::io::Write;

/// The protocol version a connection speaks: RESP2 by default, RESP3 after `HELLO 3`. The
/// two differ, for the replies percore sends, only in how they write "nothing" and maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Version {
    /// RESP2: null is `$-1`, a map is a flat array of keys and values.
    #[default]
    Two,
    /// RESP3: null is `_`, a map is `%`.
    Three,
}

/// Appends a simple string (`+OK`). Line breaks in `text` become spaces: a simple string
/// cannot carry them, and a stray one would desynchronise the client.
pub fn simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    push_line(out, text.as_bytes());
}

/// Appends an error (`-ERR reason`). `text` starts with the error's code (`ERR`,
/// `WRONGTYPE`, `NOPROTO`, ...), as clients expect; line breaks become spaces.
pub fn error(out: &mut Vec<u8>, text: &str) {
    out.push(b'-');
    push_line(out, text.as_bytes());
}

/// Appends an integer (`:42`).
pub fn integer(out: &mut Vec<u8>, value: i64) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, ":{value}\r\n");
}

/// Appends a bulk string: binary-safe bytes with their length.
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    let _ = write!(out, "${}\r\n", bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends "no value" (`$-1` in RESP2, `_` in RESP3): "no such key".
pub fn null(out: &mut Vec<u8>, version: Version) {
    out.extend_from_slice(match version {
        Version::Two => b"$-1\r\n",
        Version::Three => b"_\r\n",
    });
}

/// Appends a map header for `pairs` key-value pairs; the caller appends key, value, key, ...
/// RESP2 has no maps: it gets an array of twice the length, as Redis sends it.
pub fn map(out: &mut Vec<u8>, pairs: usize, version: Version) {
    let _ = match version {
        Version::Two => write!(out, "*{}\r\n", pairs * 2),
        Version::Three => write!(out, "%{pairs}\r\n"),
    };
}

/// Appends an array header for `len` elements; the caller appends the elements.
pub fn array(out: &mut Vec<u8>, len: usize) {
    let _ = write!(out, "*{len}\r\n");
}

fn push_line(out: &mut Vec<u8>, text: &[u8]) {
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_framed_as_redis_frames_them() {
        let mut out = Vec::new();
        simple(&mut out, "OK");
        error(&mut out, "ERR no\r\nway");
        integer(&mut out, -3);
        bulk(&mut out, b"a\r\nb");
        null(&mut out, Version::Two);
        array(&mut out, 2);
        null(&mut out, Version::Three);
        map(&mut out, 1, Version::Two);
        map(&mut out, 1, Version::Three);
        assert_eq!(
            out,
            b"+OK\r\n-ERR no  way\r\n:-3\r\n$4\r\na\r\nb\r\n$-1\r\n*2\r\n_\r\n*2\r\n%1\r\n"
                .to_vec()
        );
    }
}
