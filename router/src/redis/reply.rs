//! One-value replies as owned bytes, and percore's errors in Redis's words.

/// `+text`.
pub fn simple(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    resp::encode::simple(&mut out, text);
    out
}

/// `-text`; `text` starts with its code (`ERR`, `TRYAGAIN`, `NOPROTO`).
pub fn error(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    resp::encode::error(&mut out, text);
    out
}

/// A bulk string.
pub fn bulk(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    resp::encode::bulk(&mut out, bytes);
    out
}

/// An integer.
pub fn integer(value: i64) -> Vec<u8> {
    let mut out = Vec::new();
    resp::encode::integer(&mut out, value);
    out
}

/// "No value", in the connection's protocol version.
pub fn null(version: resp::encode::Version) -> Vec<u8> {
    let mut out = Vec::new();
    resp::encode::null(&mut out, version);
    out
}

/// A percore error as a Redis error. `Throttled` and `Unavailable` say `TRYAGAIN`, the code
/// Redis clients already treat as "nothing was done, retry later"; the rest say `ERR` with
/// percore's own reason, which names what was wrong.
pub fn percore_error(e: &proto::Error) -> Vec<u8> {
    match e {
        proto::Error::Throttled { .. } | proto::Error::Unavailable { .. } => {
            error(&format!("TRYAGAIN {e}"))
        }
        proto::Error::UnknownTable { name } => error(&format!(
            "ERR unknown table '{name}': create it first (the router's redis_tables list \
             names the tables that SELECT picks)"
        )),
        e => error(&format!("ERR {e}")),
    }
}
