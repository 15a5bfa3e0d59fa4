//! The network side of a daemon's core: its listeners and its pipelined connections.
//!
//! percore-node, percore-meta and percore-router serve `proto` frames the same way, so the
//! loop lives here once. A listener's accept loop ([`accept_loop`]) runs until draining
//! starts; a connection carries many requests in flight; each request runs as its own task
//! and its answer is queued, in completion order, for the connection's single writer, so
//! that many answers leave in one `write`. Request frames go to [`Service::serve`], cluster
//! frames to [`Service::serve_cluster`].
//!
//! A connection is one task running a small state machine ([`serve_connection`]): read
//! bytes, split frames with `proto::FrameReader`, answer at once what needs no waiting,
//! hand relayed frames to the service with a [`ReplySink`], spawn a task for every other
//! request, write what was answered. Bounds ([`ServerLimits`], each daemon's own):
//!
//! - at `requests_in_flight_per_connection_max` requests in flight, or
//!   `response_backlog_bytes_max` bytes of answers the client has not read, it stops
//!   reading (TCP back-pressure; no `Throttled` for this);
//! - beyond `connections_max` connections, a new one is closed at once.
//!
//! Bad input never takes the daemon down: a frame whose payload is bad (checksum, version,
//! contents) gets a typed error answer and the connection goes on; a frame whose framing
//! is lost (bad magic, oversized length, unknown kind or flags) ends the connection, with
//! the reason logged, after the requests already read are answered.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};

/// Bytes read from a socket at a time: a few frames' worth, so that one read usually
/// brings whole frames without holding much memory per connection.
pub const SOCKET_READ_BYTES: usize = 64 * 1024;

/// Bytes of answers after which a connection stops taking the frames it has read and writes
/// what is ready. A client that sends many requests at once (a router carrying the
/// pipelines of many clients) then gets its first answers while the rest are served, so its
/// work on them overlaps this core's instead of waiting for the whole read's answers; one
/// write per 16 KiB of answers costs little beside the answers' own work.
pub const ANSWER_CHUNK_BYTES: usize = 16 * 1024;

/// A daemon's bounds on its connections (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once on one core; a new one beyond is closed at once.
    pub connections_max: usize,
    /// Requests in flight on one connection before it stops reading.
    pub requests_in_flight_per_connection_max: usize,
    /// Bytes of answers a client has not read before its connection stops reading; at
    /// least one largest frame, so that any single answer can be queued.
    pub response_backlog_bytes_max: usize,
}

/// What serves a daemon's requests.
pub trait Service: 'static {
    /// Answers one request (a response or a typed error; never a panic on bad input).
    fn serve(self: &Rc<Self>, request: proto::Request) -> impl Future<Output = proto::Response>;

    /// Answers `request` at once if that needs no waiting (no I/O, no other task), else
    /// `None` and it goes to [`Service::serve`] in a task of its own. Answering here saves
    /// a task and a wake-up per request, which on a busy core is a good part of a cached
    /// read's cost. By default: `None`.
    fn serve_now(self: &Rc<Self>, request: &proto::Request) -> Option<proto::Response> {
        let _ = request;
        None
    }

    /// Takes a request frame to answer without decoding it (a router relaying a frame to
    /// the node that owns its item, and the node's answer back) through `sink`, now or
    /// later, from any task or callback of this core; or hands both back, for the frame to
    /// be decoded and served by [`Service::serve_now`] or [`Service::serve`]. The frame's
    /// header and checksum are checked already (`proto::check_request`); one whose payload
    /// is not valid must be handed back, so that it gets the usual typed error. No task is
    /// spawned for a taken frame: a service that answers from a callback (an answer that
    /// arrived on another connection) saves a task and two wake-ups per request. By
    /// default: every frame is handed back.
    fn relay(
        self: Rc<Self>,
        frame: proto::Frame,
        sink: ReplySink,
    ) -> Result<(), (proto::Frame, ReplySink)> {
        Err((frame, sink))
    }

    /// Answers one cluster message. By default: a typed refusal (a daemon that takes none).
    fn serve_cluster(
        self: &Rc<Self>,
        request: proto::cluster::ClusterRequest,
    ) -> impl Future<Output = proto::cluster::ClusterReply> {
        let _ = request;
        std::future::ready(proto::cluster::ClusterReply::Error(proto::Error::invalid(
            "this daemon takes no cluster messages",
        )))
    }
}

/// Where the answer to one relayed request goes ([`Service::relay`]): the request's
/// connection, under its request id. It counts as a request in flight on that connection
/// until it is answered. Dropped unanswered (a bug, or the core stopping), it answers
/// `Internal` itself, so that the client is never left waiting.
pub struct ReplySink {
    outbox: Rc<Outbox>,
    request_id: u64,
    answered: bool,
}

impl ReplySink {
    fn new(outbox: Rc<Outbox>, request_id: u64) -> ReplySink {
        outbox.in_flight.set(outbox.in_flight.get() + 1);
        ReplySink {
            outbox,
            request_id,
            answered: false,
        }
    }

    /// Queues the answer for the client's connection.
    pub fn send(mut self, answer: &Relayed) {
        self.outbox.push_relayed(self.request_id, answer);
        self.finish();
    }

    /// Gives the frame back to the server unanswered (the service did not take it).
    fn hand_back(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.answered = true;
        self.outbox.in_flight.set(self.outbox.in_flight.get() - 1);
    }
}

impl Drop for ReplySink {
    fn drop(&mut self) {
        if !self.answered {
            let error = proto::Error::internal("the relayed request was dropped unanswered");
            self.outbox.push(&proto::encode_response(
                self.request_id,
                &proto::Response::Error(error),
            ));
            self.finish();
        }
    }
}

/// The answer to a relayed request frame ([`Service::relay`]).
pub enum Relayed {
    /// Another server's response frame, passed on as it is under the request's id.
    Frame(proto::Frame),
    /// An answer of this daemon's own.
    Response(proto::Response),
}

/// Starts draining: stop accepting, stop reading new requests, answer those in flight.
#[derive(Default)]
pub struct Drain {
    draining: Cell<bool>,
    waiters: RefCell<HashMap<u64, Waker>>,
    next_id: Cell<u64>,
}

impl Drain {
    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Starts draining and wakes everyone who watches.
    pub fn start(&self) {
        self.draining.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        waiters.into_values().for_each(Waker::wake);
    }

    fn id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    fn watch(&self, id: u64, waker: &Waker) {
        self.waiters.borrow_mut().insert(id, waker.clone());
    }

    fn unwatch(&self, id: u64) {
        self.waiters.borrow_mut().remove(&id);
    }

    /// Resolves once draining has started. Dropping it before then forgets its waker (an
    /// accept that wins the race drops one per connection).
    pub fn started(&self) -> DrainStarted<'_> {
        DrainStarted {
            drain: self,
            id: self.id(),
        }
    }
}

/// The future of [`Drain::started`].
pub struct DrainStarted<'a> {
    drain: &'a Drain,
    id: u64,
}

impl Future for DrainStarted<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.drain.is_draining() {
            Poll::Ready(())
        } else {
            self.drain.watch(self.id, cx.waker());
            Poll::Pending
        }
    }
}

impl Drop for DrainStarted<'_> {
    fn drop(&mut self) {
        self.drain.unwatch(self.id);
    }
}

/// A core's live connections, for the limit and for the drain.
pub struct Connections {
    limits: ServerLimits,
    open: Cell<usize>,
    accepted: Cell<u64>,
    refused: Cell<u64>,
    closed_waker: RefCell<Option<Waker>>,
}

impl Connections {
    /// No connection yet; these bounds for the ones to come.
    pub fn new(limits: ServerLimits) -> Connections {
        assert!(
            limits.connections_max >= 1
                && limits.requests_in_flight_per_connection_max >= 1
                && limits.response_backlog_bytes_max
                    >= proto::limits::FRAME_PAYLOAD_BYTES_MAX + proto::HEADER_BYTES,
            "server limits too small to serve one largest frame: {limits:?}"
        );
        Connections {
            limits,
            open: Cell::new(0),
            accepted: Cell::new(0),
            refused: Cell::new(0),
            closed_waker: RefCell::new(None),
        }
    }

    /// The bounds.
    pub fn limits(&self) -> ServerLimits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.get()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.get()
    }

    /// Connections closed at once because the core was at its limit.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }

    /// Resolves when no connection is open.
    pub async fn all_closed(&self) {
        poll_fn(|cx| {
            if self.open.get() == 0 {
                Poll::Ready(())
            } else {
                *self.closed_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Resolves when no connection is open, or after `timeout`: `true` if they all closed.
    /// What a draining daemon waits for before it stops anyway.
    pub async fn all_closed_within(&self, timeout: std::time::Duration) -> bool {
        futures_lite::future::or(
            async {
                self.all_closed().await;
                true
            },
            async {
                glommio::timer::sleep(timeout).await;
                false
            },
        )
        .await
    }

    fn closed(&self) {
        self.open.set(self.open.get() - 1);
        if self.open.get() == 0 {
            if let Some(w) = self.closed_waker.borrow_mut().take() {
                w.wake();
            }
        }
    }
}

/// Accepts on `listener` until draining starts, serving each connection on this core.
pub async fn accept_loop<S: Service>(
    listener: TcpListener,
    service: Rc<S>,
    connections: Rc<Connections>,
    drain: Rc<Drain>,
) {
    let limits = connections.limits;
    accept_each(listener, connections, drain.clone(), move |stream, peer| {
        let (service, drain) = (service.clone(), drain.clone());
        async move {
            match serve_connection(stream, service, drain, limits).await {
                Ok(()) => tracing::debug!(%peer, "connection closed"),
                Err(ConnectionEnd::FramingLost(reason)) => {
                    tracing::warn!(%peer, %reason, "connection closed: framing lost")
                }
                Err(ConnectionEnd::Io(e)) => {
                    tracing::debug!(%peer, error = %e, "connection failed")
                }
            }
        }
    })
    .await
}

/// Accepts on `listener` until draining starts and runs `serve(stream, peer)` as a task of
/// its own for each connection, within the core's connection limit (beyond it, a new
/// connection is closed at once and logged). The protocol-agnostic half of
/// [`accept_loop`]: the router's Redis port uses it with its own connection loop.
pub async fn accept_each<F, Fut>(
    listener: TcpListener,
    connections: Rc<Connections>,
    drain: Rc<Drain>,
    serve: F,
) where
    F: Fn(TcpStream, String) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let name = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            drain.started().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: log, pause briefly so a storm does not spin the core.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if connections.open.get() >= connections.limits.connections_max {
            connections.refused.set(connections.refused.get() + 1);
            tracing::warn!(
                listener = %name,
                limit = connections.limits.connections_max,
                "connection refused: the core is at its connection limit"
            );
            drop(stream);
            continue;
        }
        connections.open.set(connections.open.get() + 1);
        connections.accepted.set(connections.accepted.get() + 1);
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let serving = serve(stream, peer);
        let connections = connections.clone();
        glommio::spawn_local(async move {
            serving.await;
            connections.closed();
        })
        .detach();
    }
    tracing::debug!(listener = %name, "stopped accepting");
}

/// Why a connection ended other than by the client closing it.
#[derive(Debug)]
pub enum ConnectionEnd {
    /// The byte stream stopped being frames.
    FramingLost(proto::FramingLost),
    /// A read or write failed.
    Io(std::io::Error),
}

/// What a connection's request tasks share with its writer.
#[derive(Default)]
struct Outbox {
    /// Encoded response frames, in completion order.
    bytes: RefCell<Vec<u8>>,
    in_flight: Cell<usize>,
    waker: RefCell<Option<Waker>>,
}

impl Outbox {
    fn push(&self, frame: &[u8]) {
        self.bytes.borrow_mut().extend_from_slice(frame);
        self.wake();
    }

    /// Queues a relayed answer: its header under the request's own id, its payload as is.
    fn push_relayed(&self, request_id: u64, answer: &Relayed) {
        match answer {
            Relayed::Frame(frame) => {
                let header = proto::FrameHeader {
                    request_id,
                    ..frame.header
                };
                let mut bytes = self.bytes.borrow_mut();
                bytes.extend_from_slice(&header.encode());
                bytes.extend_from_slice(&frame.payload);
            }
            Relayed::Response(r) => self
                .bytes
                .borrow_mut()
                .extend_from_slice(&proto::encode_response(request_id, r)),
        }
        self.wake();
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Serves one connection until the client closes it, draining ends it, or it fails.
pub async fn serve_connection<S: Service>(
    mut stream: TcpStream,
    service: Rc<S>,
    drain: Rc<Drain>,
    limits: ServerLimits,
) -> Result<(), ConnectionEnd> {
    let outbox = Rc::new(Outbox::default());
    let mut reader = proto::FrameReader::new();
    let mut read_buf = vec![0u8; SOCKET_READ_BYTES];
    let mut writing: Vec<u8> = Vec::new();
    let mut written = 0usize;
    // Whether more requests may come: false after end of file, lost framing or a drain.
    let mut reading = true;
    let mut lost: Option<proto::FramingLost> = None;
    let drain_id = drain.id();
    let mut watching = false;

    let result = poll_fn(|cx| loop {
        let mut progressed = false;
        if reading && drain.is_draining() {
            reading = false;
        }

        // Take whole frames while under the in-flight bound, and, while the socket is free to
        // take a write, only until a chunk of answers is ready (see `ANSWER_CHUNK_BYTES`).
        while reading
            && outbox.in_flight.get() < limits.requests_in_flight_per_connection_max
            && (written < writing.len() || outbox.bytes.borrow().len() < ANSWER_CHUNK_BYTES)
        {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    progressed = true;
                    let id = frame.header.request_id;
                    if frame.header.kind == proto::FrameKind::Cluster {
                        match proto::decode_cluster(&frame) {
                            Err(e) => outbox.push(&proto::encode_cluster_reply(
                                id,
                                &proto::cluster::ClusterReply::Error(e),
                            )),
                            Ok(message) => {
                                outbox.in_flight.set(outbox.in_flight.get() + 1);
                                let (service, outbox) = (service.clone(), outbox.clone());
                                glommio::spawn_local(async move {
                                    let reply = service.serve_cluster(message).await;
                                    outbox.push(&proto::encode_cluster_reply(id, &reply));
                                    outbox.in_flight.set(outbox.in_flight.get() - 1);
                                })
                                .detach();
                            }
                        }
                        continue;
                    }
                    // The checksum is computed here, once, for the relay and the decoder.
                    if let Err(e) = proto::check_request(&frame) {
                        outbox.push(&proto::encode_response(id, &proto::Response::Error(e)));
                        continue;
                    }
                    let sink = ReplySink::new(outbox.clone(), id);
                    let frame = match service.clone().relay(frame, sink) {
                        Ok(()) => continue,
                        Err((frame, sink)) => {
                            sink.hand_back();
                            frame
                        }
                    };
                    match proto::decode_checked_request(&frame) {
                        Err(e) => {
                            outbox.push(&proto::encode_response(id, &proto::Response::Error(e)))
                        }
                        Ok(request) => {
                            // A request the service can answer at once (a read of cached
                            // pages) is answered here: no task, no wake-up of this one.
                            if let Some(response) = service.serve_now(&request) {
                                outbox.push(&proto::encode_response(id, &response));
                                continue;
                            }
                            outbox.in_flight.set(outbox.in_flight.get() + 1);
                            let (service, outbox) = (service.clone(), outbox.clone());
                            glommio::spawn_local(async move {
                                let response = service.serve(request).await;
                                outbox.push(&proto::encode_response(id, &response));
                                outbox.in_flight.set(outbox.in_flight.get() - 1);
                            })
                            .detach();
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    reading = false;
                    lost = Some(e);
                }
            }
        }

        // Read more, unless the client is not reading its answers or has too much in flight.
        let backlog = outbox.bytes.borrow().len() + (writing.len() - written);
        if reading
            && outbox.in_flight.get() < limits.requests_in_flight_per_connection_max
            && backlog < limits.response_backlog_bytes_max
        {
            match Pin::new(&mut stream).poll_read(cx, &mut read_buf) {
                Poll::Ready(Ok(0)) => {
                    reading = false;
                    progressed = true;
                }
                Poll::Ready(Ok(n)) => {
                    reader.push(&read_buf[..n]);
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ConnectionEnd::Io(e))),
                Poll::Pending => {}
            }
        }

        // Write what is queued: everything answered since the last write goes in one.
        if written == writing.len() {
            writing.clear();
            written = 0;
            std::mem::swap(&mut writing, &mut *outbox.bytes.borrow_mut());
        }
        if written < writing.len() {
            match Pin::new(&mut stream).poll_write(cx, &writing[written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(ConnectionEnd::Io(
                        std::io::ErrorKind::WriteZero.into(),
                    )))
                }
                Poll::Ready(Ok(n)) => {
                    written += n;
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ConnectionEnd::Io(e))),
                Poll::Pending => {}
            }
        }

        let idle = outbox.in_flight.get() == 0
            && written == writing.len()
            && outbox.bytes.borrow().is_empty();
        if !reading && idle {
            return Poll::Ready(match lost.take() {
                Some(e) => Err(ConnectionEnd::FramingLost(e)),
                None => Ok(()),
            });
        }
        if !progressed {
            *outbox.waker.borrow_mut() = Some(cx.waker().clone());
            if reading && !watching {
                // A task's waker stays valid for the task's life: register it once.
                drain.watch(drain_id, cx.waker());
                watching = true;
            }
            return Poll::Pending;
        }
    })
    .await;
    drain.unwatch(drain_id);
    if result.is_ok() {
        let _ = futures_lite::AsyncWriteExt::close(&mut stream).await;
    }
    result
}
