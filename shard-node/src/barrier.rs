//! A node-wide barrier that executors await without blocking their thread.
//!
//! Used twice: every core waits until every core has recovered before any listens (so that
//! a request forwarded to a peer never waits on a peer still replaying its WAL), and every
//! core waits, on shutdown, until every core has drained its connections before any closes
//! its WAL (a peer's last requests may still be forwarded to it). Waiting polls an atomic
//! every millisecond: it happens twice in a process's life, so a mesh round would be more
//! code for nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How often a waiting core looks at the barrier.
const BARRIER_POLL_MS: u64 = 1;

/// Counts arrivals; fails for everyone if any core fails.
#[derive(Debug, Default)]
pub struct Barrier {
    parties: usize,
    arrived: AtomicUsize,
    failed: AtomicBool,
}

/// Another core failed before reaching the barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerFailed;

impl Barrier {
    /// A barrier for `parties` cores.
    pub fn new(parties: usize) -> Barrier {
        Barrier {
            parties,
            arrived: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// Says this core will never arrive: the others stop waiting.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Arrives and waits for the others (on a glommio executor).
    pub async fn arrive_and_wait(&self) -> Result<(), PeerFailed> {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        loop {
            if self.failed.load(Ordering::Acquire) {
                return Err(PeerFailed);
            }
            if self.arrived.load(Ordering::Acquire) >= self.parties {
                return Ok(());
            }
            glommio::timer::sleep(Duration::from_millis(BARRIER_POLL_MS)).await;
        }
    }
}
