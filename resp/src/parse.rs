//! The incremental command parser (see the crate doc).

use std::fmt;

/// The longest header line (`*<count>` or `$<length>`), in bytes with its CRLF. A 64-bit
/// count has at most 20 digits; anything longer is not RESP.
const HEADER_LINE_BYTES_MAX: usize = 32;

/// The most elements an array header may announce before the stream is treated as lost
/// (Redis's own bound). Below it, a count over [`Limits::args_max`] is a refusal: the
/// arguments are read and dropped, and the connection goes on.
const ARRAY_COUNT_PROTOCOL_MAX: u64 = 1024 * 1024;

/// The largest bulk length accepted before the stream is treated as lost (Redis's default
/// `proto-max-bulk-len`, 512 MiB). Below it, a length over [`Limits::arg_bytes_max`] is a
/// refusal: the bytes are skipped as they arrive.
const BULK_BYTES_PROTOCOL_MAX: u64 = 512 * 1024 * 1024;

/// How big a command may be. Every bound keeps a connection's memory finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most arguments in one command, its name included.
    pub args_max: usize,
    /// Largest single argument, in bytes.
    pub arg_bytes_max: usize,
    /// Largest command, all arguments together, in bytes.
    pub command_bytes_max: usize,
    /// Longest inline command line, in bytes.
    pub inline_bytes_max: usize,
}

/// One command: its name (`args[0]`) and its arguments, as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The name and the arguments; never empty.
    pub args: Vec<Vec<u8>>,
}

/// Why a whole, well-framed command was refused. The stream is still in step: the
/// connection answers with [`Refusal`]'s text as an error and reads the next command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// More arguments than [`Limits::args_max`].
    TooManyArgs {
        /// How many the command announced.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// One argument longer than [`Limits::arg_bytes_max`].
    ArgTooLarge {
        /// Its length.
        bytes: u64,
        /// The limit.
        max: usize,
    },
    /// The arguments together over [`Limits::command_bytes_max`].
    CommandTooLarge {
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooManyArgs { count, max } => {
                write!(f, "ERR too many arguments: {count} (at most {max})")
            }
            Refusal::ArgTooLarge { bytes, max } => write!(
                f,
                "ERR argument of {bytes} bytes is over the limit of {max} bytes"
            ),
            Refusal::CommandTooLarge { max } => {
                write!(f, "ERR command over the limit of {max} bytes in all")
            }
        }
    }
}

/// The framing is lost: the connection answers with this text as an error and closes, as
/// Redis does. The texts are Redis's own, so that tools recognise them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fatal {
    /// An array element that is not a bulk string.
    Expected {
        /// The byte found where `$` belongs.
        got: u8,
    },
    /// A malformed or too large array count.
    InvalidMultibulkLength,
    /// A malformed, negative or too large bulk length.
    InvalidBulkLength,
    /// A header line without its CRLF within [`HEADER_LINE_BYTES_MAX`] bytes.
    HeaderTooLong,
    /// An inline command longer than [`Limits::inline_bytes_max`].
    InlineTooLong,
    /// A bulk string not followed by CRLF.
    BadBulkEnd,
    /// An inline command with a quote that does not close (or closes mid-word).
    UnbalancedQuotes,
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::Expected { got } => write!(
                f,
                "ERR Protocol error: expected '$', got '{}'",
                char::from(*got).escape_default()
            ),
            Fatal::InvalidMultibulkLength => {
                write!(f, "ERR Protocol error: invalid multibulk length")
            }
            Fatal::InvalidBulkLength => write!(f, "ERR Protocol error: invalid bulk length"),
            Fatal::HeaderTooLong => write!(f, "ERR Protocol error: too big count string"),
            Fatal::InlineTooLong => write!(f, "ERR Protocol error: too big inline request"),
            Fatal::BadBulkEnd => write!(f, "ERR Protocol error: bulk string not ended by CRLF"),
            Fatal::UnbalancedQuotes => {
                write!(f, "ERR Protocol error: unbalanced quotes in request")
            }
        }
    }
}

/// What [`Parser::advance`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A command to run.
    Command(Command),
    /// A command read whole but refused; answer with the refusal and go on.
    Refused(Refusal),
}

/// The incremental parser: feed it a connection's bytes with [`Parser::advance`].
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Between commands.
    Idle,
    /// Inside an array of bulk strings.
    Array(Array),
}

#[derive(Debug)]
struct Array {
    /// Elements not yet begun.
    remaining: u64,
    /// The arguments kept so far (dropped once the command is refused).
    args: Vec<Vec<u8>>,
    /// Their bytes together.
    bytes: usize,
    /// Set once the command breaks a limit; the rest of it is then skipped.
    refusal: Option<Refusal>,
    /// The bulk body being read, if any.
    body: Option<Body>,
}

#[derive(Debug)]
struct Body {
    /// Data bytes still to come.
    data_left: usize,
    /// Terminator bytes still to come (2 for CRLF, then 1 for LF).
    end_left: u8,
    /// Whether the bytes go into the last argument (or are skipped).
    keep: bool,
}

/// A line's content (without CR LF) and the bytes it took, or `None` if its end has not
/// arrived.
fn line(input: &[u8], max: usize) -> Option<(&[u8], usize)> {
    let window = &input[..input.len().min(max)];
    let at = window.iter().position(|&b| b == b'\n')?;
    let content = &window[..at];
    let content = content.strip_suffix(b"\r").unwrap_or(content);
    Some((content, at + 1))
}

/// Splits an inline command into words as Redis does (`sdssplitargs`): words part at
/// whitespace; "double quotes" take the escapes `\n \r \t \b \a \\ \"` and `\xHH`;
/// 'single quotes' take `\'`. `None` if a quote does not close, or closes mid-word.
fn split_inline(text: &[u8]) -> Option<Vec<Vec<u8>>> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < text.len() && text[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == text.len() {
            return Some(args);
        }
        let mut word = Vec::new();
        // 0: bare, b'"' or b'\'': inside those quotes.
        let mut quote = 0u8;
        loop {
            let Some(&c) = text.get(i) else {
                // The line ended: fine for a bare word, not inside quotes.
                return (quote == 0).then(|| {
                    args.push(word);
                    args
                });
            };
            match quote {
                0 if c.is_ascii_whitespace() => break,
                0 if c == b'"' || c == b'\'' => quote = c,
                0 => word.push(c),
                q if c == q => {
                    // A closing quote must end the word.
                    if text.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                b'"' => match (c, text.get(i + 1).copied()) {
                    (b'\\', Some(b'x')) => {
                        match (
                            text.get(i + 2).and_then(|&b| hex(b)),
                            text.get(i + 3).and_then(|&b| hex(b)),
                        ) {
                            (Some(h), Some(l)) => {
                                word.push(h * 16 + l);
                                i += 3;
                            }
                            _ => {
                                word.push(b'x');
                                i += 1;
                            }
                        }
                    }
                    (b'\\', Some(e)) => {
                        word.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                        i += 1;
                    }
                    _ => word.push(c),
                },
                _ => match (c, text.get(i + 1).copied()) {
                    (b'\\', Some(b'\'')) => {
                        word.push(b'\'');
                        i += 1;
                    }
                    _ => word.push(c),
                },
            }
            i += 1;
        }
        args.push(word);
    }
}

/// A strict decimal integer, as Redis reads counts and lengths.
fn integer(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0i64, |v, d| v * 10 + i64::from(d - b'0'));
    Some(if negative { -value } else { value })
}

/// The step [`Parser::advance`] returns: bytes consumed and, if one was completed, an event.
pub type Step = (usize, Option<Result<Event, Fatal>>);

impl Parser {
    /// A parser between commands.
    pub fn new(limits: Limits) -> Parser {
        debug_assert!(limits.args_max >= 1 && limits.arg_bytes_max <= limits.command_bytes_max);
        Parser {
            limits,
            state: State::Idle,
        }
    }

    /// The limits it keeps.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether it stands between commands (nothing half-read).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Consumes bytes from the front of `input` until one event is complete or the input runs
    /// out. Returns how many bytes it consumed (the caller drops them) and the event, if any;
    /// `None` means "send more bytes". The unconsumed tail is at most a partial line, so the
    /// caller's buffer stays small whatever the command's size. After a [`Fatal`], the
    /// connection must close: the parser's state is undefined.
    pub fn advance(&mut self, input: &[u8]) -> Step {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match &mut self.state {
                State::Idle => {
                    if rest.is_empty() {
                        return (at, None);
                    }
                    if rest[0] == b'*' {
                        let Some((text, used)) = line(rest, HEADER_LINE_BYTES_MAX) else {
                            if rest.len() >= HEADER_LINE_BYTES_MAX {
                                return (at, Some(Err(Fatal::HeaderTooLong)));
                            }
                            return (at, None);
                        };
                        let count = match integer(&text[1..]) {
                            Some(n) if n as u64 <= ARRAY_COUNT_PROTOCOL_MAX || n < 0 => n,
                            _ => return (at, Some(Err(Fatal::InvalidMultibulkLength))),
                        };
                        at += used;
                        if count <= 0 {
                            // An empty or null array is no command; Redis skips it too.
                            continue;
                        }
                        let count = count as u64;
                        let refusal =
                            (count > self.limits.args_max as u64).then_some(Refusal::TooManyArgs {
                                count,
                                max: self.limits.args_max,
                            });
                        let capacity = if refusal.is_some() { 0 } else { count as usize };
                        self.state = State::Array(Array {
                            remaining: count,
                            args: Vec::with_capacity(capacity),
                            bytes: 0,
                            refusal,
                            body: None,
                        });
                    } else {
                        let max = self.limits.inline_bytes_max;
                        let Some((text, used)) = line(rest, max) else {
                            if rest.len() >= max {
                                return (at, Some(Err(Fatal::InlineTooLong)));
                            }
                            return (at, None);
                        };
                        at += used;
                        let Some(args) = split_inline(text) else {
                            return (at, Some(Err(Fatal::UnbalancedQuotes)));
                        };
                        if args.is_empty() {
                            continue;
                        }
                        if args.len() > self.limits.args_max {
                            let refusal = Refusal::TooManyArgs {
                                count: args.len() as u64,
                                max: self.limits.args_max,
                            };
                            return (at, Some(Ok(Event::Refused(refusal))));
                        }
                        // An inline line is shorter than `inline_bytes_max`; its words fit
                        // the argument limits only if those are not smaller.
                        if let Some(long) =
                            args.iter().find(|a| a.len() > self.limits.arg_bytes_max)
                        {
                            let refusal = Refusal::ArgTooLarge {
                                bytes: long.len() as u64,
                                max: self.limits.arg_bytes_max,
                            };
                            return (at, Some(Ok(Event::Refused(refusal))));
                        }
                        if args.iter().map(Vec::len).sum::<usize>() > self.limits.command_bytes_max
                        {
                            let refusal = Refusal::CommandTooLarge {
                                max: self.limits.command_bytes_max,
                            };
                            return (at, Some(Ok(Event::Refused(refusal))));
                        }
                        return (at, Some(Ok(Event::Command(Command { args }))));
                    }
                }
                State::Array(array) => {
                    if let Some(body) = &mut array.body {
                        if body.data_left > 0 {
                            let take = body.data_left.min(rest.len());
                            if take == 0 {
                                return (at, None);
                            }
                            if body.keep {
                                let arg =
                                    array.args.last_mut().expect("a kept body has its argument");
                                arg.extend_from_slice(&rest[..take]);
                            }
                            body.data_left -= take;
                            at += take;
                            continue;
                        }
                        if rest.is_empty() {
                            return (at, None);
                        }
                        let want = if body.end_left == 2 { b'\r' } else { b'\n' };
                        if rest[0] != want {
                            return (at, Some(Err(Fatal::BadBulkEnd)));
                        }
                        at += 1;
                        body.end_left -= 1;
                        if body.end_left == 0 {
                            array.body = None;
                            array.remaining -= 1;
                        }
                        continue;
                    }
                    if array.remaining == 0 {
                        let State::Array(done) = std::mem::replace(&mut self.state, State::Idle)
                        else {
                            unreachable!("matched as an array just above")
                        };
                        let event = match done.refusal {
                            Some(refusal) => Event::Refused(refusal),
                            None => {
                                debug_assert!(done.bytes <= self.limits.command_bytes_max);
                                Event::Command(Command { args: done.args })
                            }
                        };
                        return (at, Some(Ok(event)));
                    }
                    if rest.is_empty() {
                        return (at, None);
                    }
                    if rest[0] != b'$' {
                        return (at, Some(Err(Fatal::Expected { got: rest[0] })));
                    }
                    let Some((text, used)) = line(rest, HEADER_LINE_BYTES_MAX) else {
                        if rest.len() >= HEADER_LINE_BYTES_MAX {
                            return (at, Some(Err(Fatal::HeaderTooLong)));
                        }
                        return (at, None);
                    };
                    let len = match integer(&text[1..]) {
                        Some(n) if n >= 0 && n as u64 <= BULK_BYTES_PROTOCOL_MAX => n as u64,
                        _ => return (at, Some(Err(Fatal::InvalidBulkLength))),
                    };
                    at += used;
                    if array.refusal.is_none() {
                        if len > self.limits.arg_bytes_max as u64 {
                            array.refusal = Some(Refusal::ArgTooLarge {
                                bytes: len,
                                max: self.limits.arg_bytes_max,
                            });
                        } else if array.bytes + len as usize > self.limits.command_bytes_max {
                            array.refusal = Some(Refusal::CommandTooLarge {
                                max: self.limits.command_bytes_max,
                            });
                        }
                        if array.refusal.is_some() {
                            // Free what was kept: the command will not run.
                            array.args = Vec::new();
                        }
                    }
                    let keep = array.refusal.is_none();
                    if keep {
                        array.bytes += len as usize;
                        array.args.push(Vec::with_capacity(len as usize));
                    }
                    array.body = Some(Body {
                        data_left: len as usize,
                        end_left: 2,
                        keep,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        args_max: 4,
        arg_bytes_max: 8,
        command_bytes_max: 12,
        inline_bytes_max: 32,
    };

    fn all(input: &[u8]) -> (Vec<Result<Event, Fatal>>, usize) {
        let mut parser = Parser::new(LIMITS);
        let mut at = 0;
        let mut events = Vec::new();
        loop {
            let (used, event) = parser.advance(&input[at..]);
            at += used;
            match event {
                None => return (events, at),
                Some(Err(e)) => {
                    events.push(Err(e));
                    return (events, at);
                }
                Some(Ok(e)) => events.push(Ok(e)),
            }
        }
    }

    fn command(args: &[&str]) -> Result<Event, Fatal> {
        Ok(Event::Command(Command {
            args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        }))
    }

    #[test]
    fn arrays_and_inline_commands_parse() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n  set a  b \n*0\r\n\r\n";
        let (events, used) = all(input);
        assert_eq!(
            events,
            vec![
                command(&["GET", "k"]),
                command(&["PING"]),
                command(&["set", "a", "b"])
            ]
        );
        assert_eq!(used, input.len(), "empty lines and arrays are consumed");
    }

    #[test]
    fn an_oversized_argument_is_refused_and_the_stream_goes_on() {
        let (events, _) = all(b"*2\r\n$3\r\nSET\r\n$9\r\n123456789\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            events,
            vec![
                Ok(Event::Refused(Refusal::ArgTooLarge { bytes: 9, max: 8 })),
                command(&["PING"])
            ]
        );
    }

    #[test]
    fn too_many_or_too_large_in_all_is_refused() {
        let (events, _) = all(b"*5\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$1\r\ne\r\n");
        assert_eq!(
            events,
            vec![Ok(Event::Refused(Refusal::TooManyArgs {
                count: 5,
                max: 4
            }))]
        );
        let (events, _) = all(b"*2\r\n$8\r\n12345678\r\n$5\r\n12345\r\n");
        assert_eq!(
            events,
            vec![Ok(Event::Refused(Refusal::CommandTooLarge { max: 12 }))]
        );
    }

    #[test]
    fn inline_commands_take_redis_quotes() {
        let (events, _) = all(b"SET k \"a b\\n\\x41\"\r\nSET 'it\\'s' ''\r\n");
        assert_eq!(
            events,
            vec![
                command(&["SET", "k", "a b\nA"]),
                command(&["SET", "it's", ""])
            ]
        );
        assert_eq!(all(b"SET \"open\r\n").0, vec![Err(Fatal::UnbalancedQuotes)]);
        assert_eq!(all(b"SET \"a\"b\r\n").0, vec![Err(Fatal::UnbalancedQuotes)]);
        assert_eq!(all(b"SET 'a'b\r\n").0, vec![Err(Fatal::UnbalancedQuotes)]);
    }

    #[test]
    fn lost_framing_is_fatal() {
        assert_eq!(
            all(b"*1\r\n:3\r\n").0,
            vec![Err(Fatal::Expected { got: b':' })]
        );
        assert_eq!(all(b"*x\r\n").0, vec![Err(Fatal::InvalidMultibulkLength)]);
        assert_eq!(all(b"*1\r\n$-2\r\n").0, vec![Err(Fatal::InvalidBulkLength)]);
        assert_eq!(all(b"*1\r\n$1\r\nab\r\n").0, vec![Err(Fatal::BadBulkEnd)]);
        assert_eq!(all(&[b'x'; 40]).0, vec![Err(Fatal::InlineTooLong)]);
        assert_eq!(all(&[b'*'; 40]).0, vec![Err(Fatal::HeaderTooLong)]);
    }

    #[test]
    fn a_partial_command_waits_and_keeps_little() {
        let mut parser = Parser::new(LIMITS);
        let (used, event) = parser.advance(b"*2\r\n$3\r\nGE");
        assert_eq!((used, event), (10, None));
        assert!(!parser.is_idle());
        let (used, event) = parser.advance(b"T\r\n$1\r");
        assert_eq!((used, event), (3, None), "a half header line waits");
        let (used, event) = parser.advance(b"$1\r\nk\r\n");
        assert_eq!(used, 7);
        assert_eq!(event, Some(command(&["GET", "k"])));
        assert!(parser.is_idle());
    }
}
