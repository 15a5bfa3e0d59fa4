//! RESP2, the Redis serialization protocol, as a sans-I/O state machine: bytes in, commands
//! out; replies in, bytes out.
//!
//! # What it owns
//!
//! - [`Parser`]: an incremental command parser. A connection hands it whatever arrived; it
//!   consumes what it can and yields one [`Event`] at a time: a [`Command`] (its arguments),
//!   a [`Refusal`] (a whole command was read but breaks a limit: the stream is still in step,
//!   so the connection answers with an error and goes on), or a [`Fatal`] error (the framing
//!   itself is lost: the connection answers once and closes, as Redis does). It accepts both
//!   forms Redis accepts: arrays of bulk strings (what every client library sends) and
//!   inline commands (what a person types into `telnet`).
//! - [`encode`]: the reply writers (simple string, error, integer, bulk, null, array
//!   header), appending to a caller's buffer so that a pipeline's replies leave in one write.
//! - [`Limits`]: how big a command may be. An oversized argument is read and thrown away as
//!   it arrives, never buffered, so that a client cannot make the server hold more than
//!   [`Limits::command_bytes_max`] for one connection, and the connection survives.
//!
//! # What it never does
//!
//! It does no I/O, knows no command names (the router's `redis` module does), and never
//! panics on input: every byte sequence leads to an event or to a request for more bytes.
//!
//! # Why its own crate
//!
//! The parser is a decoder at a trust boundary: it is fuzzed on its own (`resp/fuzz`) and
//! tested against a model without a server, and the router, which drives it, stays about
//! routing.

#![warn(missing_docs)]

pub mod encode;
mod parse;

pub use parse::{Command, Event, Fatal, Limits, Parser, Refusal};

/// Feeds `data` to a parser in pieces whose sizes come from the data itself, and checks
/// what must always hold: no panic, progress on every event, and the limits kept. For the
/// fuzz target and its proptest twin.
pub fn fuzz_one(data: &[u8]) {
    let limits = Limits {
        args_max: 16,
        arg_bytes_max: 64,
        command_bytes_max: 256,
        inline_bytes_max: 128,
    };
    let mut parser = Parser::new(limits);
    let mut buffer: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut piece = 1;
    while fed < data.len() {
        let end = (fed + piece).min(data.len());
        buffer.extend_from_slice(&data[fed..end]);
        piece = (data[fed] as usize % 7) + 1;
        fed = end;
        loop {
            let (used, event) = parser.advance(&buffer);
            assert!(used <= buffer.len(), "consumed more than was given");
            buffer.drain(..used);
            match event {
                None => break,
                Some(Err(_fatal)) => return,
                Some(Ok(Event::Command(command))) => {
                    assert!(!command.args.is_empty(), "a command has a name");
                    assert!(command.args.len() <= limits.args_max);
                    let bytes: usize = command.args.iter().map(Vec::len).sum();
                    assert!(bytes <= limits.command_bytes_max);
                    assert!(command.args.iter().all(|a| a.len() <= limits.arg_bytes_max));
                }
                Some(Ok(Event::Refused(_))) => {}
            }
        }
        // Whatever is left waits for more bytes: it is less than a line or a bulk body.
        assert!(
            buffer.len() <= limits.inline_bytes_max.max(limits.arg_bytes_max + 2),
            "the parser left {} bytes unconsumed",
            buffer.len()
        );
    }
}
