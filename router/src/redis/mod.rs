//! The Redis protocol (RESP2) on a router core: Redis clients and tools read and write
//! percore's items, a Redis key being an item's partition key and its value the item's
//! bytes.
//!
//! A command goes through three steps, each its own module:
//!
//! 1. [`resp::Parser`] cuts the byte stream into commands, within [`PARSER_LIMITS`];
//! 2. [`plan`] checks name, arity and options, resolves the table from the connection's
//!    [`plan::Session`] (`SELECT n` picks the n-th of the configured tables), and either
//!    answers at once (PING, CONFIG GET, ...; see [`info`]) or names an item operation;
//! 3. [`exec`] runs the operation as native requests through the router's request path
//!    ([`crate::forward::Router::serve_request`]): the same routing, retries and errors as a
//!    native client gets, and an OK only once the write is durable.
//!
//! Pipelining: a connection parses every command that has arrived (up to
//! [`REDIS_PIPELINE_COMMANDS_MAX`]) and runs them in order, but not one at a time: a run of
//! commands where none writes a key another one touches goes to the nodes at once, so a
//! pipeline of GETs and SETs on different keys costs about one round trip, while `SET k`
//! then `GET k` still reads what the SET wrote. Within such a run, the GETs of a table
//! travel as batch gets and its plain SETs as batch writes (a frame and a raft entry per
//! partition part rather than per key); each command still gets its own reply. The replies
//! leave in one write.
//!
//! Errors follow Redis: an unknown command, a wrong arity or an oversized argument is
//! answered with an error and the connection goes on; only a stream that is not RESP at all
//! ([`resp::Fatal`]) is answered once and closed, as Redis does.

pub mod counters;
pub mod exec;
pub mod info;
pub mod plan;
pub mod reply;

use std::cell::Cell;
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use daemon::server::{Connections, Drain};
use exec::Store;
use plan::{Op, Session};

use crate::limits::{
    REDIS_ARGS_MAX, REDIS_ARG_BYTES_MAX, REDIS_COMMAND_BYTES_MAX, REDIS_INLINE_BYTES_MAX,
    REDIS_PIPELINE_COMMANDS_MAX, REDIS_READ_BYTES,
};

/// The parser's bounds on one command (see [`crate::limits`] for each one's reason).
pub const PARSER_LIMITS: resp::Limits = resp::Limits {
    args_max: REDIS_ARGS_MAX,
    arg_bytes_max: REDIS_ARG_BYTES_MAX,
    command_bytes_max: REDIS_COMMAND_BYTES_MAX,
    inline_bytes_max: REDIS_INLINE_BYTES_MAX,
};

/// What one core's Redis port has counted.
#[derive(Default, Debug)]
pub struct RedisStats {
    /// Connections served so far.
    pub connections: Cell<u64>,
    /// Commands answered (refused ones included).
    pub commands: Cell<u64>,
    /// Commands refused for their size.
    pub refused: Cell<u64>,
    /// Connections closed because their bytes were not RESP.
    pub protocol_errors: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// Binds the Redis port on this core (SO_REUSEPORT, like the native port).
pub fn listen(host: &str, port: u16) -> Result<TcpListener, String> {
    let addr = format!("{host}:{port}");
    TcpListener::bind(&addr).map_err(|e| format!("cannot listen for Redis clients on {addr}: {e}"))
}

/// Serves Redis clients from `listener` until draining starts.
pub async fn accept_loop<S: Store>(
    listener: TcpListener,
    store: S,
    tables: Rc<[String]>,
    core: u32,
    connections: Rc<Connections>,
    drain: Rc<Drain>,
    stats: Rc<RedisStats>,
) {
    let next_id = Rc::new(Cell::new(1u64));
    daemon::server::accept_each(listener, connections, drain.clone(), move |stream, peer| {
        let id = (u64::from(core) << 48) | next_id.get();
        next_id.set(next_id.get() + 1);
        bump(&stats.connections);
        let (store, tables, drain, stats) =
            (store.clone(), tables.clone(), drain.clone(), stats.clone());
        async move {
            match serve_connection(stream, store, tables, drain, id, stats).await {
                Ok(()) => tracing::debug!(%peer, "redis connection closed"),
                Err(End::Protocol(reason)) => {
                    tracing::info!(%peer, %reason, "redis connection closed: not RESP")
                }
                Err(End::Io(e)) => tracing::debug!(%peer, error = %e, "redis connection failed"),
            }
        }
    })
    .await
}

/// Why a Redis connection ended other than by the client closing it or QUIT.
#[derive(Debug)]
pub enum End {
    /// The bytes stopped being RESP (answered with the reason, then closed).
    Protocol(resp::Fatal),
    /// A read or write failed.
    Io(std::io::Error),
}

/// How many commands from the front of `queue` may run at once: up to the first that
/// writes a key an earlier one touches, or reads a key an earlier one writes (so a
/// pipeline's order is kept where it shows). QUIT runs alone, after what precedes it.
fn independent_prefix(queue: &VecDeque<(Op, resp::encode::Version)>) -> usize {
    if queue.len() <= 1 {
        // Without pipelining there is one command: no key sets to build for it.
        return queue.len();
    }
    if queue.iter().all(|(op, _)| reads_only(op)) {
        // Reads never conflict with reads: a pipeline of GETs needs no key sets either.
        return queue.len();
    }
    let mut read: Fingerprints = Fingerprints::default();
    let mut written: Fingerprints = Fingerprints::default();
    for (i, (op, _)) in queue.iter().enumerate() {
        if matches!(op, Op::Quit) {
            return i.max(1);
        }
        let (table, reads, writes) = op.keys();
        let table = proto::partition_key_hash(table.as_bytes());
        let reads: Vec<u128> = reads.iter().map(|k| fingerprint(table, k)).collect();
        let writes: Vec<u128> = writes.iter().map(|k| fingerprint(table, k)).collect();
        let conflict = reads.iter().any(|k| written.contains(k))
            || writes
                .iter()
                .any(|k| written.contains(k) || read.contains(k));
        if conflict {
            debug_assert!(i > 0, "the first command conflicts with nothing");
            return i;
        }
        read.extend(reads);
        written.extend(writes);
    }
    queue.len()
}

/// Whether a command only reads (or touches no item at all).
fn reads_only(op: &Op) -> bool {
    matches!(
        op,
        Op::Reply(_) | Op::Get { .. } | Op::Type { .. } | Op::Exists { .. } | Op::MGet { .. }
    )
}

/// A key of a table, as 128 bits of hash. Two keys that collide (about 2^-128) only end a
/// group of commands early, which keeps the pipeline's order all the same.
fn fingerprint(table_hash: u128, key: &[u8]) -> u128 {
    table_hash ^ proto::partition_key_hash(key)
}

/// A set of key fingerprints, hashed by their low 64 bits: they are hashes already, and
/// SipHash of every key of every pipelined command was a tenth of the router's CPU under
/// `redis-benchmark -P 16`.
type Fingerprints = HashSet<u128, BuildHasherDefault<LowBits>>;

/// The [`Fingerprints`] hasher: a fingerprint's low 64 bits.
#[derive(Default)]
struct LowBits(u64);

impl Hasher for LowBits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used; fold anything else in all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// A SET's key and value.
type KeyValue = (Vec<u8>, Vec<u8>);

/// Runs a group of commands that touch no key in common, at once, and returns their
/// replies in order. GETs of one table go together as batch gets and plain SETs of one
/// table as batch writes ([`exec::execute_gets`], [`exec::execute_sets`]) when there are at
/// least two of them; every other command runs as a task of its own.
async fn run_group<S: Store>(
    store: &S,
    mut group: Vec<(Op, resp::encode::Version)>,
) -> Vec<Vec<u8>> {
    // A lone command (every command of an unpipelined client) runs in this task: a task of
    // its own would cost a spawn, a copy of its future and a wake-up, and run nothing
    // beside it.
    if group.len() == 1 {
        let (op, version) = group.pop().expect("one command");
        return vec![match op {
            Op::Reply(bytes) => bytes,
            op => exec::execute(store.clone(), op, version).await,
        }];
    }
    /// Where a command's reply comes from: answered at once, its own task, or position `i`
    /// of a batch task's replies.
    enum From {
        Ready(Vec<u8>),
        Task(glommio::Task<Vec<u8>>),
        Batch(usize, usize),
    }
    // The batch a command may join: GETs of a table, or plain SETs of a table.
    fn kind(op: &Op) -> Option<(bool, &str)> {
        match op {
            Op::Get { table, .. } => Some((true, table)),
            Op::Set {
                table,
                condition: proto::Condition::None,
                ..
            } => Some((false, table)),
            _ => None,
        }
    }
    // Kinds with at least two commands in the group: those are batched. There are at most
    // two per table and few tables, so a short list searched in order beats a map.
    let mut counts: Vec<((bool, &str), usize)> = Vec::new();
    for k in group.iter().filter_map(|(op, _)| kind(op)) {
        match counts.iter_mut().find(|(c, _)| *c == k) {
            Some((_, n)) => *n += 1,
            None => counts.push((k, 1)),
        }
    }
    let batched: Vec<(bool, String)> = counts
        .into_iter()
        .filter(|&(_, n)| n >= 2)
        .map(|((is_get, t), _)| (is_get, t.to_string()))
        .collect();
    let mut batch_gets: Vec<Vec<(Vec<u8>, resp::encode::Version)>> =
        batched.iter().map(|_| Vec::new()).collect();
    let mut batch_sets: Vec<Vec<KeyValue>> = batched.iter().map(|_| Vec::new()).collect();
    let mut from = Vec::with_capacity(group.len());
    for (op, version) in group {
        let batch =
            kind(&op).and_then(|(g, t)| batched.iter().position(|(bg, bt)| *bg == g && bt == t));
        let Some(id) = batch else {
            from.push(match op {
                Op::Reply(bytes) => From::Ready(bytes),
                op => From::Task(glommio::spawn_local(exec::execute(
                    store.clone(),
                    op,
                    version,
                ))),
            });
            continue;
        };
        match op {
            Op::Get { key, .. } => {
                batch_gets[id].push((key, version));
                from.push(From::Batch(id, batch_gets[id].len() - 1));
            }
            Op::Set { key, value, .. } => {
                batch_sets[id].push((key, value));
                from.push(From::Batch(id, batch_sets[id].len() - 1));
            }
            _ => unreachable!("only GETs and SETs are batched"),
        }
    }
    // A group that is one batch and nothing else (a pipeline of GETs, or of SETs) runs it in
    // this task too.
    let mut batches = batched
        .into_iter()
        .enumerate()
        .map(|(id, (is_get, table))| {
            run_batch(
                store.clone(),
                is_get,
                table,
                std::mem::take(&mut batch_gets[id]),
                std::mem::take(&mut batch_sets[id]),
            )
        });
    if batches.len() == 1 && from.iter().all(|f| matches!(f, From::Batch(..))) {
        return batches.next().expect("one batch").await;
    }
    let tasks: Vec<glommio::Task<Vec<Vec<u8>>>> = batches.map(glommio::spawn_local).collect();
    let mut batch_replies: Vec<Vec<Vec<u8>>> = Vec::with_capacity(tasks.len());
    for task in tasks {
        batch_replies.push(task.await);
    }
    let mut replies = Vec::with_capacity(from.len());
    for f in from {
        replies.push(match f {
            From::Ready(bytes) => bytes,
            From::Task(task) => task.await,
            From::Batch(id, i) => std::mem::take(&mut batch_replies[id][i]),
        });
    }
    replies
}

/// The replies of one batch of [`run_group`]: its GETs (`is_get`) or its plain SETs.
async fn run_batch<S: Store>(
    store: S,
    is_get: bool,
    table: String,
    gets: Vec<(Vec<u8>, resp::encode::Version)>,
    sets: Vec<KeyValue>,
) -> Vec<Vec<u8>> {
    if is_get {
        exec::execute_gets(store, table, gets).await
    } else {
        exec::execute_sets(store, table, sets).await
    }
}

/// Serves one Redis connection until the client closes it or sends QUIT, draining starts,
/// or its bytes stop being RESP.
pub async fn serve_connection<S: Store>(
    mut stream: TcpStream,
    store: S,
    tables: Rc<[String]>,
    drain: Rc<Drain>,
    id: u64,
    stats: Rc<RedisStats>,
) -> Result<(), End> {
    let mut parser = resp::Parser::new(PARSER_LIMITS);
    // Bytes received; the first `consumed` of them are parsed already.
    let mut input: Vec<u8> = Vec::with_capacity(REDIS_READ_BYTES);
    let mut consumed = 0usize;
    let mut read_buf = vec![0u8; REDIS_READ_BYTES];
    let mut out: Vec<u8> = Vec::new();
    let mut session = Session {
        table: 0,
        name: None,
        id,
        version: resp::encode::Version::Two,
    };
    // Each command with the protocol version its reply is written in (HELLO changes it
    // for the commands after it).
    let mut queue: VecDeque<(Op, resp::encode::Version)> = VecDeque::new();
    let mut eof = false;
    loop {
        // Parse what has arrived, up to the pipeline bound.
        let mut fatal = None;
        while queue.len() < REDIS_PIPELINE_COMMANDS_MAX {
            let (used, event) = parser.advance(&input[consumed..]);
            consumed += used;
            match event {
                None => break,
                Some(Err(f)) => {
                    fatal = Some(f);
                    break;
                }
                Some(Ok(resp::Event::Refused(refusal))) => {
                    bump(&stats.refused);
                    let error = reply::error(&refusal.to_string());
                    queue.push_back((Op::Reply(error), session.version));
                }
                Some(Ok(resp::Event::Command(command))) => {
                    let op = plan::plan(command.args, &mut session, &tables);
                    queue.push_back((op, session.version));
                }
            }
        }
        let more_parsed_than_run = queue.len() >= REDIS_PIPELINE_COMMANDS_MAX;
        if consumed == input.len() {
            input.clear();
            consumed = 0;
        } else if consumed >= REDIS_READ_BYTES {
            input.drain(..consumed);
            consumed = 0;
        }

        // Run them, in order, independent runs at once.
        let mut quit = false;
        while !queue.is_empty() && !quit {
            let n = independent_prefix(&queue);
            if n == 1 {
                // One command alone runs in this task: no spawn, no wake-up.
                let (op, version) = queue.pop_front().expect("the queue is not empty");
                bump(&stats.commands);
                if op == Op::Quit {
                    quit = true;
                }
                out.extend_from_slice(&exec::execute(store.clone(), op, version).await);
                continue;
            }
            let group: Vec<(Op, resp::encode::Version)> = queue.drain(..n).collect();
            for reply in run_group(&store, group).await {
                bump(&stats.commands);
                out.extend_from_slice(&reply);
            }
        }
        if let Some(f) = &fatal {
            bump(&stats.protocol_errors);
            out.extend_from_slice(&reply::error(&f.to_string()));
        }
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(End::Io)?;
            out.clear();
        }
        if let Some(f) = fatal {
            return Err(End::Protocol(f));
        }
        if quit || eof {
            return Ok(());
        }
        if more_parsed_than_run {
            continue;
        }
        if drain.is_draining() {
            return Ok(());
        }
        let read =
            futures_lite::future::or(async { Some(stream.read(&mut read_buf).await) }, async {
                drain.started().await;
                None
            })
            .await;
        match read {
            None => return Ok(()),
            Some(Ok(0)) => eof = true,
            Some(Ok(n)) => input.extend_from_slice(&read_buf[..n]),
            Some(Err(e)) => return Err(End::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(table: &str, key: &str) -> Op {
        Op::Get {
            table: table.into(),
            key: key.into(),
        }
    }

    fn set(table: &str, key: &str) -> Op {
        Op::Set {
            table: table.into(),
            key: key.into(),
            value: b"v".to_vec(),
            condition: proto::Condition::None,
        }
    }

    fn prefix(ops: Vec<Op>) -> usize {
        let queue: VecDeque<_> = ops
            .into_iter()
            .map(|op| (op, resp::encode::Version::Two))
            .collect();
        independent_prefix(&queue)
    }

    #[test]
    fn a_group_ends_at_the_first_command_that_depends_on_an_earlier_one() {
        // Reads alone, even of one key: one group.
        assert_eq!(
            prefix(vec![get("t1", "a"), get("t1", "a"), get("t1", "b")]),
            3
        );
        // A write after a read of its key, a read after a write of its key, two writes.
        assert_eq!(
            prefix(vec![get("t1", "a"), set("t1", "b"), set("t1", "a")]),
            2
        );
        assert_eq!(
            prefix(vec![set("t1", "a"), get("t1", "b"), get("t1", "a")]),
            2
        );
        assert_eq!(prefix(vec![set("t1", "a"), set("t1", "a")]), 1);
        // The same key in two tables is two keys.
        assert_eq!(
            prefix(vec![set("t1", "a"), set("t2", "a"), get("t2", "b")]),
            3
        );
        // MSET writes every key it names; MGET reads them.
        let mset = Op::MSet {
            table: "t1".into(),
            pairs: vec![
                (b"x".to_vec(), b"1".to_vec()),
                (b"y".to_vec(), b"2".to_vec()),
            ],
        };
        let mget = Op::MGet {
            table: "t1".into(),
            keys: vec![b"z".to_vec(), b"y".to_vec()],
        };
        assert_eq!(prefix(vec![get("t1", "a"), mset, mget]), 2);
        // QUIT runs alone, after what precedes it.
        assert_eq!(prefix(vec![get("t1", "a"), Op::Quit, get("t1", "b")]), 1);
        assert_eq!(prefix(vec![Op::Quit, get("t1", "b")]), 1);
        assert_eq!(prefix(vec![]), 0);
    }
}
