//! INCR and friends on a hot key: one read-add-write at a time per key on a core, carrying
//! every increment that queued meanwhile.
//!
//! An increment is a read, then a write on the condition that the item's version has not
//! moved. Run naively from many connections at once on one key (redis-benchmark's INCR
//! test does exactly that: fifty clients, one counter), nearly every attempt loses the race,
//! and clients see `TRYAGAIN`. So, per key on each core:
//!
//! - the first increment becomes the key's **runner**; increments that arrive while it runs
//!   queue behind it;
//! - the runner takes its own delta and everything queued, reads the item once, adds the
//!   deltas in arrival order (each waiter's reply is the value after its own delta, exactly as
//!   if they had run one by one), writes the total once, and answers them all;
//! - then it passes the baton to the first increment that queued since, which does the same
//!   with its own batch.
//!
//! The conditional write still guards against other cores and other routers; a lost race
//! there is retried, a bounded number of times. Throughput on one hot key is then a batch per
//! read-write round trip instead of one increment per round trip.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use proto::{Condition, Error, Key, Request, Response};

use super::exec::{call, get, Store};
use super::plan::parse_i64;
use super::reply;
use crate::limits::REDIS_INCR_ATTEMPTS_MAX;

/// What a queued increment is woken with.
enum Turn {
    /// Its reply: a runner carried its delta.
    Reply(Vec<u8>),
    /// The baton: it is the key's runner now.
    Run,
}

#[derive(Default)]
struct Slot {
    turn: RefCell<Option<Turn>>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn fill(&self, turn: Turn) {
        *self.turn.borrow_mut() = Some(turn);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    async fn wait(&self) -> Turn {
        poll_fn(|cx| match self.turn.borrow_mut().take() {
            Some(t) => Poll::Ready(t),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// A key of one table.
type CounterKey = (String, Vec<u8>);

/// A queued increment: its delta and where its reply goes.
type Waiter = (i64, Rc<Slot>);

/// One core's increments in progress: for each key with a runner, the increments queued
/// behind it (a key is present exactly while it has a runner).
#[derive(Default)]
pub struct Counters {
    queued: RefCell<HashMap<CounterKey, Vec<Waiter>>>,
}

impl Counters {
    /// Keys with an increment in progress.
    pub fn keys_in_progress(&self) -> usize {
        self.queued.borrow().len()
    }
}

/// Holds the baton for a key; passes it on when dropped, so that a runner whose future is
/// dropped mid-way (its connection's task ended) cannot leave the key stuck.
struct Baton<'a> {
    counters: &'a Counters,
    key: CounterKey,
}

impl Drop for Baton<'_> {
    fn drop(&mut self) {
        let mut queued = self.counters.queued.borrow_mut();
        let Some(list) = queued.get_mut(&self.key) else {
            return;
        };
        if list.is_empty() {
            queued.remove(&self.key);
        } else {
            let (_, next) = list.remove(0);
            next.fill(Turn::Run);
        }
    }
}

/// Adds `delta` to the integer at `key` of `table` and returns the reply (the new value, or
/// the error), batching with the other increments of the key on this core.
pub async fn incr<S: Store>(
    counters: &Counters,
    store: &S,
    table: String,
    key: Vec<u8>,
    delta: i64,
) -> Vec<u8> {
    let counter_key = (table, key);
    let slot = Rc::new(Slot::default());
    let queued_behind = match counters.queued.borrow_mut().entry(counter_key.clone()) {
        Entry::Occupied(mut e) => {
            e.get_mut().push((delta, slot.clone()));
            true
        }
        Entry::Vacant(e) => {
            e.insert(Vec::new());
            false
        }
    };
    if queued_behind {
        match slot.wait().await {
            Turn::Reply(r) => return r,
            Turn::Run => {}
        }
    }
    let baton = Baton {
        counters,
        key: counter_key,
    };
    let others: Vec<Waiter> = std::mem::take(
        counters
            .queued
            .borrow_mut()
            .get_mut(&baton.key)
            .expect("a key with a runner is present"),
    );
    let mut deltas = vec![delta];
    deltas.extend(others.iter().map(|(d, _)| *d));
    let (table, key) = &baton.key;
    let mut replies = add_all(store, table, key, &deltas).await.into_iter();
    let own = replies.next().expect("one reply per delta");
    for ((_, s), r) in others.iter().zip(replies) {
        s.fill(Turn::Reply(r));
    }
    drop(baton);
    own
}

/// Reads the item once, adds `deltas` in order and writes the result once, on the condition
/// that the item did not change meanwhile (again, if it did). One reply per delta: the value
/// after it, or the error that it alone met (an overflow skips that delta only, as running
/// them one by one would).
async fn add_all<S: Store>(store: &S, table: &str, key: &[u8], deltas: &[i64]) -> Vec<Vec<u8>> {
    let all = |r: Vec<u8>| vec![r; deltas.len()];
    for _ in 0..REDIS_INCR_ATTEMPTS_MAX {
        let (start, condition) = match get(store, table, key.to_vec()).await {
            Ok(None) => (0, Condition::IfAbsent),
            Ok(Some(item)) => match parse_i64(&item.value) {
                Some(n) => (n, Condition::IfVersion(item.version)),
                None => return all(reply::error("ERR value is not an integer or out of range")),
            },
            Err(e) => return all(reply::percore_error(&e)),
        };
        let mut value = start;
        let mut applied = 0;
        let mut replies = Vec::with_capacity(deltas.len());
        for d in deltas {
            match value.checked_add(*d) {
                Some(v) => {
                    value = v;
                    applied += 1;
                    replies.push(reply::integer(v));
                }
                None => replies.push(reply::error("ERR increment or decrement would overflow")),
            }
        }
        if applied == 0 {
            // Every delta overflowed: nothing to write.
            return replies;
        }
        let request = Request::Put(proto::Put {
            table: table.to_string(),
            key: Key::simple(key.to_vec()),
            value: value.to_string().into_bytes(),
            condition,
        });
        match call(store, request).await {
            Response::Written { .. } => return replies,
            Response::Error(Error::ConditionFailed { .. }) => continue,
            Response::Error(e) => return all(reply::percore_error(&e)),
            other => {
                return all(reply::error(&format!(
                    "ERR internal: unexpected answer {}",
                    other.name()
                )))
            }
        }
    }
    all(reply::error(&format!(
        "TRYAGAIN the counter changed under {REDIS_INCR_ATTEMPTS_MAX} attempts in a row"
    )))
}
