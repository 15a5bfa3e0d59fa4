//! When a failed attempt may be made again, and after how long.
//!
//! Sans-I/O: [`RetryPolicy::decide`] looks at the request, the attempt number and how the
//! attempt failed, and says give up or wait this long. The rule is that a retry must never
//! do a write twice:
//!
//! - a server error that says nothing was done (`Throttled`, `Unavailable`, `WrongOwner`;
//!   [`proto::Error::is_retryable`]) may be retried for any request; `Throttled` waits for
//!   its hint, the others back off;
//! - a request that never left the client (no connection, no room before the timeout) may
//!   be retried for any request;
//! - an attempt whose outcome is unknown (the connection broke or timed out after the bytes
//!   were queued) is retried only for requests that are idempotent
//!   ([`proto::Request::is_idempotent`]: reads, and writes whose condition makes a second
//!   application fail harmlessly). A plain put is never sent again after an unknown
//!   outcome: the caller gets the error and decides;
//! - every other error is the answer.

use std::time::Duration;

use crate::limits::{ATTEMPTS_MAX, THROTTLE_WAIT_MS_MAX};
use crate::{Error, ProtocolError};

/// Exponential back-off with jitter between attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failed attempt (before jitter).
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(500),
        }
    }
}

impl Backoff {
    /// The wait after `failed_attempts` failed attempts (1 or more): `initial` doubled per
    /// failure up to `max`, then "equal jitter" (half fixed, half drawn from `jitter`), so
    /// that callers that failed together do not retry together.
    pub fn delay(&self, failed_attempts: u32, jitter: u64) -> Duration {
        let doublings = failed_attempts.saturating_sub(1).min(30);
        let full = self
            .initial
            .saturating_mul(1u32 << doublings)
            .min(self.max)
            .max(Duration::from_micros(1));
        let half_us = (full.as_micros() / 2) as u64;
        Duration::from_micros(half_us + jitter % (half_us + 1))
    }
}

/// How an attempt failed, as the policy needs to know it.
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    /// The error.
    pub error: &'a Error,
    /// Whether the request's bytes were handed to a connection (then, unless the server
    /// answered, its outcome is unknown).
    pub sent: bool,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Return the error to the caller.
    GiveUp,
    /// Try again after this long.
    RetryAfter(Duration),
}

/// The retry rules of one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call at most, the first included (1: never retry); capped at
    /// [`ATTEMPTS_MAX`].
    pub max_attempts: u32,
    /// The waits between attempts.
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// Decides after attempt number `attempt` (1 for the first) of a request failed.
    /// `idempotent` is [`proto::Request::is_idempotent`] of the request; `jitter` is any
    /// varying number (the policy draws its jitter from it, staying deterministic).
    pub fn decide(
        &self,
        attempt: u32,
        idempotent: bool,
        failure: Failure<'_>,
        jitter: u64,
    ) -> Decision {
        debug_assert!(attempt >= 1);
        if attempt >= self.max_attempts.clamp(1, ATTEMPTS_MAX) {
            return Decision::GiveUp;
        }
        let backoff = Decision::RetryAfter(self.backoff.delay(attempt, jitter));
        match failure.error {
            Error::Server(proto::Error::Throttled { retry_after_ms }) => Decision::RetryAfter(
                Duration::from_millis((*retry_after_ms as u64).min(THROTTLE_WAIT_MS_MAX)),
            ),
            Error::Server(e) if e.is_retryable() => backoff,
            Error::Server(_) => Decision::GiveUp,
            // The request was refused before it could be sent: sending it again changes
            // nothing.
            Error::FrameTooLarge { .. } => Decision::GiveUp,
            // The server answered, with the wrong kind of answer: asking again would
            // get the same.
            Error::Protocol(ProtocolError::UnexpectedResponse { .. }) => Decision::GiveUp,
            // Otherwise the outcome is unknown (a bad answer to this very request
            // included: the server may have done it).
            Error::Io(_) | Error::Timeout | Error::Closed | Error::Protocol(_) => {
                if !failure.sent || idempotent {
                    backoff
                } else {
                    Decision::GiveUp
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(100),
            },
        }
    }

    fn decide(error: Error, sent: bool, idempotent: bool) -> Decision {
        policy().decide(
            1,
            idempotent,
            Failure {
                error: &error,
                sent,
            },
            0,
        )
    }

    fn retries(d: Decision) -> bool {
        matches!(d, Decision::RetryAfter(_))
    }

    fn io_error() -> Error {
        io::Error::new(io::ErrorKind::ConnectionReset, "reset").into()
    }

    #[test]
    fn a_plain_write_is_never_retried_after_an_unknown_outcome() {
        for e in [
            io_error(),
            Error::Timeout,
            Error::Closed,
            Error::Protocol(ProtocolError::UnknownRequestId { request_id: 3 }),
            Error::Protocol(ProtocolError::BadResponse(proto::Error::bad_frame("crc"))),
        ] {
            assert_eq!(decide(e.clone(), true, false), Decision::GiveUp, "{e}");
            assert!(retries(decide(e.clone(), true, true)), "idempotent: {e}");
            assert!(retries(decide(e.clone(), false, false)), "not sent: {e}");
        }
    }

    #[test]
    fn idempotence_follows_the_request() {
        use proto::{Condition, Key, Put, Request};
        let put = |condition| {
            Request::Put(Put {
                table: "t1x".into(),
                key: Key::simple("k"),
                value: b"v".to_vec(),
                condition,
            })
        };
        assert!(!put(Condition::None).is_idempotent());
        assert!(!put(Condition::IfPresent).is_idempotent());
        assert!(put(Condition::IfAbsent).is_idempotent());
        assert!(put(Condition::IfVersion(4)).is_idempotent());
    }

    #[test]
    fn server_errors_that_did_nothing_are_retried_for_any_request() {
        let wrong_owner = proto::Error::WrongOwner {
            owner: proto::Owner {
                node: 1,
                core: 2,
                addr: "127.0.0.1:1".into(),
            },
            epoch: 3,
        };
        for e in [proto::Error::unavailable("starting"), wrong_owner] {
            assert!(retries(decide(Error::Server(e), true, false)));
        }
        assert_eq!(
            decide(
                Error::Server(proto::Error::Throttled { retry_after_ms: 42 }),
                true,
                false
            ),
            Decision::RetryAfter(Duration::from_millis(42))
        );
        assert_eq!(
            decide(
                Error::Server(proto::Error::Throttled {
                    retry_after_ms: u32::MAX
                }),
                true,
                false
            ),
            Decision::RetryAfter(Duration::from_millis(THROTTLE_WAIT_MS_MAX))
        );
    }

    #[test]
    fn answers_are_final() {
        for e in [
            proto::Error::NotFound,
            proto::Error::ConditionFailed {
                current_version: Some(1),
            },
            proto::Error::internal("disk"),
            proto::Error::invalid("empty key"),
            proto::Error::bad_frame("crc"),
        ] {
            assert_eq!(
                decide(Error::Server(e.clone()), true, true),
                Decision::GiveUp,
                "{e}"
            );
        }
        assert_eq!(
            decide(
                Error::FrameTooLarge {
                    payload_bytes: 1,
                    max: 0
                },
                false,
                true
            ),
            Decision::GiveUp
        );
    }

    #[test]
    fn attempts_are_bounded() {
        let p = policy();
        let e = Error::Timeout;
        let f = Failure {
            error: &e,
            sent: true,
        };
        assert!(retries(p.decide(4, true, f, 0)));
        assert_eq!(p.decide(5, true, f, 0), Decision::GiveUp);
        let once = RetryPolicy {
            max_attempts: 0,
            ..p
        };
        assert_eq!(once.decide(1, true, f, 0), Decision::GiveUp);
    }

    #[test]
    fn backoff_doubles_up_to_its_max_with_jitter_inside_the_upper_half() {
        let b = policy().backoff;
        assert_eq!(b.delay(1, 0), Duration::from_millis(5));
        assert_eq!(b.delay(1, 5000), Duration::from_millis(10));
        assert_eq!(b.delay(2, 0), Duration::from_millis(10));
        assert_eq!(b.delay(3, 0), Duration::from_millis(20));
        assert_eq!(b.delay(40, 0), Duration::from_millis(50));
        for jitter in [1u64, 77, 12345, u64::MAX] {
            let d = b.delay(9, jitter);
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        }
    }
}
