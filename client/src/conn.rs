//! One pipelined connection on glommio: an outbox flushed by one writer task, a reader task
//! that dispatches answers by request id.
//!
//! Callers append their request's frame to the outbox and wait on their own slot (or leave
//! a callback, [`Conn::call_then`]). The
//! writer takes the whole outbox at once, so the frames of every request queued while the
//! previous write was in the kernel go out in one system call. The reader splits the byte
//! stream into frames and hands each answer to its waiter ([`Pipeline`]). Room: a request
//! takes a permit of the connection's semaphore before it is queued and gives it back when
//! its answer arrives, so at most [`REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`] are in flight
//! and later callers wait, in order.
//!
//! When the connection dies (an I/O error, the server hanging up, lost framing, or the
//! pool dropping it), every request in flight gets the error, waiters for room are woken
//! with [`Error::Closed`], and both tasks end, which closes the socket.
//!
//! Timeouts: a third task, the sweep, wakes every `request_timeout /`
//! [`TIMEOUT_SWEEP_PERIODS`] and fails with [`Error::Timeout`] each request that has seen
//! more than [`TIMEOUT_SWEEP_PERIODS`] sweeps (so after 1 to 1.25 times the timeout); the
//! request is then abandoned, as a caller that gives up abandons it. One timer per
//! connection instead of one per request: a timer per request cost a clock read and two
//! timer-map updates each, several per cent of a router's CPU.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};
use proto::{Frame, FrameKind, FrameReader, HEADER_BYTES};

use crate::limits::{
    REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX, SOCKET_READ_BYTES, TIMEOUT_SWEEP_PERIODS,
};
use crate::pipeline::{Abandoned, Pipeline};
use crate::{Error, ProtocolError, Result};

/// Where one request's answer lands: the response frame, checked by the caller (so that a
/// relay can pass its bytes on without decoding them).
#[derive(Default)]
struct Slot {
    answer: Option<Result<Frame>>,
    waker: Option<Waker>,
}

/// What is called with the answer to a request queued by [`Conn::call_then`]: the
/// answer's frame checked as [`crate::Client::try_call_frame_then`] says (an error answer
/// is `Err(Error::Server)`), or why none came.
pub type Then = Box<dyn FnOnce(Result<Frame>)>;

/// Where one request's answer goes.
enum AnswerTo {
    /// A caller awaiting its [`Answer`].
    Slot(Rc<RefCell<Slot>>),
    /// A callback, taken out when it is called (once: by the reader, the sweep or `close`).
    Then(Cell<Option<Then>>),
}

impl AnswerTo {
    /// Hands `answer` over; what is left to do (a wake-up, a call) is returned, to be done
    /// once no borrow of the connection's state is held.
    fn deliver(&self, answer: Result<Frame>) -> Delivery {
        match self {
            AnswerTo::Slot(slot) => {
                let mut slot = slot.borrow_mut();
                slot.answer = Some(answer);
                slot.waker.take().map_or(Delivery::Nothing, Delivery::Wake)
            }
            AnswerTo::Then(then) => then
                .take()
                .map_or(Delivery::Nothing, |then| Delivery::Call(then, answer)),
        }
    }
}

/// The second half of [`AnswerTo::deliver`].
enum Delivery {
    Nothing,
    Wake(Waker),
    Call(Then, Result<Frame>),
}

impl Delivery {
    fn run(self) {
        match self {
            Delivery::Nothing => {}
            Delivery::Wake(w) => w.wake(),
            Delivery::Call(then, answer) => then(crate::client::check_answer(
                answer,
                crate::client::Checksums::ErrorsOnly,
            )),
        }
    }
}

/// A request in flight: where its answer goes, its share of the connection's room, and the
/// sweep period it was queued in.
struct Waiter {
    to: AnswerTo,
    _room: StaticPermit,
    queued_in_sweep: u32,
}

struct State {
    pipeline: Pipeline<Waiter>,
    /// Frames queued for the writer.
    outbox: Vec<u8>,
    /// The writer's previous buffer, handed back to keep its allocation.
    spare: Vec<u8>,
    writer: Option<Waker>,
    reader: Option<Waker>,
    /// Why the connection is dead, once it is.
    closed: Option<Error>,
}

struct Shared {
    state: RefCell<State>,
    room: Rc<Semaphore>,
    /// Borrowed only inside one poll, by one task at a time: the reader and the writer use
    /// the socket's separate read and write readiness.
    stream: RefCell<TcpStream>,
    /// Sweep periods passed since the connection opened (wrapping).
    sweeps: Cell<u32>,
}

/// A live connection; dropping the last handle closes it.
pub(crate) struct Conn {
    shared: Rc<Shared>,
    addr: SocketAddr,
}

impl Conn {
    /// Connects within `timeout` and starts the connection's reader, writer and timeout
    /// sweep; a request then fails with [`Error::Timeout`] after 1 to 1.25 times `timeout`
    /// without an answer.
    pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn> {
        let stream = TcpStream::connect_timeout(addr, timeout.max(Duration::from_millis(1)))
            .await
            .map_err(|e| Error::from(std::io::Error::from(e)))?;
        // Requests are coalesced in the outbox already; Nagle would only add latency.
        stream.set_nodelay(true).map_err(std::io::Error::from)?;
        let shared = Rc::new(Shared {
            state: RefCell::new(State {
                pipeline: Pipeline::new(),
                outbox: Vec::new(),
                spare: Vec::new(),
                writer: None,
                reader: None,
                closed: None,
            }),
            room: Rc::new(Semaphore::new(REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX as u64)),
            stream: RefCell::new(stream),
            sweeps: Cell::new(0),
        });
        glommio::spawn_local(read_loop(shared.clone())).detach();
        glommio::spawn_local(write_loop(shared.clone())).detach();
        let period = (timeout / TIMEOUT_SWEEP_PERIODS).max(Duration::from_millis(1));
        glommio::spawn_local(sweep_loop(Rc::downgrade(&shared), period)).detach();
        Ok(Conn { shared, addr })
    }

    /// The server's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the connection is dead.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.state.borrow().closed.is_some()
    }

    /// Requests in flight (abandoned ones included).
    pub(crate) fn in_flight(&self) -> usize {
        self.shared.state.borrow().pipeline.in_flight()
    }

    /// Sends one request frame (its header, with a request id that is patched in, and its
    /// payload) and waits for the answer's frame, whose payload the caller checks. Waits
    /// for room first. `sent` is set once the frame is queued: from then on, a failure
    /// leaves the request's outcome unknown.
    pub(crate) async fn call(
        &self,
        header: &[u8; HEADER_BYTES],
        payload: &[u8],
        sent: &Cell<bool>,
    ) -> Result<Frame> {
        let permit = match self.shared.room.acquire_static_permit(1).await {
            Ok(p) => p,
            Err(_) => return Err(self.closed_error()),
        };
        self.call_with_room(permit, header, payload, sent).await
    }

    /// Room for one more request, if there is some now (and the connection is live).
    pub(crate) fn try_room(&self) -> Option<StaticPermit> {
        self.shared.room.try_acquire_static_permit(1).ok()
    }

    /// [`Conn::call`] with its room taken already ([`Conn::try_room`]).
    pub(crate) async fn call_with_room(
        &self,
        permit: StaticPermit,
        header: &[u8; HEADER_BYTES],
        payload: &[u8],
        sent: &Cell<bool>,
    ) -> Result<Frame> {
        let slot = Rc::new(RefCell::new(Slot::default()));
        let id = self.queue(permit, header, payload, AnswerTo::Slot(slot.clone()))?;
        sent.set(true);
        Answer {
            shared: &self.shared,
            id,
            slot,
            done: false,
        }
        .await
    }

    /// Queues one request frame with its room taken already and calls `then` with the
    /// answer (from the connection's reader, its sweep on a timeout, or its close). Nothing
    /// is queued, and `then` comes back, if the connection is dead.
    pub(crate) fn call_then(
        &self,
        permit: StaticPermit,
        header: &[u8; HEADER_BYTES],
        payload: &[u8],
        then: Then,
    ) -> std::result::Result<(), Then> {
        if self.is_closed() {
            return Err(then);
        }
        let queued = self.queue(
            permit,
            header,
            payload,
            AnswerTo::Then(Cell::new(Some(then))),
        );
        debug_assert!(queued.is_ok(), "checked live above, on this one thread");
        Ok(())
    }

    /// Registers a request and appends its frame to the outbox; its id.
    fn queue(
        &self,
        permit: StaticPermit,
        header: &[u8; HEADER_BYTES],
        payload: &[u8],
        to: AnswerTo,
    ) -> Result<u64> {
        let mut st = self.shared.state.borrow_mut();
        if let Some(e) = &st.closed {
            return Err(e.clone());
        }
        let id = st.pipeline.start(Waiter {
            to,
            _room: permit,
            queued_in_sweep: self.shared.sweeps.get(),
        });
        let at = st.outbox.len();
        st.outbox.extend_from_slice(header);
        st.outbox[at + 8..at + 16].copy_from_slice(&id.to_le_bytes());
        st.outbox.extend_from_slice(payload);
        if let Some(w) = st.writer.take() {
            w.wake();
        }
        Ok(id)
    }

    fn closed_error(&self) -> Error {
        self.shared
            .state
            .borrow()
            .closed
            .clone()
            .unwrap_or(Error::Closed)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        close(&self.shared, Error::Closed);
    }
}

/// Waits for one request's answer; dropped early (a timeout), it abandons the request.
struct Answer<'a> {
    shared: &'a Rc<Shared>,
    id: u64,
    slot: Rc<RefCell<Slot>>,
    done: bool,
}

impl Future for Answer<'_> {
    type Output = Result<Frame>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Frame>> {
        let mut slot = self.slot.borrow_mut();
        match slot.answer.take() {
            Some(answer) => {
                drop(slot);
                self.done = true;
                Poll::Ready(answer)
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        if self.done || self.slot.borrow().answer.is_some() {
            return;
        }
        let outcome = self.shared.state.borrow_mut().pipeline.abandon(self.id);
        if outcome == Abandoned::TooMany {
            close(self.shared, Error::Closed);
        }
    }
}

/// Marks the connection dead (keeping the first cause), fails every request in flight and
/// every waiter for room, and wakes both tasks so that they end.
fn close(shared: &Shared, cause: Error) {
    let (deliveries, reader, writer) = {
        let mut st = shared.state.borrow_mut();
        if st.closed.is_none() {
            st.closed = Some(cause);
        }
        let cause = st.closed.clone().expect("set above");
        let deliveries: Vec<Delivery> = st
            .pipeline
            .drain()
            .into_iter()
            .filter(|f| !f.abandoned)
            .map(|f| f.waiter.to.deliver(Err(cause.clone())))
            .collect();
        st.outbox.clear();
        (deliveries, st.reader.take(), st.writer.take())
    };
    shared.room.close();
    // Wake and call outside the borrow: a woken task may run its poll at once on some
    // executors, and a callback may use the client again.
    deliveries.into_iter().for_each(Delivery::run);
    if let Some(w) = reader {
        w.wake();
    }
    if let Some(w) = writer {
        w.wake();
    }
}

async fn read_loop(shared: Rc<Shared>) {
    let mut buf = vec![0u8; SOCKET_READ_BYTES];
    let mut frames = FrameReader::new();
    let cause = 'conn: loop {
        let read = poll_fn(|cx| {
            {
                let mut st = shared.state.borrow_mut();
                if st.closed.is_some() {
                    return Poll::Ready(None);
                }
                st.reader = Some(cx.waker().clone());
            }
            let mut stream = shared.stream.borrow_mut();
            Pin::new(&mut *stream).poll_read(cx, &mut buf).map(Some)
        })
        .await;
        let n = match read {
            None => return,
            Some(Ok(0)) => break Error::Closed,
            Some(Ok(n)) => n,
            Some(Err(e)) => break Error::from(e),
        };
        frames.push(&buf[..n]);
        loop {
            let frame = match frames.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(lost) => break 'conn Error::Protocol(ProtocolError::FramingLost(lost)),
            };
            let id = frame.header.request_id;
            if frame.header.kind != FrameKind::Response {
                break 'conn Error::Protocol(ProtocolError::NotAResponse { request_id: id });
            }
            // The payload is checked by the caller: a bad one whose framing held is that
            // request's problem alone.
            let answer = Ok(frame);
            let finished = shared.state.borrow_mut().pipeline.finish(id);
            match finished {
                Ok(f) if f.abandoned => {}
                Ok(f) => {
                    let delivery = f.waiter.to.deliver(answer);
                    // The permit in `f.waiter` goes back to the room here.
                    drop(f);
                    delivery.run();
                }
                Err(e) => break 'conn Error::Protocol(e),
            }
        }
    };
    close(&shared, cause);
}

async fn write_loop(shared: Rc<Shared>) {
    loop {
        let batch = poll_fn(|cx| {
            let mut st = shared.state.borrow_mut();
            if st.closed.is_some() {
                return Poll::Ready(None);
            }
            if st.outbox.is_empty() {
                st.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let spare = std::mem::take(&mut st.spare);
            Poll::Ready(Some(std::mem::replace(&mut st.outbox, spare)))
        })
        .await;
        let Some(mut batch) = batch else { return };
        let mut written = 0;
        while written < batch.len() {
            let wrote = poll_fn(|cx| {
                {
                    let mut st = shared.state.borrow_mut();
                    if st.closed.is_some() {
                        return Poll::Ready(None);
                    }
                    st.writer = Some(cx.waker().clone());
                }
                let mut stream = shared.stream.borrow_mut();
                Pin::new(&mut *stream)
                    .poll_write(cx, &batch[written..])
                    .map(Some)
            })
            .await;
            match wrote {
                None => return,
                Some(Ok(0)) => {
                    close(&shared, Error::Closed);
                    return;
                }
                Some(Ok(n)) => written += n,
                Some(Err(e)) => {
                    close(&shared, Error::from(e));
                    return;
                }
            }
        }
        batch.clear();
        let mut st = shared.state.borrow_mut();
        st.writer = None;
        if st.spare.capacity() < batch.capacity() {
            st.spare = batch;
        }
    }
}

/// Every `period`, fails the requests that have seen more than [`TIMEOUT_SWEEP_PERIODS`]
/// sweeps (queued between that many and one more periods ago: 1 to 1.25 times the timeout)
/// with [`Error::Timeout`] and abandons them; ends when the connection is gone or dead.
async fn sweep_loop(shared: std::rc::Weak<Shared>, period: Duration) {
    loop {
        glommio::timer::sleep(period).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.state.borrow().closed.is_some() {
            return;
        }
        let now = shared.sweeps.get().wrapping_add(1);
        shared.sweeps.set(now);
        let mut expired = Vec::new();
        let outcome = shared.state.borrow_mut().pipeline.abandon_where(
            // More than the periods of a timeout: a request queued just before a sweep
            // has seen one more sweep than periods have passed.
            |w| now.wrapping_sub(w.queued_in_sweep) > TIMEOUT_SWEEP_PERIODS,
            |w| expired.push(w.to.deliver(Err(Error::Timeout))),
        );
        // Wake and call outside the borrow of the state, as `close` does.
        expired.into_iter().for_each(Delivery::run);
        if outcome == Abandoned::TooMany {
            close(&shared, Error::Closed);
            return;
        }
    }
}
