//! The client side of one core: its listener and its connections.
//!
//! The same shape as percore-node's `server` (a candidate for a shared crate): every core
//! listens on the shared port (SO_REUSEPORT, implicit in glommio); a connection is one task
//! that reads frames, spawns a task per request, and writes the answers in completion order,
//! many per `write`. At [`REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`] requests in flight or
//! [`RESPONSE_BACKLOG_BYTES_MAX`] bytes of unread answers it stops reading (TCP
//! back-pressure). A bad payload gets a typed error and the connection goes on; lost
//! framing ends the connection once the requests already read are answered. Cluster frames
//! are refused: a router is not a metadata service.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};

use crate::forward::Router;
use crate::limits::{
    CONNECTIONS_PER_CORE_MAX, REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX, RESPONSE_BACKLOG_BYTES_MAX,
    SOCKET_READ_BYTES,
};

/// Draining: stop accepting, stop reading new requests, answer those in flight.
#[derive(Default)]
pub struct Drain {
    draining: Cell<bool>,
    /// Watchers by id: a connection registers its task's waker once, keyed, so that a poll
    /// costs one map insert however many connections there are.
    waiters: RefCell<HashMap<u64, Waker>>,
    next_id: Cell<u64>,
}

impl Drain {
    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Starts draining and wakes every watcher.
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

    /// Resolves once draining has started.
    pub async fn started(&self) {
        /// Forgets the waker however the wait ends (an accept that wins the race drops it).
        struct Unwatch<'a>(&'a Drain, u64);
        impl Drop for Unwatch<'_> {
            fn drop(&mut self) {
                self.0.unwatch(self.1);
            }
        }
        let id = self.id();
        let _unwatch = Unwatch(self, id);
        poll_fn(|cx| {
            if self.is_draining() {
                Poll::Ready(())
            } else {
                self.watch(id, cx.waker());
                Poll::Pending
            }
        })
        .await;
    }
}

/// A core's live connections, for the limit and the drain.
#[derive(Default)]
pub struct Connections {
    open: Cell<usize>,
    accepted: Cell<u64>,
    closed_waker: RefCell<Option<Waker>>,
}

impl Connections {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.get()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.get()
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

    fn closed(&self) {
        self.open.set(self.open.get() - 1);
        if self.open.get() == 0 {
            if let Some(w) = self.closed_waker.borrow_mut().take() {
                w.wake();
            }
        }
    }
}

/// Accepts on `listener` until draining starts.
pub async fn accept_loop(
    listener: TcpListener,
    router: Rc<Router>,
    connections: Rc<Connections>,
    drain: Rc<Drain>,
) {
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
                // EMFILE and friends: pause briefly so that a storm does not spin the core.
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if connections.open.get() >= CONNECTIONS_PER_CORE_MAX {
            tracing::warn!(
                limit = CONNECTIONS_PER_CORE_MAX,
                "connection refused: the core is at its connection limit"
            );
            continue;
        }
        connections.open.set(connections.open.get() + 1);
        connections.accepted.set(connections.accepted.get() + 1);
        let (router, connections, drain) = (router.clone(), connections.clone(), drain.clone());
        glommio::spawn_local(async move {
            let _ = stream.set_nodelay(true);
            match serve_connection(stream, router, drain).await {
                Ok(()) => {}
                Err(ConnectionEnd::FramingLost(reason)) => {
                    tracing::warn!(%reason, "connection closed: framing lost")
                }
                Err(ConnectionEnd::Io(e)) => tracing::debug!(error = %e, "connection failed"),
            }
            connections.closed();
        })
        .detach();
    }
}

/// Why a connection ended other than by the client closing it.
#[derive(Debug)]
pub enum ConnectionEnd {
    /// The byte stream stopped being frames.
    FramingLost(proto::FramingLost),
    /// A read or write failed.
    Io(std::io::Error),
}

#[derive(Default)]
struct Outbox {
    bytes: RefCell<Vec<u8>>,
    in_flight: Cell<usize>,
    waker: RefCell<Option<Waker>>,
}

impl Outbox {
    fn push(&self, frame: &[u8]) {
        self.bytes.borrow_mut().extend_from_slice(frame);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Serves one connection until the client closes it, draining ends it, or it fails.
pub async fn serve_connection(
    mut stream: TcpStream,
    router: Rc<Router>,
    drain: Rc<Drain>,
) -> Result<(), ConnectionEnd> {
    let outbox = Rc::new(Outbox::default());
    let mut reader = proto::FrameReader::new();
    let mut read_buf = vec![0u8; SOCKET_READ_BYTES];
    let mut writing: Vec<u8> = Vec::new();
    let mut written = 0usize;
    let mut reading = true;
    let mut lost: Option<proto::FramingLost> = None;
    let drain_id = drain.id();
    let mut watching = false;

    let result = poll_fn(|cx| loop {
        let mut progressed = false;
        if reading && drain.is_draining() {
            reading = false;
        }
        while reading && outbox.in_flight.get() < REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    progressed = true;
                    let id = frame.header.request_id;
                    if frame.header.kind == proto::FrameKind::Cluster {
                        outbox.push(&proto::encode_cluster_reply(
                            id,
                            &proto::cluster::ClusterReply::Error(proto::Error::invalid(
                                "this is a router: cluster messages go to the metadata service",
                            )),
                        ));
                        continue;
                    }
                    match proto::decode_request(&frame) {
                        Err(e) => {
                            outbox.push(&proto::encode_response(id, &proto::Response::Error(e)))
                        }
                        Ok(request) => {
                            outbox.in_flight.set(outbox.in_flight.get() + 1);
                            let (router, outbox) = (router.clone(), outbox.clone());
                            glommio::spawn_local(async move {
                                let response = router.serve(request).await;
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

        let backlog = outbox.bytes.borrow().len() + (writing.len() - written);
        if reading
            && outbox.in_flight.get() < REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX
            && backlog < RESPONSE_BACKLOG_BYTES_MAX
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
