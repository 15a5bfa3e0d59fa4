//! What the Redis port says about itself: the command table, and the answers to what tools
//! send when they connect (HELLO, CLIENT, CONFIG GET, COMMAND, INFO).

use resp::encode::Version;

use super::plan::{parse_i64, Op, Session};
use super::reply;

/// One command the port serves: its name, its arity (Redis's convention: negative means
/// "at least"), its flags, its key positions and what it does, for COMMAND and COMMAND DOCS.
pub struct CommandSpec {
    /// Upper case.
    pub name: &'static str,
    /// Arguments with the name; negative: at least that many.
    pub arity: i32,
    /// Redis's command flags.
    pub flags: &'static [&'static str],
    /// First key's position, last key's (-1: the last argument), step between keys.
    pub keys: (i32, i32, i32),
    /// Redis's command group.
    pub group: &'static str,
    /// One line on what it does here.
    pub summary: &'static str,
}

const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
    group: &'static str,
    summary: &'static str,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        keys,
        group,
        summary,
    }
}

/// Every command the port serves; anything else is an unknown command.
pub const COMMANDS: &[CommandSpec] = &[
    spec(
        "PING",
        -1,
        &["fast"],
        (0, 0, 0),
        "connection",
        "Answers PONG, or the message.",
    ),
    spec(
        "ECHO",
        2,
        &["fast"],
        (0, 0, 0),
        "connection",
        "Answers the message.",
    ),
    spec(
        "QUIT",
        1,
        &["fast"],
        (0, 0, 0),
        "connection",
        "Closes the connection.",
    ),
    spec(
        "SELECT",
        2,
        &["fast"],
        (0, 0, 0),
        "connection",
        "Picks the n-th table of the router's redis_tables.",
    ),
    spec(
        "AUTH",
        -2,
        &["fast"],
        (0, 0, 0),
        "connection",
        "Refused: the port has no users.",
    ),
    spec(
        "HELLO",
        -1,
        &["fast"],
        (0, 0, 0),
        "connection",
        "Switches to RESP2 or RESP3; answers server facts.",
    ),
    spec(
        "CLIENT",
        -2,
        &[],
        (0, 0, 0),
        "connection",
        "SETINFO, SETNAME, GETNAME, ID.",
    ),
    spec(
        "GET",
        2,
        &["readonly", "fast"],
        (1, 1, 1),
        "string",
        "The item's bytes (a strongly consistent read).",
    ),
    spec(
        "SET",
        -3,
        &["write"],
        (1, 1, 1),
        "string",
        "Writes the item, durably, with NX or XX as a condition.",
    ),
    spec(
        "DEL",
        -2,
        &["write"],
        (1, -1, 1),
        "keyspace",
        "Deletes the items; answers how many existed.",
    ),
    spec(
        "EXISTS",
        -2,
        &["readonly", "fast"],
        (1, -1, 1),
        "keyspace",
        "How many of the keys exist.",
    ),
    spec(
        "TYPE",
        2,
        &["readonly", "fast"],
        (1, 1, 1),
        "keyspace",
        "string, or none.",
    ),
    spec(
        "MGET",
        -2,
        &["readonly", "fast"],
        (1, -1, 1),
        "string",
        "The items' bytes, in the keys' order.",
    ),
    spec(
        "MSET",
        -3,
        &["write"],
        (1, -1, 2),
        "string",
        "Writes the items (atomic per partition, not across partitions).",
    ),
    spec(
        "INCR",
        2,
        &["write", "fast"],
        (1, 1, 1),
        "string",
        "Adds 1: a conditional write on the item's version, retried.",
    ),
    spec(
        "DECR",
        2,
        &["write", "fast"],
        (1, 1, 1),
        "string",
        "Subtracts 1, as INCR.",
    ),
    spec(
        "INCRBY",
        3,
        &["write", "fast"],
        (1, 1, 1),
        "string",
        "Adds n, as INCR.",
    ),
    spec(
        "DECRBY",
        3,
        &["write", "fast"],
        (1, 1, 1),
        "string",
        "Subtracts n, as INCR.",
    ),
    spec(
        "CONFIG",
        -2,
        &[],
        (0, 0, 0),
        "server",
        "GET of save, appendonly, appendfsync, databases.",
    ),
    spec(
        "COMMAND",
        -1,
        &[],
        (0, 0, 0),
        "server",
        "This table: COMMAND, COUNT, INFO, DOCS.",
    ),
    spec("INFO", -1, &[], (0, 0, 0), "server", "Server facts."),
];

/// The Redis version the port answers like (RESP2 and the commands of Redis 7.0), for tools
/// that check it before using a command.
pub const REDIS_VERSION_COMPATIBLE: &str = "7.0.0";

fn push_bulk(out: &mut Vec<u8>, text: &str) {
    resp::encode::bulk(out, text.as_bytes());
}

/// HELLO [protover [AUTH user pass] [SETNAME name]]. Protocol 2 or 3 switches the
/// connection to it (RESP3 only changes how nulls and maps are written, for the replies this
/// port sends); any other version gets Redis's NOPROTO, on which clients fall back.
pub fn hello(args: &[Vec<u8>], session: &mut Session) -> Op {
    let mut version = session.version;
    if let Some(asked) = args.first() {
        match parse_i64(asked) {
            Some(2) => version = Version::Two,
            Some(3) => version = Version::Three,
            Some(_) => {
                return Op::Reply(reply::error(
                    "NOPROTO sorry, this protocol version is not supported",
                ))
            }
            None => {
                return Op::Reply(reply::error(
                    "ERR Protocol version is not an integer or out of range",
                ))
            }
        }
    }
    let mut i = 1;
    while i < args.len() {
        let option = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
        match option.as_str() {
            "AUTH" => {
                return Op::Reply(reply::error(
                    "ERR AUTH is not supported: percore's Redis port has no users or passwords",
                ))
            }
            "SETNAME" if i + 1 < args.len() => {
                session.name = Some(args[i + 1].clone());
                i += 2;
            }
            _ => {
                return Op::Reply(reply::error(&format!(
                    "ERR Syntax error in HELLO option '{option}'"
                )))
            }
        }
    }
    session.version = version;
    let mut out = Vec::new();
    resp::encode::map(&mut out, 8, version);
    for (k, v) in [
        ("server", "percore"),
        ("version", REDIS_VERSION_COMPATIBLE),
        ("percore_version", env!("CARGO_PKG_VERSION")),
    ] {
        push_bulk(&mut out, k);
        push_bulk(&mut out, v);
    }
    push_bulk(&mut out, "proto");
    resp::encode::integer(&mut out, if version == Version::Three { 3 } else { 2 });
    push_bulk(&mut out, "id");
    resp::encode::integer(&mut out, session.id as i64);
    for (k, v) in [("mode", "standalone"), ("role", "master")] {
        push_bulk(&mut out, k);
        push_bulk(&mut out, v);
    }
    // "modules": none.
    push_bulk(&mut out, "modules");
    resp::encode::array(&mut out, 0);
    Op::Reply(out)
}

/// CLIENT SETINFO | SETNAME | GETNAME | ID.
pub fn client(args: &[Vec<u8>], session: &mut Session) -> Op {
    let sub = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let wrong = || {
        Op::Reply(reply::error(&format!(
            "ERR wrong number of arguments for 'client|{}' command",
            sub.to_ascii_lowercase()
        )))
    };
    match sub.as_str() {
        // Library name and version: accepted, as Redis does, and not kept.
        "SETINFO" if args.len() == 3 => Op::Reply(reply::simple("OK")),
        "SETNAME" if args.len() == 2 => {
            if args[1].iter().any(|b| *b <= b' ' || *b > b'~') {
                return Op::Reply(reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                ));
            }
            session.name = (!args[1].is_empty()).then(|| args[1].clone());
            Op::Reply(reply::simple("OK"))
        }
        "GETNAME" if args.len() == 1 => Op::Reply(match &session.name {
            Some(n) => reply::bulk(n),
            None => reply::null(session.version),
        }),
        "ID" if args.len() == 1 => Op::Reply(reply::integer(session.id as i64)),
        "SETINFO" | "SETNAME" | "GETNAME" | "ID" => wrong(),
        _ => Op::Reply(reply::error(&format!(
            "ERR unknown subcommand '{sub}'. Try CLIENT SETINFO, SETNAME, GETNAME or ID."
        ))),
    }
}

/// Redis's glob subset for CONFIG GET: `*`, `?` and literal bytes, case-blind.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.split_first(), text.split_first()) {
        (None, None) => true,
        (Some((b'*', p)), _) => glob(p, text) || (!text.is_empty() && glob(pattern, &text[1..])),
        (Some((b'?', p)), Some((_, t))) => glob(p, t),
        (Some((pc, p)), Some((tc, t))) if pc.eq_ignore_ascii_case(tc) => glob(p, t),
        _ => false,
    }
}

/// CONFIG GET parameter [parameter ...]; the rest is refused.
pub fn config(args: &[Vec<u8>], tables: usize, version: Version) -> Op {
    let sub = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    if sub != "GET" {
        return Op::Reply(reply::error(&format!(
            "ERR CONFIG {sub} is not supported: percore is configured by its own file and flags"
        )));
    }
    if args.len() < 2 {
        return Op::Reply(reply::error(
            "ERR wrong number of arguments for 'config|get' command",
        ));
    }
    let databases = tables.to_string();
    // What a tool asks to learn how durable and how big the server is. Every OK is durable
    // on disk before it is sent: "appendfsync always" in Redis's terms; there are no RDB
    // snapshots to configure.
    let known: [(&str, &str); 4] = [
        ("save", ""),
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("databases", &databases),
    ];
    let found: Vec<&(&str, &str)> = known
        .iter()
        .filter(|(name, _)| {
            args[1..]
                .iter()
                .any(|pattern| glob(pattern, name.as_bytes()))
        })
        .collect();
    let mut out = Vec::new();
    resp::encode::map(&mut out, found.len(), version);
    for (name, value) in found {
        push_bulk(&mut out, name);
        push_bulk(&mut out, value);
    }
    Op::Reply(out)
}

fn command_entry(out: &mut Vec<u8>, c: &CommandSpec) {
    resp::encode::array(out, 10);
    push_bulk(out, &c.name.to_ascii_lowercase());
    resp::encode::integer(out, c.arity.into());
    resp::encode::array(out, c.flags.len());
    for f in c.flags {
        resp::encode::simple(out, f);
    }
    resp::encode::integer(out, c.keys.0.into());
    resp::encode::integer(out, c.keys.1.into());
    resp::encode::integer(out, c.keys.2.into());
    // ACL categories, tips, key specifications, subcommands: none described.
    for _ in 0..4 {
        resp::encode::array(out, 0);
    }
}

fn find(name: &[u8]) -> Option<&'static CommandSpec> {
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    COMMANDS.iter().find(|c| c.name == name)
}

/// COMMAND, COMMAND COUNT, COMMAND INFO names..., COMMAND DOCS [names...].
pub fn command(args: &[Vec<u8>], version: Version) -> Op {
    let mut out = Vec::new();
    let Some(sub) = args.first() else {
        resp::encode::array(&mut out, COMMANDS.len());
        COMMANDS.iter().for_each(|c| command_entry(&mut out, c));
        return Op::Reply(out);
    };
    match String::from_utf8_lossy(sub).to_ascii_uppercase().as_str() {
        "COUNT" => resp::encode::integer(&mut out, COMMANDS.len() as i64),
        "INFO" => {
            resp::encode::array(&mut out, args.len() - 1);
            for name in &args[1..] {
                match find(name) {
                    Some(c) => command_entry(&mut out, c),
                    None => resp::encode::null(&mut out, version),
                }
            }
        }
        "DOCS" => {
            let chosen: Vec<&CommandSpec> = if args.len() == 1 {
                COMMANDS.iter().collect()
            } else {
                args[1..].iter().filter_map(|n| find(n)).collect()
            };
            resp::encode::map(&mut out, chosen.len(), version);
            for c in chosen {
                push_bulk(&mut out, &c.name.to_ascii_lowercase());
                resp::encode::map(&mut out, 3, version);
                push_bulk(&mut out, "summary");
                push_bulk(&mut out, c.summary);
                push_bulk(&mut out, "since");
                push_bulk(&mut out, "1.0.0");
                push_bulk(&mut out, "group");
                push_bulk(&mut out, c.group);
            }
        }
        other => {
            return Op::Reply(reply::error(&format!(
                "ERR unknown subcommand '{other}'. Try COMMAND COUNT, INFO or DOCS."
            )))
        }
    }
    Op::Reply(out)
}

/// INFO [section]: the facts a monitoring tool looks for first.
pub fn info(tables: &[String], selected: usize) -> Vec<u8> {
    let text = format!(
        "# Server\r\nredis_version:{REDIS_VERSION_COMPATIBLE}\r\npercore_version:{}\r\n\
         redis_mode:standalone\r\nprocess_id:{}\r\n\r\n\
         # Persistence\r\nloading:0\r\naof_enabled:1\r\nrdb_bgsave_in_progress:0\r\n\r\n\
         # Replication\r\nrole:master\r\n\r\n\
         # Keyspace\r\ntables:{}\r\nselected:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        tables.join(","),
        tables[selected],
    );
    reply::bulk(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_text(op: Op) -> String {
        match op {
            Op::Reply(b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn config_get_answers_what_benchmarks_ask() {
        let get = |p: &str| {
            reply_text(config(
                &[b"GET".to_vec(), p.as_bytes().to_vec()],
                2,
                Version::Two,
            ))
        };
        assert_eq!(get("save"), "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
        assert_eq!(
            get("APPENDONLY"),
            "*2\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n"
        );
        assert_eq!(get("append*").matches("append").count(), 2);
        assert_eq!(get("maxmemory"), "*0\r\n");
        assert!(
            reply_text(config(&[b"SET".to_vec()], 1, Version::Two)).starts_with("-ERR CONFIG SET")
        );
    }

    #[test]
    fn hello_switches_versions_and_refuses_others() {
        let mut s = Session {
            table: 0,
            name: None,
            id: 7,
            version: Version::Two,
        };
        assert!(reply_text(hello(&[b"4".to_vec()], &mut s)).starts_with("-NOPROTO"));
        assert_eq!(s.version, Version::Two);
        let three = reply_text(hello(&[b"3".to_vec()], &mut s));
        assert!(three.starts_with("%8\r\n") && three.contains(":3\r\n"));
        assert_eq!(s.version, Version::Three);
        let two = reply_text(hello(
            &[b"2".to_vec(), b"SETNAME".to_vec(), b"me".to_vec()],
            &mut s,
        ));
        assert!(two.starts_with("*16\r\n") && two.contains(":2\r\n") && two.contains(":7\r\n"));
        assert_eq!(s.name.as_deref(), Some(b"me".as_slice()));
        assert_eq!(s.version, Version::Two);
    }

    #[test]
    fn command_table_is_consistent() {
        for c in COMMANDS {
            assert_eq!(c.name, c.name.to_ascii_uppercase());
            assert!(c.arity != 0);
        }
        let count = reply_text(command(&[b"count".to_vec()], Version::Two));
        assert_eq!(count, format!(":{}\r\n", COMMANDS.len()));
        let info = reply_text(command(
            &[b"INFO".to_vec(), b"get".to_vec(), b"nope".to_vec()],
            Version::Two,
        ));
        assert!(info.starts_with("*2\r\n*10\r\n$3\r\nget\r\n:2\r\n") && info.ends_with("$-1\r\n"));
    }
}
