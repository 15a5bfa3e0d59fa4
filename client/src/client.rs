//! The async client: a pool of pipelined connections, retries where they are safe, typed
//! operations.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use glommio::sync::{Semaphore, StaticPermit};
use proto::limits::FRAME_PAYLOAD_BYTES_MAX;
use proto::{
    Condition, Consistency, CreateTable, Frame, Item, Key, Query, Request, Response, Scan,
    TableDescription, WriteOp, WriteOutcome,
};

use crate::conn::{Conn, Then};
use crate::limits::CONNECTIONS_MAX;
use crate::ops::{self, BatchItems, Deleted, QueryPage, ScanPage, TablesPage};
use crate::retry::{Backoff, Decision, Failure, RetryPolicy};
use crate::{Error, ProtocolError, Result};

/// How a [`Client`] connects and retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The servers' addresses (a node's shared port, or its cores' own ports). Addresses,
    /// not host names: resolving a name is a blocking call a core must not make.
    pub addrs: Vec<SocketAddr>,
    /// Connections in the pool (1 to [`CONNECTIONS_MAX`]); connection `i` goes to
    /// `addrs[i % addrs.len()]`, or the next address that answers.
    pub connections: usize,
    /// How long one attempt may take: waiting for room on a connection, sending, and the
    /// answer. Also the connect timeout.
    pub request_timeout: Duration,
    /// Attempts per call, the first included (1: never retry).
    pub max_attempts: u32,
    /// The waits between attempts.
    pub backoff: Backoff,
}

impl ClientConfig {
    /// A configuration for these addresses: one connection per address, a 5 s request
    /// timeout, 4 attempts, the default back-off.
    pub fn new(addrs: Vec<SocketAddr>) -> ClientConfig {
        ClientConfig {
            connections: addrs.len().max(1),
            addrs,
            request_timeout: Duration::from_secs(5),
            max_attempts: 4,
            backoff: Backoff::default(),
        }
    }
}

/// One connection of the pool, connected lazily again after it dies.
struct PoolSlot {
    conn: RefCell<Option<Rc<Conn>>>,
    /// One connect at a time per slot: callers that find the slot dead wait for the
    /// connect already under way instead of opening their own.
    connecting: Rc<Semaphore>,
    /// The address this slot tries first.
    first_addr: usize,
}

impl PoolSlot {
    /// The slot's connection, if it is live.
    fn live(&self) -> Option<Rc<Conn>> {
        self.conn
            .borrow()
            .as_ref()
            .filter(|c| !c.is_closed())
            .cloned()
    }
}

struct Inner {
    config: ClientConfig,
    policy: RetryPolicy,
    slots: Vec<PoolSlot>,
    next_slot: Cell<usize>,
    jitter: Cell<u64>,
}

/// An async client of percore's native protocol, for a glommio executor.
///
/// Cheap to clone (an `Rc`); single-threaded: each executor makes its own. Each
/// connection of its pool carries many requests at once ([`REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`]
/// at most; further calls wait for room), answered in any order; requests queued together
/// go out in one write. Failed attempts are retried only where that cannot do a write twice
/// (see [`crate::retry`]). Dropping the last clone closes the connections.
///
/// [`REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`]: crate::limits::REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

impl Client {
    /// Opens the pool's connections. Fails if a connection cannot be opened to any of the
    /// addresses, or if the configuration has no address or a pool size out of range.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        if config.addrs.is_empty() || config.connections == 0 {
            return Err(Error::from(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the client needs at least one address and one connection",
            )));
        }
        if config.connections > CONNECTIONS_MAX {
            return Err(Error::from(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} connections asked for; at most {CONNECTIONS_MAX} are allowed",
                    config.connections
                ),
            )));
        }
        let slots = (0..config.connections)
            .map(|i| PoolSlot {
                conn: RefCell::new(None),
                connecting: Rc::new(Semaphore::new(1)),
                first_addr: i % config.addrs.len(),
            })
            .collect();
        let client = Client {
            inner: Rc::new(Inner {
                policy: RetryPolicy {
                    max_attempts: config.max_attempts,
                    backoff: config.backoff,
                },
                config,
                slots,
                next_slot: Cell::new(0),
                jitter: Cell::new(0x9e37_79b9_7f4a_7c15),
            }),
        };
        for i in 0..client.inner.slots.len() {
            slot_conn(&client.inner, i).await?;
        }
        Ok(client)
    }

    /// The configuration the client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Requests in flight over all connections (abandoned ones included).
    pub fn in_flight(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter_map(|s| s.conn.borrow().as_ref().map(|c| c.in_flight()))
            .sum()
    }

    /// Sends a request and returns the server's answer; the server's error answer comes
    /// back as `Err(Error::Server)`, so an `Ok` is never `Response::Error`.
    ///
    /// Each attempt is bounded by the request timeout, the wait for room on a full
    /// connection included (an attempt queued at once, on a live connection with room, is
    /// bounded by that connection's timeout sweep instead: 1 to 1.25 times the timeout,
    /// with no timer of its own). Failed attempts are retried, up to `max_attempts`, when the
    /// server says it did nothing, when the request was never sent, or (only for
    /// [`Request::is_idempotent`] requests) when the outcome is unknown.
    pub async fn call(&self, request: Request) -> Result<Response> {
        let frame = proto::encode_request(0, &request, 0);
        let (header, payload) = frame.split_at(proto::HEADER_BYTES);
        let header: &[u8; proto::HEADER_BYTES] = header.try_into().expect("a whole header");
        let answer = self
            .call_frame(header, payload, request.is_idempotent())
            .await?;
        // `call_frame` checked the frame (checksum, `rkyv::access`) already.
        proto::decode_checked_response(&answer)
            .map_err(|e| Error::Protocol(ProtocolError::BadResponse(e)))
    }

    /// Sends a request frame whose payload is already encoded (a router relaying a
    /// client's frame) and returns the answer's frame, its payload checked (version, kind,
    /// checksum, `rkyv::access`) but not decoded. `header` is the frame's encoded header
    /// ([`proto::FrameHeader::encode`]); its request id is replaced by the connection's
    /// own. Errors, attempts and retries are those of [`Client::call`]: an error answer
    /// comes back as `Err(Error::Server)`; `idempotent` must say what
    /// [`Request::is_idempotent`] says of the payload.
    pub async fn call_frame(
        &self,
        header: &[u8; proto::HEADER_BYTES],
        payload: &[u8],
        idempotent: bool,
    ) -> Result<Frame> {
        if payload.len() > FRAME_PAYLOAD_BYTES_MAX {
            return Err(Error::FrameTooLarge {
                payload_bytes: payload.len(),
                max: FRAME_PAYLOAD_BYTES_MAX,
            });
        }
        let mut attempt = 1;
        loop {
            let sent = Cell::new(false);
            let timeout = self.inner.config.request_timeout;
            let result = match self.ready() {
                // Queued at once: the connection's sweep bounds the wait for the answer.
                Some((conn, room)) => {
                    let queued = conn.call_with_room(room, header, payload, &sent);
                    check_answer(queued.await, Checksums::All)
                }
                None => {
                    future::or(self.attempt(header, payload, &sent), async {
                        glommio::timer::sleep(timeout).await;
                        Err(Error::Timeout)
                    })
                    .await
                }
            };
            let error = match result {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            let failure = Failure {
                error: &error,
                sent: sent.get(),
            };
            match self
                .inner
                .policy
                .decide(attempt, idempotent, failure, self.next_jitter())
            {
                Decision::GiveUp => return Err(error),
                Decision::RetryAfter(wait) => {
                    if !wait.is_zero() {
                        glommio::timer::sleep(wait).await;
                    }
                }
            }
            attempt += 1;
        }
    }

    /// Queues a request frame now, if a connection can take it without waiting (live, with
    /// room), and calls `then` with the answer's frame, checked as [`Client::call_frame`]
    /// checks it (but its checksum only if it is an error answer: the frame is meant to be
    /// passed on unchanged to a client that checks it), or with why none came: the
    /// connection failed (the outcome is unknown) or the answer took longer than the
    /// request timeout (1 to 1.25 times it). No task and no
    /// timer of its own; one attempt, never retried. Otherwise (no connection ready, or a
    /// payload over the frame limit) nothing is sent and `then` comes back, for the caller
    /// to take the path that waits ([`Client::call_frame`]).
    ///
    /// What a router's relay uses: its answer goes straight from this client's reader to
    /// the router's client connection.
    pub fn try_call_frame_then(
        &self,
        header: &[u8; proto::HEADER_BYTES],
        payload: &[u8],
        then: Then,
    ) -> std::result::Result<(), Then> {
        if payload.len() > FRAME_PAYLOAD_BYTES_MAX {
            return Err(then);
        }
        let Some((conn, room)) = self.ready() else {
            return Err(then);
        };
        conn.call_then(room, header, payload, then)
    }

    /// One attempt: the answer's frame, checked, or the server's error answer as
    /// `Err(Error::Server)` (which the retry policy reads).
    async fn attempt(
        &self,
        header: &[u8; proto::HEADER_BYTES],
        payload: &[u8],
        sent: &Cell<bool>,
    ) -> Result<Frame> {
        let conn = self.pick().await?;
        check_answer(conn.call(header, payload, sent).await, Checksums::All)
    }

    /// The next connection in turn, if it is live and has room now, with its room taken:
    /// a request can be queued on it without waiting. Otherwise `None`, and nothing
    /// changes (the caller takes the path that waits, under a timer).
    fn ready(&self) -> Option<(Rc<Conn>, StaticPermit)> {
        let n = self.inner.slots.len();
        let at = self.inner.next_slot.get();
        let conn = self.inner.slots[at].live()?;
        let room = conn.try_room()?;
        self.inner.next_slot.set((at + 1) % n);
        Some((conn, room))
    }

    /// A live connection: the next slot in turn. A dead slot is connected again in the
    /// background while another live connection takes the request; only when none is
    /// live does the caller wait for the connect.
    async fn pick(&self) -> Result<Rc<Conn>> {
        let n = self.inner.slots.len();
        let start = self.inner.next_slot.get();
        self.inner.next_slot.set((start + 1) % n);
        if let Some(c) = self.inner.slots[start].live() {
            return Ok(c);
        }
        if let Some(c) = (1..n).find_map(|k| self.inner.slots[(start + k) % n].live()) {
            if self.inner.slots[start].connecting.available() > 0 {
                let inner = Rc::downgrade(&self.inner);
                glommio::spawn_local(async move {
                    if let Some(inner) = inner.upgrade() {
                        // A failure here is seen again, and returned, by a later call.
                        let _ = slot_conn(&inner, start).await;
                    }
                })
                .detach();
            }
            return Ok(c);
        }
        // Boxed: connecting is a large future that every call would otherwise carry.
        Box::pin(slot_conn(&self.inner, start)).await
    }

    fn next_jitter(&self) -> u64 {
        // xorshift64: cheap, and good enough to spread retries apart.
        let mut x = self.inner.jitter.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.inner.jitter.set(x);
        x
    }

    /// Creates a table.
    pub async fn create_table(&self, table: CreateTable) -> Result<TableDescription> {
        ops::table(self.call(Request::CreateTable(table)).await)
    }

    /// Describes a table.
    pub async fn describe_table(&self, name: &str) -> Result<TableDescription> {
        ops::table(
            self.call(Request::DescribeTable {
                name: name.to_owned(),
            })
            .await,
        )
    }

    /// One page of table names, after `start_after`; `limit` 0 takes the server's page size.
    pub async fn list_tables(&self, start_after: Option<&str>, limit: u32) -> Result<TablesPage> {
        ops::tables(
            self.call(Request::ListTables {
                start_after: start_after.map(str::to_owned),
                limit,
            })
            .await,
        )
    }

    /// Deletes a table and every item in it.
    pub async fn delete_table(&self, name: &str) -> Result<TableDescription> {
        ops::table(
            self.call(Request::DeleteTable {
                name: name.to_owned(),
            })
            .await,
        )
    }

    /// Writes an item unconditionally; returns its version. Never retried after an
    /// unknown outcome.
    pub async fn put(&self, table: &str, key: Key, value: Vec<u8>) -> Result<u64> {
        self.put_if(table, key, value, Condition::None).await
    }

    /// Writes an item if `condition` holds; returns its version, or
    /// `Err(Error::Server(ConditionFailed))`.
    pub async fn put_if(
        &self,
        table: &str,
        key: Key,
        value: Vec<u8>,
        condition: Condition,
    ) -> Result<u64> {
        ops::written(
            self.call(ops::put_request(table, key, value, condition))
                .await,
        )
    }

    /// Reads an item; a missing one is `Ok(None)`.
    pub async fn get(
        &self,
        table: &str,
        key: Key,
        consistency: Consistency,
    ) -> Result<Option<Item>> {
        ops::item(self.call(ops::get_request(table, key, consistency)).await)
    }

    /// Deletes an item if `condition` holds (`Condition::None`: always).
    pub async fn delete(&self, table: &str, key: Key, condition: Condition) -> Result<Deleted> {
        ops::deleted(self.call(ops::delete_request(table, key, condition)).await)
    }

    /// One page of a query; pass `resume` back in the query for the next.
    pub async fn query(&self, query: Query) -> Result<QueryPage> {
        ops::query_page(self.call(Request::Query(query)).await)
    }

    /// Every item of a query, following its pages.
    pub async fn query_all(&self, mut query: Query) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        loop {
            let page = self.query(query.clone()).await?;
            items.extend(page.items);
            match page.resume {
                Some(r) => query.resume = Some(r),
                None => return Ok(items),
            }
        }
    }

    /// One page of a scan; pass `resume` back in the scan for the next.
    pub async fn scan(&self, scan: Scan) -> Result<ScanPage> {
        ops::scan_page(self.call(Request::Scan(scan)).await)
    }

    /// Every item of a table, following the scan's pages.
    pub async fn scan_all(&self, mut scan: Scan) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        loop {
            let page = self.scan(scan.clone()).await?;
            items.extend(page.items);
            match page.resume {
                Some(r) => scan.resume = Some(r),
                None => return Ok(items),
            }
        }
    }

    /// Reads many items (up to [`proto::limits::BATCH_GETS_MAX`] keys); absent ones are
    /// left out, unprocessed ones handed back.
    pub async fn batch_get(
        &self,
        table: &str,
        keys: Vec<Key>,
        consistency: Consistency,
    ) -> Result<BatchItems> {
        ops::batch_items(
            self.call(ops::batch_get_request(table, keys, consistency))
                .await,
        )
    }

    /// Writes many items (up to [`proto::limits::BATCH_WRITES_MAX`], one per key); one
    /// outcome per write, in order. Never retried after an unknown outcome.
    pub async fn batch_write(
        &self,
        table: &str,
        writes: Vec<WriteOp>,
    ) -> Result<Vec<WriteOutcome>> {
        ops::batch_written(self.call(ops::batch_write_request(table, writes)).await)
    }
}

/// Which answers' checksums [`check_answer`] computes.
#[derive(Clone, Copy)]
pub(crate) enum Checksums {
    /// Every answer's: the caller reads it.
    All,
    /// Only an error answer's, which the caller reads and acts on: any other answer is
    /// passed on unchanged ([`Client::try_call_frame_then`]) to a client that checks it,
    /// end to end. The checksum of a 1 KB answer was about 4 % of a router's CPU.
    ErrorsOnly,
}

/// The answer's frame, validated with `rkyv::access` and its checksum checked as
/// `checksums` says, or the server's error answer as `Err(Error::Server)` (which the retry
/// policy reads).
pub(crate) fn check_answer(answer: Result<Frame>, checksums: Checksums) -> Result<Frame> {
    let frame = answer?;
    let bad = |e| Error::Protocol(ProtocolError::BadResponse(e));
    let checksum = |frame: &Frame| proto::frame::check_checksum(frame).map_err(bad);
    if let Checksums::All = checksums {
        checksum(&frame)?;
    }
    if let proto::ArchivedResponse::Error(e) =
        proto::frame::access_response_unchecksummed(&frame).map_err(bad)?
    {
        if let Checksums::ErrorsOnly = checksums {
            checksum(&frame)?;
        }
        return Err(Error::Server(proto::deserialize_error(e).map_err(bad)?));
    }
    Ok(frame)
}

/// Slot `i`'s connection, opened if it is missing or dead: the slot's first address,
/// then the others in turn.
async fn slot_conn(inner: &Inner, i: usize) -> Result<Rc<Conn>> {
    let slot = &inner.slots[i];
    let _one_connect = slot
        .connecting
        .acquire_permit(1)
        .await
        .map_err(|_| Error::Closed)?;
    if let Some(c) = slot.live() {
        return Ok(c);
    }
    let addrs = &inner.config.addrs;
    let mut last_error = Error::Closed;
    for k in 0..addrs.len() {
        let addr = addrs[(slot.first_addr + k) % addrs.len()];
        match Conn::connect(addr, inner.config.request_timeout).await {
            Ok(c) => {
                let c = Rc::new(c);
                debug_assert_eq!(c.addr(), addr);
                *slot.conn.borrow_mut() = Some(c.clone());
                return Ok(c);
            }
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}
