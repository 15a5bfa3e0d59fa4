//! From a parsed command to what to do: check its name, arity and options, resolve its
//! table from the session, and either answer at once (PING, SELECT, CONFIG GET, ...) or
//! describe the item operation to run ([`Op`]). No I/O: everything here is a function of
//! the command and the session, tested without a server.

use super::info;
use super::reply;

/// A connection's state that commands change.
#[derive(Debug, Clone)]
pub struct Session {
    /// The index of the selected table in the router's Redis table list.
    pub table: usize,
    /// The name given with `CLIENT SETNAME` (or `HELLO ... SETNAME`).
    pub name: Option<Vec<u8>>,
    /// A number for `CLIENT ID`, unique on this core.
    pub id: u64,
    /// The protocol version replies are written in: RESP2 until `HELLO 3`.
    pub version: resp::encode::Version,
}

/// What a command asks of the items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// An answer known without touching an item (already encoded).
    Reply(Vec<u8>),
    /// Answer `+OK` and close the connection.
    Quit,
    /// GET.
    Get {
        /// The table.
        table: String,
        /// The key.
        key: Vec<u8>,
    },
    /// SET, with its condition.
    Set {
        /// The table.
        table: String,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// NX, XX or none.
        condition: proto::Condition,
    },
    /// DEL: how many of the keys existed.
    Del {
        /// The table.
        table: String,
        /// The keys.
        keys: Vec<Vec<u8>>,
    },
    /// EXISTS: how many of the keys exist (a key named twice counts twice).
    Exists {
        /// The table.
        table: String,
        /// The keys.
        keys: Vec<Vec<u8>>,
    },
    /// MGET.
    MGet {
        /// The table.
        table: String,
        /// The keys.
        keys: Vec<Vec<u8>>,
    },
    /// MSET.
    MSet {
        /// The table.
        table: String,
        /// The keys and values, in the command's order.
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// INCR, DECR, INCRBY, DECRBY: add `delta` to the integer the item holds.
    IncrBy {
        /// The table.
        table: String,
        /// The key.
        key: Vec<u8>,
        /// What to add.
        delta: i64,
    },
    /// TYPE: "string" or "none".
    Type {
        /// The table.
        table: String,
        /// The key.
        key: Vec<u8>,
    },
}

impl Op {
    /// The keys it reads and the keys it writes, for keeping a pipeline's order: two
    /// commands run at once only if neither writes what the other touches.
    pub fn keys(&self) -> (&str, Vec<&[u8]>, Vec<&[u8]>) {
        match self {
            Op::Reply(_) | Op::Quit => ("", vec![], vec![]),
            Op::Get { table, key } | Op::Type { table, key } => (table, vec![key], vec![]),
            Op::Exists { table, keys } | Op::MGet { table, keys } => {
                (table, keys.iter().map(Vec::as_slice).collect(), vec![])
            }
            Op::Set { table, key, .. } | Op::IncrBy { table, key, .. } => {
                (table, vec![], vec![key])
            }
            Op::Del { table, keys } => (table, vec![], keys.iter().map(Vec::as_slice).collect()),
            Op::MSet { table, pairs } => (
                table,
                vec![],
                pairs.iter().map(|(k, _)| k.as_slice()).collect(),
            ),
        }
    }
}

/// How many arguments a command takes, its name included: Redis's convention, where a
/// negative number means "at least".
fn arity_ok(arity: i32, given: usize) -> bool {
    if arity >= 0 {
        given == arity as usize
    } else {
        given >= arity.unsigned_abs() as usize
    }
}

fn upper(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_uppercase()
}

fn err(text: &str) -> Op {
    Op::Reply(reply::error(text))
}

/// Parses a Redis integer argument as Redis does (no spaces, no plus sign, 64-bit).
pub fn parse_i64(arg: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(arg).ok()?;
    if text.is_empty() || text.starts_with('+') || text.len() > 20 {
        return None;
    }
    text.parse().ok()
}

/// Turns one command into what to do. `tables` is the router's Redis table list.
pub fn plan(args: Vec<Vec<u8>>, session: &mut Session, tables: &[String]) -> Op {
    debug_assert!(!args.is_empty(), "the parser yields no empty command");
    let name = upper(&args[0]);
    let Some(spec) = info::COMMANDS.iter().find(|c| c.name == name) else {
        return err(&unknown_command(&args));
    };
    if !arity_ok(spec.arity, args.len()) {
        return err(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name.to_ascii_lowercase()
        ));
    }
    let table = || tables[session.table].clone();
    let mut args = args.into_iter();
    args.next();
    let mut rest: Vec<Vec<u8>> = args.collect();
    match spec.name {
        "PING" => match rest.pop() {
            None => Op::Reply(reply::simple("PONG")),
            Some(message) => Op::Reply(reply::bulk(&message)),
        },
        "ECHO" => Op::Reply(reply::bulk(&rest[0])),
        "QUIT" => Op::Quit,
        "SELECT" => match parse_i64(&rest[0]) {
            Some(n) if n >= 0 && (n as u64) < tables.len() as u64 => {
                session.table = n as usize;
                Op::Reply(reply::simple("OK"))
            }
            Some(_) => err("ERR DB index is out of range"),
            None => err("ERR value is not an integer or out of range"),
        },
        "GET" => Op::Get {
            table: table(),
            key: rest.swap_remove(0),
        },
        "TYPE" => Op::Type {
            table: table(),
            key: rest.swap_remove(0),
        },
        "SET" => plan_set(rest, table()),
        "DEL" => Op::Del {
            table: table(),
            keys: rest,
        },
        "EXISTS" => Op::Exists {
            table: table(),
            keys: rest,
        },
        "MGET" => Op::MGet {
            table: table(),
            keys: rest,
        },
        "MSET" => {
            if rest.len() % 2 != 0 {
                return err("ERR wrong number of arguments for 'mset' command");
            }
            let mut pairs = Vec::with_capacity(rest.len() / 2);
            let mut it = rest.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            Op::MSet {
                table: table(),
                pairs,
            }
        }
        "INCR" | "DECR" => Op::IncrBy {
            table: table(),
            key: rest.swap_remove(0),
            delta: if spec.name == "INCR" { 1 } else { -1 },
        },
        "INCRBY" | "DECRBY" => {
            let by = match parse_i64(&rest[1]) {
                Some(v) => v,
                None => return err("ERR value is not an integer or out of range"),
            };
            let delta = if spec.name == "INCRBY" {
                Some(by)
            } else {
                by.checked_neg()
            };
            match delta {
                Some(delta) => Op::IncrBy {
                    table: table(),
                    key: rest.swap_remove(0),
                    delta,
                },
                None => err("ERR decrement would overflow"),
            }
        }
        "AUTH" => err(
            "ERR AUTH is not supported: percore's Redis port has no users or passwords \
             (serve it on a trusted network only)",
        ),
        "HELLO" => info::hello(&rest, session),
        "CLIENT" => info::client(&rest, session),
        "CONFIG" => info::config(&rest, tables.len(), session.version),
        "COMMAND" => info::command(&rest, session.version),
        "INFO" => Op::Reply(info::info(tables, session.table)),
        other => unreachable!("{other} is in the command table but has no plan"),
    }
}

fn plan_set(mut rest: Vec<Vec<u8>>, table: String) -> Op {
    let options: Vec<String> = rest.drain(2..).map(|o| upper(&o)).collect();
    let mut condition = proto::Condition::None;
    let mut i = 0;
    while i < options.len() {
        match options[i].as_str() {
            "NX" | "XX" => {
                if condition != proto::Condition::None {
                    return err("ERR syntax error");
                }
                condition = if options[i] == "NX" {
                    proto::Condition::IfAbsent
                } else {
                    proto::Condition::IfPresent
                };
            }
            "EX" | "PX" | "EXAT" | "PXAT" => {
                return err(&format!(
                    "ERR SET {} is not supported: percore items do not expire (yet)",
                    options[i]
                ))
            }
            // Nothing expires, so there is no time to live to keep: a no-op, as in Redis
            // on a key without one.
            "KEEPTTL" => {}
            "GET" => {
                return err("ERR SET ... GET is not supported: use GET, then SET with XX or NX")
            }
            _ => return err("ERR syntax error"),
        }
        i += 1;
    }
    let value = rest.pop().expect("arity checked: SET key value");
    let key = rest.pop().expect("arity checked: SET key value");
    Op::Set {
        table,
        key,
        value,
        condition,
    }
}

/// Redis 7's text for an unknown command, with the first arguments quoted.
fn unknown_command(args: &[Vec<u8>]) -> String {
    /// Redis shows at most this many bytes of the arguments.
    const SHOWN_BYTES_MAX: usize = 128;
    let mut shown = String::new();
    for a in &args[1..] {
        if shown.len() >= SHOWN_BYTES_MAX {
            break;
        }
        let text = String::from_utf8_lossy(a);
        let room = SHOWN_BYTES_MAX - shown.len();
        let cut: String = text.chars().take(room).collect();
        shown.push_str(&format!("'{cut}' "));
    }
    let name: String = String::from_utf8_lossy(&args[0])
        .chars()
        .take(SHOWN_BYTES_MAX)
        .collect();
    format!("ERR unknown command '{name}', with args beginning with: {shown}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Vec<String> {
        vec!["usertable".into(), "second".into()]
    }

    fn run(words: &[&str], session: &mut Session) -> Op {
        let args = words.iter().map(|w| w.as_bytes().to_vec()).collect();
        plan(args, session, &tables())
    }

    fn session() -> Session {
        Session {
            table: 0,
            name: None,
            id: 1,
            version: resp::encode::Version::Two,
        }
    }

    fn text(op: &Op) -> String {
        match op {
            Op::Reply(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn names_are_case_blind_and_arity_is_checked() {
        let mut s = session();
        assert_eq!(text(&run(&["ping"], &mut s)), "+PONG\r\n");
        assert_eq!(text(&run(&["PiNg", "hi"], &mut s)), "$2\r\nhi\r\n");
        assert_eq!(
            text(&run(&["get"], &mut s)),
            "-ERR wrong number of arguments for 'get' command\r\n"
        );
        assert_eq!(
            text(&run(&["mset", "a", "1", "b"], &mut s)),
            "-ERR wrong number of arguments for 'mset' command\r\n"
        );
        assert_eq!(
            text(&run(&["FLUSHALL", "x", "y"], &mut s)),
            "-ERR unknown command 'FLUSHALL', with args beginning with: 'x' 'y' \r\n"
        );
    }

    #[test]
    fn select_picks_a_table_and_the_next_commands_use_it() {
        let mut s = session();
        assert_eq!(text(&run(&["SELECT", "1"], &mut s)), "+OK\r\n");
        assert_eq!(
            run(&["GET", "k"], &mut s),
            Op::Get {
                table: "second".into(),
                key: b"k".to_vec()
            }
        );
        assert_eq!(
            text(&run(&["SELECT", "2"], &mut s)),
            "-ERR DB index is out of range\r\n"
        );
        assert_eq!(
            text(&run(&["SELECT", "x"], &mut s)),
            "-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(s.table, 1);
    }

    #[test]
    fn set_options() {
        let mut s = session();
        let set = |cond| Op::Set {
            table: "usertable".into(),
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            condition: cond,
        };
        assert_eq!(run(&["SET", "k", "v"], &mut s), set(proto::Condition::None));
        assert_eq!(
            run(&["set", "k", "v", "nx"], &mut s),
            set(proto::Condition::IfAbsent)
        );
        assert_eq!(
            run(&["SET", "k", "v", "XX", "KEEPTTL"], &mut s),
            set(proto::Condition::IfPresent)
        );
        assert!(text(&run(&["SET", "k", "v", "NX", "XX"], &mut s)).starts_with("-ERR syntax"));
        assert!(text(&run(&["SET", "k", "v", "EX", "10"], &mut s)).contains("do not expire"));
        assert!(text(&run(&["SET", "k", "v", "PX", "10"], &mut s)).contains("do not expire"));
        assert!(text(&run(&["SET", "k", "v", "BOGUS"], &mut s)).starts_with("-ERR syntax"));
    }

    #[test]
    fn counters_parse_their_deltas() {
        let mut s = session();
        let incr = |delta| Op::IncrBy {
            table: "usertable".into(),
            key: b"n".to_vec(),
            delta,
        };
        assert_eq!(run(&["INCR", "n"], &mut s), incr(1));
        assert_eq!(run(&["DECR", "n"], &mut s), incr(-1));
        assert_eq!(run(&["INCRBY", "n", "-5"], &mut s), incr(-5));
        assert_eq!(run(&["DECRBY", "n", "5"], &mut s), incr(-5));
        assert!(text(&run(&["INCRBY", "n", "1.5"], &mut s)).contains("not an integer"));
        assert!(text(&run(&["INCRBY", "n", "+5"], &mut s)).contains("not an integer"));
        let min = i64::MIN.to_string();
        assert!(text(&run(&["DECRBY", "n", &min], &mut s)).contains("overflow"));
    }

    #[test]
    fn keys_say_what_conflicts() {
        let mut s = session();
        let op = run(&["MSET", "a", "1", "b", "2"], &mut s);
        let (_, reads, writes) = op.keys();
        assert!(reads.is_empty());
        assert_eq!(writes, vec![b"a".as_slice(), b"b".as_slice()]);
    }
}
