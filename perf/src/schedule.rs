//! The open-loop schedule: when each request is meant to start, and the tickets that hand
//! due requests to a bounded set of slots.
//!
//! Request `i` of a run at `rate` requests/s is meant to start at `start + i / rate`, whatever
//! happened before it. Its latency is measured from that instant, not from when it was
//! actually sent: a stall of the server, the network or the generator itself delays every
//! request that falls due during it, and each of those pays for it in the histogram (no
//! coordinated omission). With several cores, core `c` of `n` takes requests `c, c + n,
//! c + 2n, ...`, so the cores together follow one schedule.
//!
//! A core has a fixed number of slots (the in-flight bound). A pacer releases a ticket per
//! due request; an idle slot takes it and sends the request. When every slot is busy, due
//! tickets wait; they keep their intended start, so the wait shows as latency, and each one
//! that had to wait is counted.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// The intended start of every request of one core, as nanoseconds since the run's start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    first_ns: f64,
    period_ns: f64,
    /// No request starts at or after this instant.
    end_ns: u64,
}

impl Schedule {
    /// The schedule of core `core_index` of `core_count` when all cores together send
    /// `rate_per_s` requests per second until `end_ns`. `rate_per_s` must be positive.
    pub fn for_core(
        rate_per_s: f64,
        core_index: usize,
        core_count: usize,
        end_ns: u64,
    ) -> Schedule {
        debug_assert!(
            rate_per_s > 0.0 && rate_per_s.is_finite(),
            "rate {rate_per_s}"
        );
        debug_assert!(core_index < core_count);
        let gap_ns = 1e9 / rate_per_s;
        Schedule {
            first_ns: core_index as f64 * gap_ns,
            period_ns: core_count as f64 * gap_ns,
            end_ns,
        }
    }

    /// The intended start of this core's request `index`.
    #[inline]
    pub fn intended_ns(&self, index: u64) -> u64 {
        (self.first_ns + index as f64 * self.period_ns) as u64
    }

    /// How many requests are due at `now_ns`: those whose intended start is at or before it,
    /// and before the end.
    pub fn due(&self, now_ns: u64) -> u64 {
        let total = self.total();
        let now_ns = now_ns.min(self.end_ns.saturating_sub(1));
        if total == 0 || now_ns < self.intended_ns(0) {
            return 0;
        }
        // The float estimate may be one off either way; settle it on `intended_ns`.
        let estimate = ((now_ns as f64 - self.first_ns).max(0.0) / self.period_ns) as u64 + 1;
        let mut count = estimate.min(total);
        while count > 0 && self.intended_ns(count - 1) > now_ns {
            count -= 1;
        }
        while count < total && self.intended_ns(count) <= now_ns {
            count += 1;
        }
        count
    }

    /// How many requests this core sends in all: those intended before the end.
    pub fn total(&self) -> u64 {
        if self.end_ns == 0 || self.first_ns >= self.end_ns as f64 {
            return 0;
        }
        let last = (self.end_ns - 1) as f64;
        let mut count = ((last - self.first_ns) / self.period_ns) as u64 + 1;
        while count > 0 && self.intended_ns(count - 1) >= self.end_ns {
            count -= 1;
        }
        while self.intended_ns(count) < self.end_ns {
            count += 1;
        }
        count
    }
}

/// Hands due requests to idle slots. Slots are numbered `0..slots`; each waits in
/// [`Tickets::take`] until a ticket is released or the tickets are closed.
#[derive(Debug)]
pub struct Tickets {
    released: Cell<u64>,
    taken: Cell<u64>,
    closed: Cell<bool>,
    /// Slots waiting for a ticket, most recent last.
    idle: RefCell<Vec<usize>>,
    /// The waker of each waiting slot.
    wakers: RefCell<Vec<Option<Waker>>>,
}

impl Tickets {
    /// Tickets for `slots` slots; none released yet.
    pub fn new(slots: usize) -> Tickets {
        Tickets {
            released: Cell::new(0),
            taken: Cell::new(0),
            closed: Cell::new(false),
            idle: RefCell::new(Vec::with_capacity(slots)),
            wakers: RefCell::new(vec![None; slots]),
        }
    }

    /// Releases `count` more tickets and wakes as many idle slots. Returns how many of them
    /// found no idle slot: they wait for a busy slot to finish (the in-flight bound was hit).
    pub fn release(&self, count: u64) -> u64 {
        self.released.set(self.released.get().saturating_add(count));
        let mut idle = self.idle.borrow_mut();
        let mut wakers = self.wakers.borrow_mut();
        let woken = (idle.len() as u64).min(count);
        for _ in 0..woken {
            let slot = idle.pop().expect("counted above");
            if let Some(waker) = wakers[slot].take() {
                waker.wake();
            }
        }
        count - woken
    }

    /// No more tickets: every waiting slot gets `None`, and so does every later `take`.
    /// Returns how many released tickets were never taken.
    pub fn close(&self) -> u64 {
        self.closed.set(true);
        let mut idle = self.idle.borrow_mut();
        let mut wakers = self.wakers.borrow_mut();
        for slot in idle.drain(..) {
            if let Some(waker) = wakers[slot].take() {
                waker.wake();
            }
        }
        self.untaken()
    }

    /// Tickets released but not taken yet.
    pub fn untaken(&self) -> u64 {
        if self.closed.get() && self.released.get() == u64::MAX {
            return 0; // an unlimited run (as fast as possible) leaves nothing behind
        }
        self.released.get() - self.taken.get()
    }

    /// Tickets released so far.
    pub fn released(&self) -> u64 {
        self.released.get()
    }

    /// Slots waiting for a ticket now.
    pub fn idle_slots(&self) -> usize {
        self.idle.borrow().len()
    }

    /// Waits for the next ticket for slot `slot`: its index, or `None` once closed.
    pub fn take(&self, slot: usize) -> Take<'_> {
        Take {
            tickets: self,
            slot,
        }
    }
}

/// The future of [`Tickets::take`].
#[derive(Debug)]
pub struct Take<'a> {
    tickets: &'a Tickets,
    slot: usize,
}

impl Future for Take<'_> {
    type Output = Option<u64>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u64>> {
        let tickets = self.tickets;
        if tickets.closed.get() {
            return Poll::Ready(None);
        }
        let taken = tickets.taken.get();
        if taken < tickets.released.get() {
            tickets.taken.set(taken + 1);
            let mut wakers = tickets.wakers.borrow_mut();
            if wakers[self.slot].take().is_some() {
                // Woken by something else while registered: leave the idle list.
                tickets.idle.borrow_mut().retain(|&slot| slot != self.slot);
            }
            return Poll::Ready(Some(taken));
        }
        let mut wakers = tickets.wakers.borrow_mut();
        if wakers[self.slot].replace(cx.waker().clone()).is_none() {
            tickets.idle.borrow_mut().push(self.slot);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    #[test]
    fn intended_starts_follow_the_rate() {
        let schedule = Schedule::for_core(1_000.0, 0, 1, 1_000_000_000);
        assert_eq!(schedule.intended_ns(0), 0);
        assert_eq!(schedule.intended_ns(1), 1_000_000);
        assert_eq!(schedule.intended_ns(999), 999_000_000);
        assert_eq!(schedule.total(), 1_000);
        assert_eq!(schedule.due(0), 1);
        assert_eq!(schedule.due(999_999), 1);
        assert_eq!(schedule.due(1_000_000), 2);
        assert_eq!(schedule.due(5_000_000_000), 1_000);
    }

    #[test]
    fn cores_interleave_into_one_schedule() {
        let end_ns = 10_000_000;
        let mut all: Vec<u64> = (0..3)
            .flat_map(|core| {
                let schedule = Schedule::for_core(3_000.0, core, 3, end_ns);
                (0..schedule.total()).map(move |i| schedule.intended_ns(i))
            })
            .collect();
        all.sort_unstable();
        assert_eq!(all.len(), 30);
        for (i, &start) in all.iter().enumerate() {
            let expected = (i as f64 * 1e9 / 3_000.0) as i64;
            assert!(
                (start as i64 - expected).abs() <= 1,
                "{i}: {start} vs {expected}"
            );
        }
    }

    #[test]
    fn due_agrees_with_intended_at_every_boundary() {
        // An awkward rate, so that float rounding is exercised.
        let schedule = Schedule::for_core(7_777.7, 1, 2, 50_000_000);
        let total = schedule.total();
        assert!(total > 0);
        for i in 0..total {
            let at = schedule.intended_ns(i);
            assert_eq!(schedule.due(at), i + 1, "at request {i}'s start");
            if at > 0 {
                assert_eq!(schedule.due(at - 1), i, "just before request {i}");
            }
        }
        assert!(schedule.intended_ns(total) >= 50_000_000);
        assert_eq!(Schedule::for_core(1.0, 0, 1, 0).total(), 0);
    }

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn poll_take(tickets: &Tickets, slot: usize, waker: &Waker) -> Poll<Option<u64>> {
        let mut take = tickets.take(slot);
        Pin::new(&mut take).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn due_tickets_beyond_the_idle_slots_are_counted() {
        let tickets = Tickets::new(2);
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        assert_eq!(poll_take(&tickets, 0, &waker), Poll::Pending);
        assert_eq!(poll_take(&tickets, 1, &waker), Poll::Pending);
        assert_eq!(tickets.idle_slots(), 2);
        // Three tickets, two idle slots: one has to wait.
        assert_eq!(tickets.release(3), 1);
        assert_eq!(counter.0.load(Ordering::Relaxed), 2);
        assert_eq!(poll_take(&tickets, 0, &waker), Poll::Ready(Some(0)));
        assert_eq!(poll_take(&tickets, 1, &waker), Poll::Ready(Some(1)));
        assert_eq!(poll_take(&tickets, 0, &waker), Poll::Ready(Some(2)));
        assert_eq!(poll_take(&tickets, 0, &waker), Poll::Pending);
        assert_eq!(tickets.release(1), 0);
        assert_eq!(
            tickets.release(1),
            1,
            "slot 0 was woken already; slot 1 is busy"
        );
        assert_eq!(tickets.close(), 2);
        assert_eq!(poll_take(&tickets, 0, &waker), Poll::Ready(None));
    }

    #[test]
    fn unlimited_tickets_leave_nothing_untaken() {
        let tickets = Tickets::new(1);
        tickets.release(u64::MAX);
        let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
        assert_eq!(poll_take(&tickets, 0, &waker), Poll::Ready(Some(0)));
        assert_eq!(tickets.close(), 0);
    }
}
