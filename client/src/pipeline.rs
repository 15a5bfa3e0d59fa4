//! The requests in flight on one connection, matched to their answers by request id.
//!
//! Sans-I/O: the connection's tasks drive it. A request gets the next id when it is queued;
//! the answer, in any order, finds its waiter by that id. A caller that gives up (a
//! timeout) *abandons* its request: the slot stays taken until the answer arrives, because
//! the server is still working on it and the in-flight bound is about the server's work;
//! the late answer is then dropped quietly. An answer naming an id that is not in flight
//! means the stream cannot be trusted.

use rustc_hash::FxHashMap;

use crate::limits::{ABANDONED_PER_CONNECTION_MAX, REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX};
use crate::ProtocolError;

/// One request in flight.
#[derive(Debug)]
struct Slot<W> {
    waiter: W,
    abandoned: bool,
}

/// What the answer to a request in flight finds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Finished<W> {
    /// The waiter registered with the request.
    pub(crate) waiter: W,
    /// Whether its caller gave up: then the answer goes nowhere.
    pub(crate) abandoned: bool,
}

/// What abandoning a request leads to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Abandoned {
    /// Nothing more: the slot waits for its late answer.
    Fine,
    /// Too many abandoned requests wait on this connection: close it.
    TooMany,
    /// The request was not in flight (answered meanwhile, or the connection was drained).
    NotInFlight,
}

/// The requests in flight on one connection.
#[derive(Debug)]
pub(crate) struct Pipeline<W> {
    next_request_id: u64,
    /// By id. Fx, not SipHash: the ids are ours (no one can choose colliding ones), and
    /// this map is touched twice per request.
    slots: FxHashMap<u64, Slot<W>>,
    abandoned: usize,
}

impl<W> Pipeline<W> {
    /// No request in flight; the first gets id 1.
    pub(crate) fn new() -> Pipeline<W> {
        Pipeline {
            next_request_id: 1,
            slots: FxHashMap::with_capacity_and_hasher(
                REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX,
                Default::default(),
            ),
            abandoned: 0,
        }
    }

    /// Requests in flight, abandoned ones included.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len()
    }

    /// Whether another request may start. Callers hold a permit of the connection's room
    /// semaphore, so this always holds when they start one.
    pub(crate) fn has_room(&self) -> bool {
        self.slots.len() < REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX
    }

    /// Registers a request and returns its id.
    pub(crate) fn start(&mut self, waiter: W) -> u64 {
        debug_assert!(self.has_room(), "a request started on a full connection");
        let id = self.next_request_id;
        // u64 ids never wrap in practice (2^64 requests); skip 0 anyway, which some
        // servers use for answers to frames they could not read.
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        let previous = self.slots.insert(
            id,
            Slot {
                waiter,
                abandoned: false,
            },
        );
        debug_assert!(previous.is_none(), "request id {id} reused while in flight");
        self.check_invariants();
        id
    }

    /// The caller of request `id` gave up waiting.
    pub(crate) fn abandon(&mut self, id: u64) -> Abandoned {
        let Some(slot) = self.slots.get_mut(&id) else {
            return Abandoned::NotInFlight;
        };
        if !slot.abandoned {
            slot.abandoned = true;
            self.abandoned += 1;
        }
        self.check_invariants();
        if self.abandoned > ABANDONED_PER_CONNECTION_MAX {
            Abandoned::TooMany
        } else {
            Abandoned::Fine
        }
    }

    /// Abandons each request in flight, not abandoned yet, whose waiter `expired` picks,
    /// and shows its waiter to `each` (the timeout sweep fails them); says whether too many
    /// abandoned requests now wait on this connection.
    pub(crate) fn abandon_where(
        &mut self,
        mut expired: impl FnMut(&W) -> bool,
        mut each: impl FnMut(&W),
    ) -> Abandoned {
        for slot in self.slots.values_mut() {
            if !slot.abandoned && expired(&slot.waiter) {
                slot.abandoned = true;
                self.abandoned += 1;
                each(&slot.waiter);
            }
        }
        self.check_invariants();
        if self.abandoned > ABANDONED_PER_CONNECTION_MAX {
            Abandoned::TooMany
        } else {
            Abandoned::Fine
        }
    }

    /// The answer to request `id` arrived: its waiter, or a protocol error if no such
    /// request is in flight.
    pub(crate) fn finish(&mut self, id: u64) -> Result<Finished<W>, ProtocolError> {
        let slot = self
            .slots
            .remove(&id)
            .ok_or(ProtocolError::UnknownRequestId { request_id: id })?;
        if slot.abandoned {
            self.abandoned -= 1;
        }
        self.check_invariants();
        Ok(Finished {
            waiter: slot.waiter,
            abandoned: slot.abandoned,
        })
    }

    /// The connection died: every request in flight, to be failed. Ids keep counting up,
    /// so that a stray late answer can never match a later request.
    pub(crate) fn drain(&mut self) -> Vec<Finished<W>> {
        self.abandoned = 0;
        self.slots
            .drain()
            .map(|(_, s)| Finished {
                waiter: s.waiter,
                abandoned: s.abandoned,
            })
            .collect()
    }

    fn check_invariants(&self) {
        debug_assert!(self.slots.len() <= REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX);
        debug_assert_eq!(
            self.abandoned,
            self.slots.values().filter(|s| s.abandoned).count()
        );
        debug_assert!(!self.slots.contains_key(&self.next_request_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandoning_by_a_predicate_skips_the_abandoned_and_counts_the_rest() {
        let mut p = Pipeline::new();
        let ids: Vec<u64> = (0..6).map(|i| p.start(i)).collect();
        assert_eq!(p.abandon(ids[1]), Abandoned::Fine);
        let mut seen = Vec::new();
        let outcome = p.abandon_where(|w| *w < 3, |w| seen.push(*w));
        assert_eq!(outcome, Abandoned::Fine);
        seen.sort();
        assert_eq!(seen, vec![0, 2], "request 1 was abandoned already");
        // A second sweep finds nothing new; late answers are still taken, and dropped.
        assert_eq!(
            p.abandon_where(|_| false, |_| unreachable!()),
            Abandoned::Fine
        );
        assert!(p.finish(ids[0]).unwrap().abandoned);
        assert!(!p.finish(ids[3]).unwrap().abandoned);
        assert_eq!(p.in_flight(), 4);
    }

    #[test]
    fn abandoning_too_many_by_a_predicate_says_so() {
        let mut p = Pipeline::new();
        for i in 0..=ABANDONED_PER_CONNECTION_MAX {
            p.start(i);
        }
        assert_eq!(p.abandon_where(|_| true, |_| {}), Abandoned::TooMany);
    }

    #[test]
    fn answers_in_any_order_find_their_waiters() {
        let mut p = Pipeline::new();
        let ids: Vec<u64> = (0..10).map(|i| p.start(format!("req{i}"))).collect();
        assert_eq!(ids, (1..=10).collect::<Vec<_>>());
        for &i in &[7usize, 0, 9, 3, 1, 2, 8, 4, 6, 5] {
            let f = p.finish(ids[i]).unwrap();
            assert_eq!(f.waiter, format!("req{i}"));
            assert!(!f.abandoned);
        }
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn an_unknown_or_repeated_id_is_a_protocol_error() {
        let mut p = Pipeline::new();
        let id = p.start(());
        assert_eq!(
            p.finish(id + 1),
            Err(ProtocolError::UnknownRequestId { request_id: id + 1 })
        );
        p.finish(id).unwrap();
        assert_eq!(
            p.finish(id),
            Err(ProtocolError::UnknownRequestId { request_id: id })
        );
    }

    #[test]
    fn an_abandoned_request_keeps_its_slot_until_its_late_answer() {
        let mut p = Pipeline::new();
        let a = p.start("a");
        let b = p.start("b");
        assert_eq!(p.abandon(a), Abandoned::Fine);
        assert_eq!(
            p.abandon(a),
            Abandoned::Fine,
            "abandoning twice counts once"
        );
        assert_eq!(p.in_flight(), 2);
        let late = p.finish(a).unwrap();
        assert!(late.abandoned);
        assert_eq!(p.in_flight(), 1);
        assert_eq!(p.abandon(a), Abandoned::NotInFlight);
        assert!(!p.finish(b).unwrap().abandoned);
    }

    #[test]
    fn too_many_abandoned_requests_close_the_connection() {
        let mut p = Pipeline::new();
        let ids: Vec<u64> = (0..=ABANDONED_PER_CONNECTION_MAX)
            .map(|_| p.start(()))
            .collect();
        for &id in &ids[..ABANDONED_PER_CONNECTION_MAX] {
            assert_eq!(p.abandon(id), Abandoned::Fine);
        }
        assert_eq!(
            p.abandon(ids[ABANDONED_PER_CONNECTION_MAX]),
            Abandoned::TooMany
        );
    }

    #[test]
    fn the_pipeline_fills_at_its_bound() {
        let mut p = Pipeline::new();
        for _ in 0..REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX {
            assert!(p.has_room());
            p.start(());
        }
        assert!(!p.has_room());
        p.finish(1).unwrap();
        assert!(p.has_room());
    }

    #[test]
    fn drained_ids_are_never_reused() {
        let mut p = Pipeline::new();
        let a = p.start("a");
        p.abandon(a);
        let drained = p.drain();
        assert_eq!(drained.len(), 1);
        assert!(drained[0].abandoned);
        let b = p.start("b");
        assert!(b > a);
        assert_eq!(
            p.finish(a),
            Err(ProtocolError::UnknownRequestId { request_id: a })
        );
        assert_eq!(p.abandon(b), Abandoned::Fine);
    }
}
