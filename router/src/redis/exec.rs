//! Running an [`Op`] against the items: each becomes native requests to a [`Store`] (the
//! router's request path in production, a `BTreeMap` model in the tests), and their
//! answers become one Redis reply.

use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

use proto::{BatchGet, BatchWrite, Condition, Consistency, Error, Key, Request, Response};

use resp::encode::Version;

use super::counters::Counters;
use super::plan::Op;
use super::reply;
use crate::limits::{REDIS_BATCH_ROUNDS_MAX, REDIS_REPLY_BYTES_MAX, REDIS_THROTTLED_WAIT_MS_MAX};

/// Where the Redis port's requests go: a native request in, its answer out.
pub trait Store: Clone + 'static {
    /// Answers one native request.
    fn call(&self, request: Request) -> impl Future<Output = Response>;

    /// Waits `ms` milliseconds (before sending a throttled request again).
    fn pause(&self, ms: u64) -> impl Future<Output = ()>;

    /// This core's increments in progress (see [`super::counters`]).
    fn counters(&self) -> &Counters;
}

/// The router's request path as the Redis port's [`Store`], with the core's counters.
#[derive(Clone)]
pub struct RouterStore {
    router: Rc<crate::forward::Router>,
    counters: Rc<Counters>,
}

impl RouterStore {
    /// The store of one router core.
    pub fn new(router: Rc<crate::forward::Router>) -> RouterStore {
        RouterStore {
            router,
            counters: Rc::default(),
        }
    }
}

impl Store for RouterStore {
    fn call(&self, request: Request) -> impl Future<Output = Response> {
        let router = self.router.clone();
        async move { router.serve_request(request).await }
    }

    fn pause(&self, ms: u64) -> impl Future<Output = ()> {
        glommio::timer::sleep(std::time::Duration::from_millis(ms))
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// Sends `request`, and again after the hinted pause while the node answers `Throttled`
/// (it did nothing), for up to [`REDIS_THROTTLED_WAIT_MS_MAX`] in all. Native clients retry
/// a throttled request themselves; Redis clients never had to, since Redis queues instead,
/// so the port does it for them and they see a slower answer rather than an error.
pub(super) async fn call<S: Store>(store: &S, request: Request) -> Response {
    let mut waited_ms = 0u64;
    loop {
        match store.call(request.clone()).await {
            Response::Error(Error::Throttled { retry_after_ms })
                if waited_ms < REDIS_THROTTLED_WAIT_MS_MAX =>
            {
                let pause_ms = u64::from(retry_after_ms).clamp(1, REDIS_THROTTLED_WAIT_MS_MAX);
                store.pause(pause_ms).await;
                waited_ms += pause_ms;
            }
            other => return other,
        }
    }
}

/// The reply to `op` (already encoded). [`Op::Quit`] answers `+OK`; closing is the
/// connection's business.
pub async fn execute<S: Store>(store: S, op: Op, version: Version) -> Vec<u8> {
    match op {
        Op::Reply(bytes) => bytes,
        Op::Quit => reply::simple("OK"),
        Op::Get { table, key } => match get(&store, &table, key).await {
            Ok(Some(item)) => reply::bulk(&item.value),
            Ok(None) => reply::null(version),
            Err(e) => reply::percore_error(&e),
        },
        Op::Type { table, key } => match get(&store, &table, key).await {
            Ok(Some(_)) => reply::simple("string"),
            Ok(None) => reply::simple("none"),
            Err(e) => reply::percore_error(&e),
        },
        Op::Set {
            table,
            key,
            value,
            condition,
        } => {
            let request = Request::Put(proto::Put {
                table,
                key: Key::simple(key),
                value,
                condition,
            });
            match call(&store, request).await {
                Response::Written { .. } => reply::simple("OK"),
                // NX on a present key, XX on an absent one: Redis answers nil.
                Response::Error(Error::ConditionFailed { .. }) => reply::null(version),
                other => unexpected(other),
            }
        }
        Op::Del { table, keys } => {
            let mut existed = 0;
            for key in keys {
                let request = Request::Delete(proto::Delete {
                    table: table.clone(),
                    key: Key::simple(key),
                    condition: Condition::None,
                });
                match call(&store, request).await {
                    Response::Deleted { existed: true, .. } => existed += 1,
                    Response::Deleted { existed: false, .. } => {}
                    other => return unexpected(other),
                }
            }
            reply::integer(existed)
        }
        Op::Exists { table, keys } => match get_many(&store, &table, &keys).await {
            Ok(found) => {
                reply::integer(keys.iter().filter(|k| found.contains_key(k)).count() as i64)
            }
            Err(e) => reply::percore_error(&e),
        },
        Op::MGet { table, keys } => match get_many(&store, &table, &keys).await {
            Ok(found) => {
                let mut out = Vec::new();
                resp::encode::array(&mut out, keys.len());
                for k in &keys {
                    match found.get(k) {
                        Some(v) => resp::encode::bulk(&mut out, v),
                        None => resp::encode::null(&mut out, version),
                    }
                }
                out
            }
            Err(e) => reply::percore_error(&e),
        },
        Op::MSet { table, pairs } => match set_many(&store, &table, pairs).await {
            Ok(()) => reply::simple("OK"),
            Err(e) => reply::percore_error(&e),
        },
        Op::IncrBy { table, key, delta } => {
            super::counters::incr(store.counters(), &store, table, key, delta).await
        }
    }
}

/// The replies to several GETs of one table that run at once (a pipeline's independent
/// run), in their order: one batch get per protocol-sized chunk instead of a request each,
/// which costs the router and the node a frame, a task and a lookup per chunk rather than
/// per key. If the batch fails as a whole (a bad key fails its validation, say), each GET
/// runs alone, so that each gets its own answer, exactly as if it had not been batched.
pub async fn execute_gets<S: Store>(
    store: S,
    table: String,
    gets: Vec<(Vec<u8>, Version)>,
) -> Vec<Vec<u8>> {
    let keys: Vec<Vec<u8>> = gets.iter().map(|(k, _)| k.clone()).collect();
    match get_many(&store, &table, &keys).await {
        Ok(found) => gets
            .iter()
            .map(|(k, version)| match found.get(k) {
                Some(v) => reply::bulk(v),
                None => reply::null(*version),
            })
            .collect(),
        Err(_) => {
            let mut replies = Vec::with_capacity(gets.len());
            for (key, version) in gets {
                let op = Op::Get {
                    table: table.clone(),
                    key,
                };
                replies.push(execute(store.clone(), op, version).await);
            }
            replies
        }
    }
}

/// The replies to several plain SETs (no condition) of distinct keys of one table that run
/// at once, in their order: batch writes of the protocol's size instead of a put each (one
/// raft entry per partition part instead of one per key). Each reply is that SET's own: a
/// write's failure is its outcome; a batch refused by validation runs its SETs one by one;
/// any other error goes to each SET of the batch (none is sent twice).
pub async fn execute_sets<S: Store>(
    store: S,
    table: String,
    sets: Vec<(Vec<u8>, Vec<u8>)>,
) -> Vec<Vec<u8>> {
    let mut replies = Vec::with_capacity(sets.len());
    let mut sets = sets.into_iter().peekable();
    while sets.peek().is_some() {
        let chunk: Vec<(Vec<u8>, Vec<u8>)> = sets
            .by_ref()
            .take(proto::limits::BATCH_WRITES_MAX)
            .collect();
        let request = Request::BatchWrite(BatchWrite {
            table: table.clone(),
            writes: chunk
                .iter()
                .map(|(k, v)| proto::WriteOp::Put {
                    key: Key::simple(k.clone()),
                    value: v.clone(),
                })
                .collect(),
        });
        match call(&store, request).await {
            Response::BatchWritten { outcomes } if outcomes.len() == chunk.len() => {
                replies.extend(outcomes.iter().map(|o| match o {
                    proto::WriteOutcome::Written { .. } => reply::simple("OK"),
                    proto::WriteOutcome::Failed(e) => reply::percore_error(e),
                }))
            }
            // Refused by validation, before anything was sent: each SET alone gets its
            // own answer (only the bad one fails).
            Response::Error(Error::TooLarge { .. } | Error::InvalidRequest { .. }) => {
                for (key, value) in chunk {
                    let op = Op::Set {
                        table: table.clone(),
                        key,
                        value,
                        condition: Condition::None,
                    };
                    // A SET's reply does not depend on the protocol version.
                    replies.push(execute(store.clone(), op, Version::Two).await);
                }
            }
            // Anything else may have written some of them (one partition's part, say):
            // never send them again; each SET hears the error, as a lone one would.
            other => {
                let error = match other {
                    Response::Error(e) => reply::percore_error(&e),
                    other => {
                        reply::error(&format!("ERR internal: unexpected answer {}", other.name()))
                    }
                };
                replies.extend(std::iter::repeat_n(error, chunk.len()));
            }
        }
    }
    replies
}

/// A reply for an answer that is not the one the request calls for: the error it carries,
/// or (never expected) a mismatch named as such.
fn unexpected(response: Response) -> Vec<u8> {
    match response {
        Response::Error(e) => reply::percore_error(&e),
        other => reply::error(&format!("ERR internal: unexpected answer {}", other.name())),
    }
}

pub(super) async fn get<S: Store>(
    store: &S,
    table: &str,
    key: Vec<u8>,
) -> Result<Option<proto::Item>, Error> {
    let request = Request::Get(proto::Get {
        table: table.to_string(),
        key: Key::simple(key),
        consistency: Consistency::Strong,
    });
    match call(store, request).await {
        Response::Item(item) => Ok(Some(item)),
        Response::Error(Error::NotFound) => Ok(None),
        Response::Error(e) => Err(e),
        other => Err(Error::internal(format!(
            "a get was answered with {}",
            other.name()
        ))),
    }
}

/// The values of the keys that exist, in batches of the protocol's size, the keys a batch
/// left unprocessed sent again (a bounded number of rounds).
///
/// Refuses, once the values found come to more than [`REDIS_REPLY_BYTES_MAX`], so that one
/// command cannot make the router hold an unbounded reply (4,096 keys of 400 KiB would be
/// 1.6 GiB).
async fn get_many<S: Store>(store: &S, table: &str, keys: &[Vec<u8>]) -> Result<Found, Error> {
    let mut found_bytes = 0usize;
    let mut unique: Vec<&Vec<u8>> = keys.iter().collect();
    unique.sort();
    unique.dedup();
    let mut found = Vec::with_capacity(unique.len());
    for chunk in unique.chunks(proto::limits::BATCH_GETS_MAX) {
        let mut pending: Vec<Key> = chunk.iter().map(|k| Key::simple(k.to_vec())).collect();
        let mut rounds = 0;
        while !pending.is_empty() {
            rounds += 1;
            if rounds > REDIS_BATCH_ROUNDS_MAX {
                return Err(Error::unavailable(format!(
                    "{} keys were still unprocessed after {REDIS_BATCH_ROUNDS_MAX} rounds",
                    pending.len()
                )));
            }
            let request = Request::BatchGet(BatchGet {
                table: table.to_string(),
                keys: std::mem::take(&mut pending),
                consistency: Consistency::Strong,
            });
            match call(store, request).await {
                Response::BatchItems { items, unprocessed } => {
                    for item in items {
                        found_bytes += item.value.len();
                        found.push((item.key.partition, item.value));
                    }
                    if found_bytes > REDIS_REPLY_BYTES_MAX {
                        return Err(Error::invalid(format!(
                            "the values of these keys come to more than \
                             {REDIS_REPLY_BYTES_MAX} bytes; ask for fewer keys at a time"
                        )));
                    }
                    pending = unprocessed;
                }
                Response::Error(e) => return Err(e),
                other => {
                    return Err(Error::internal(format!(
                        "a batch get was answered with {}",
                        other.name()
                    )))
                }
            }
        }
    }
    found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(Found(found))
}

/// The values [`get_many`] found, sorted by key: a binary search per key asked for costs
/// less than hashing every key twice.
struct Found(Vec<(Vec<u8>, Vec<u8>)>);

impl Found {
    fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.0
            .binary_search_by(|(k, _)| k.as_slice().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }
}

/// Writes the pairs in batches of the protocol's size. A key named twice takes its last
/// value, as in Redis. Each batch is atomic per partition; the whole is not (the reply says
/// which write failed, and the ones before it stay written).
async fn set_many<S: Store>(
    store: &S,
    table: &str,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), Error> {
    let mut last: HashMap<&[u8], usize> = HashMap::with_capacity(pairs.len());
    for (i, (k, _)) in pairs.iter().enumerate() {
        last.insert(k, i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    let writes: Vec<proto::WriteOp> = keep
        .into_iter()
        .map(|i| proto::WriteOp::Put {
            key: Key::simple(pairs[i].0.clone()),
            value: pairs[i].1.clone(),
        })
        .collect();
    for chunk in writes.chunks(proto::limits::BATCH_WRITES_MAX) {
        let request = Request::BatchWrite(BatchWrite {
            table: table.to_string(),
            writes: chunk.to_vec(),
        });
        match call(store, request).await {
            Response::BatchWritten { outcomes } => {
                for (outcome, write) in outcomes.iter().zip(chunk) {
                    if let proto::WriteOutcome::Failed(e) = outcome {
                        return Err(Error::invalid(format!(
                            "MSET stopped at key {:?}: {e}",
                            String::from_utf8_lossy(&write.key().partition)
                        )));
                    }
                }
            }
            Response::Error(e) => return Err(e),
            other => {
                return Err(Error::internal(format!(
                    "a batch write was answered with {}",
                    other.name()
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;

    /// Each key's value and version.
    type Items = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

    /// The native protocol's item semantics, in memory: one table, versions counting up.
    #[derive(Clone, Default)]
    pub struct Model {
        items: Rc<RefCell<Items>>,
        version: Rc<RefCell<u64>>,
        /// Calls still to answer `Throttled` before serving again.
        throttled: Rc<std::cell::Cell<u32>>,
        /// Milliseconds paused so far.
        paused_ms: Rc<std::cell::Cell<u64>>,
        counters: Rc<Counters>,
        /// Whether each call yields once first, so that concurrent commands interleave.
        yielding: Rc<std::cell::Cell<bool>>,
        /// Puts served.
        puts: Rc<std::cell::Cell<u32>>,
    }

    impl Model {
        fn write(&self, key: Vec<u8>, value: Vec<u8>) -> u64 {
            *self.version.borrow_mut() += 1;
            let v = *self.version.borrow();
            self.items.borrow_mut().insert(key, (value, v));
            v
        }
    }

    impl Store for Model {
        fn call(&self, request: Request) -> impl Future<Output = Response> {
            let this = self.clone();
            async move {
                if this.yielding.get() {
                    futures_lite::future::yield_now().await;
                }
                if matches!(request, Request::Put(_)) {
                    this.puts.set(this.puts.get() + 1);
                }
                if this.throttled.get() > 0 {
                    this.throttled.set(this.throttled.get() - 1);
                    return Response::Error(Error::Throttled { retry_after_ms: 7 });
                }
                if let Err(e) = proto::validate(&request) {
                    return Response::Error(e);
                }
                let current = |k: &[u8]| this.items.borrow().get(k).cloned();
                match request {
                    Request::Get(g) => match current(&g.key.partition) {
                        Some((value, version)) => Response::Item(proto::Item {
                            key: g.key,
                            value,
                            version,
                        }),
                        None => Response::Error(Error::NotFound),
                    },
                    Request::Put(p) => {
                        let now = current(&p.key.partition);
                        let ok = match p.condition {
                            Condition::None => true,
                            Condition::IfAbsent => now.is_none(),
                            Condition::IfPresent => now.is_some(),
                            Condition::IfVersion(v) => now.as_ref().map(|n| n.1) == Some(v),
                        };
                        if !ok {
                            return Response::Error(Error::ConditionFailed {
                                current_version: now.map(|n| n.1),
                            });
                        }
                        Response::Written {
                            version: this.write(p.key.partition, p.value),
                        }
                    }
                    Request::Delete(d) => {
                        let existed = this.items.borrow_mut().remove(&d.key.partition).is_some();
                        Response::Deleted {
                            version: 0,
                            existed,
                        }
                    }
                    Request::BatchGet(b) => Response::BatchItems {
                        items: b
                            .keys
                            .into_iter()
                            .filter_map(|k| {
                                current(&k.partition).map(|(value, version)| proto::Item {
                                    key: k,
                                    value,
                                    version,
                                })
                            })
                            .collect(),
                        unprocessed: vec![],
                    },
                    Request::BatchWrite(b) => Response::BatchWritten {
                        outcomes: b
                            .writes
                            .into_iter()
                            .map(|w| match w {
                                proto::WriteOp::Put { key, value } => {
                                    proto::WriteOutcome::Written {
                                        version: this.write(key.partition, value),
                                    }
                                }
                                proto::WriteOp::Delete { key } => {
                                    this.items.borrow_mut().remove(&key.partition);
                                    proto::WriteOutcome::Written { version: 0 }
                                }
                            })
                            .collect(),
                    },
                    _ => Response::Error(Error::invalid("not in the model")),
                }
            }
        }

        fn pause(&self, ms: u64) -> impl Future<Output = ()> {
            self.paused_ms.set(self.paused_ms.get() + ms);
            std::future::ready(())
        }

        fn counters(&self) -> &Counters {
            &self.counters
        }
    }

    fn run(model: &Model, words: &[&str]) -> String {
        let mut session = super::super::plan::Session {
            table: 0,
            name: None,
            id: 1,
            version: Version::Two,
        };
        let args = words.iter().map(|w| w.as_bytes().to_vec()).collect();
        let op = super::super::plan::plan(args, &mut session, &["usertable".to_string()]);
        let bytes = futures_lite::future::block_on(execute(model.clone(), op, session.version));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn strings_and_conditions_behave_as_in_redis() {
        let m = Model::default();
        assert_eq!(run(&m, &["GET", "a"]), "$-1\r\n");
        assert_eq!(run(&m, &["SET", "a", "1", "XX"]), "$-1\r\n");
        assert_eq!(run(&m, &["SET", "a", "1", "NX"]), "+OK\r\n");
        assert_eq!(run(&m, &["SET", "a", "2", "NX"]), "$-1\r\n");
        assert_eq!(run(&m, &["SET", "a", "3", "XX"]), "+OK\r\n");
        assert_eq!(run(&m, &["GET", "a"]), "$1\r\n3\r\n");
        assert_eq!(run(&m, &["TYPE", "a"]), "+string\r\n");
        assert_eq!(run(&m, &["TYPE", "b"]), "+none\r\n");
        assert_eq!(run(&m, &["EXISTS", "a", "b", "a"]), ":2\r\n");
        assert_eq!(run(&m, &["DEL", "a", "b"]), ":1\r\n");
        assert_eq!(run(&m, &["EXISTS", "a"]), ":0\r\n");
    }

    #[test]
    fn mset_and_mget_keep_order_and_last_values() {
        let m = Model::default();
        assert_eq!(run(&m, &["MSET", "a", "1", "b", "2", "a", "3"]), "+OK\r\n");
        assert_eq!(
            run(&m, &["MGET", "a", "nope", "b", "a"]),
            "*4\r\n$1\r\n3\r\n$-1\r\n$1\r\n2\r\n$1\r\n3\r\n"
        );
        // More keys than one batch holds, either way.
        let mut words = vec!["MSET".to_string()];
        for i in 0..60 {
            words.push(format!("k{i}"));
            words.push(format!("v{i}"));
        }
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        assert_eq!(run(&m, &words), "+OK\r\n");
        let mut get = vec!["MGET".to_string()];
        get.extend((0..150).map(|i| format!("k{}", i % 60)));
        let get: Vec<&str> = get.iter().map(String::as_str).collect();
        let answer = run(&m, &get);
        assert!(answer.starts_with("*150\r\n$2\r\nv0\r\n"));
        assert_eq!(answer.matches("$-1").count(), 0);
    }

    #[test]
    fn counters_count_and_refuse_what_is_not_a_number() {
        let m = Model::default();
        assert_eq!(run(&m, &["INCR", "n"]), ":1\r\n");
        assert_eq!(run(&m, &["INCRBY", "n", "41"]), ":42\r\n");
        assert_eq!(run(&m, &["DECR", "n"]), ":41\r\n");
        assert_eq!(run(&m, &["DECRBY", "fresh", "3"]), ":-3\r\n");
        assert_eq!(run(&m, &["GET", "n"]), "$2\r\n41\r\n");
        run(&m, &["SET", "s", "abc"]);
        assert!(run(&m, &["INCR", "s"]).contains("not an integer"));
        run(&m, &["SET", "big", &i64::MAX.to_string()]);
        assert!(run(&m, &["INCR", "big"]).contains("overflow"));
    }

    #[test]
    fn a_throttled_request_is_sent_again_for_a_while_then_the_client_hears() {
        let m = Model::default();
        m.throttled.set(3);
        assert_eq!(run(&m, &["SET", "a", "1"]), "+OK\r\n");
        assert_eq!(
            m.paused_ms.get(),
            21,
            "three pauses of the node's 7 ms hint"
        );
        m.throttled.set(u32::MAX);
        assert!(run(&m, &["GET", "a"]).starts_with("-TRYAGAIN "));
        assert!(m.paused_ms.get() >= 21 + REDIS_THROTTLED_WAIT_MS_MAX);
    }

    #[test]
    fn concurrent_increments_of_one_key_batch_and_count_exactly() {
        let m = Model::default();
        m.yielding.set(true);
        let op = |delta| Op::IncrBy {
            table: "usertable".into(),
            key: b"hot".to_vec(),
            delta,
        };
        let mut futures: Vec<_> = (0..20)
            .map(|_| Box::pin(execute(m.clone(), op(1), Version::Two)))
            .collect();
        let mut replies: Vec<Option<Vec<u8>>> = vec![None; futures.len()];
        futures_lite::future::block_on(std::future::poll_fn(|cx| {
            for (f, r) in futures.iter_mut().zip(replies.iter_mut()) {
                if r.is_none() {
                    if let std::task::Poll::Ready(v) = f.as_mut().poll(cx) {
                        *r = Some(v);
                    }
                }
            }
            if replies.iter().all(Option::is_some) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        }));
        let mut values: Vec<String> = replies
            .into_iter()
            .map(|r| String::from_utf8(r.unwrap()).unwrap())
            .collect();
        values.sort_by_key(|v| v[1..v.len() - 2].parse::<i64>().unwrap());
        let want: Vec<String> = (1..=20).map(|i| format!(":{i}\r\n")).collect();
        assert_eq!(values, want, "each increment sees its own value, once");
        assert!(m.puts.get() < 20, "{} puts for 20 increments", m.puts.get());
        m.yielding.set(false);
        assert_eq!(run(&m, &["GET", "hot"]), "$2\r\n20\r\n");
        assert_eq!(m.counters.keys_in_progress(), 0, "no key left locked");
    }

    #[test]
    fn an_mget_too_large_to_hold_is_refused() {
        let m = Model::default();
        let value = vec![b'v'; proto::limits::ITEM_BYTES_MAX - 64];
        let count = REDIS_REPLY_BYTES_MAX / value.len() + 1;
        let keys: Vec<String> = (0..count).map(|i| format!("big{i}")).collect();
        for k in &keys {
            m.write(k.as_bytes().to_vec(), value.clone());
        }
        let mut words = vec!["MGET"];
        words.extend(keys.iter().map(String::as_str));
        assert!(run(&m, &words).contains("ask for fewer keys"));
        assert!(run(&m, &words[..3]).starts_with("*2\r\n"));
    }

    #[test]
    fn percore_errors_read_as_redis_errors() {
        let m = Model::default();
        let long_key = "k".repeat(proto::limits::PARTITION_KEY_BYTES_MAX + 1);
        assert!(run(&m, &["SET", &long_key, "v"]).starts_with("-ERR "));
        assert!(run(&m, &["GET", &long_key]).starts_with("-ERR "));
    }
}
