//! Reply writers: each appends one RESP2 value to a buffer.
//!
//! Replies are appended rather than returned so that a connection gathers a whole
//! pipeline's replies in one buffer and sends them with one write.

use std::io::Write;

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

/// Appends the null bulk string (`$-1`): "no such key" in RESP2.
pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
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
        null(&mut out);
        array(&mut out, 2);
        assert_eq!(
            out,
            b"+OK\r\n-ERR no  way\r\n:-3\r\n$4\r\na\r\nb\r\n$-1\r\n*2\r\n".to_vec()
        );
    }
}
