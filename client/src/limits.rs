//! Every limit and fixed pace of the client, in one place, each with its unit last and the
//! reason for its value.

/// Requests one connection has in flight (sent or queued to send, not yet answered) at
/// most. A caller that finds its connection full waits for room (see
/// [`crate::Client::call`]): the wait is the back-pressure, never an unbounded queue. It is
/// kept under the node's own per-connection bound (1024), so that the node never stops
/// reading a connection because of this client.
pub const REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX: usize = 512;

/// Requests whose caller gave up (timed out) but whose answer has not arrived, on one
/// connection, before the connection is closed and replaced. Such a request still holds
/// its slot (the server still works on it); a connection collecting many is one the server
/// has stopped answering.
pub const ABANDONED_PER_CONNECTION_MAX: usize = REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX / 4;

/// Bytes one socket read asks for: a burst of pipelined answers in one system call.
pub const SOCKET_READ_BYTES: usize = 64 * 1024;

/// The longest wait a `Throttled` hint can impose on one retry. A longer hint is cut to this,
/// so that a confused server cannot park a caller for minutes.
pub const THROTTLE_WAIT_MS_MAX: u64 = 10_000;

/// Attempts one call makes at most, whatever the configuration says: bounds the time a
/// call can take to `ATTEMPTS_MAX * (timeout + backoff)`.
pub const ATTEMPTS_MAX: u32 = 100;

/// Connections one client keeps at most. Each costs two tasks and two buffers.
pub const CONNECTIONS_MAX: usize = 1024;

const _: () = assert!(REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX <= 1024);
const _: () = assert!(ABANDONED_PER_CONNECTION_MAX >= 1);

/// Periods of a connection's timeout sweep per request timeout: the sweep wakes every
/// `request_timeout / 4` and fails requests that have seen more than 4 sweeps, so a request
/// times out after 1 to 1.25 times the timeout. More periods would be closer to the timeout and
/// wake an idle connection more often.
pub const TIMEOUT_SWEEP_PERIODS: u32 = 4;
