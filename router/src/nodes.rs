//! One core's connections to node cores: a pipelined `client::Client` per node core address,
//! opened on first use, never retrying by itself (the router decides, knowing the route).
//!
//! What matters about a failed forward is whether the node may have received it: a refused
//! or failed connect means it did not (any request may go elsewhere or fail as
//! `Unavailable`); a connection that broke or timed out after the frame was queued leaves
//! the outcome unknown, and a plain write must then not be sent again.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use client::{Backoff, Client, ClientConfig};
use glommio::sync::Semaphore;
use proto::{Frame, HEADER_BYTES};
use rustc_hash::FxHashMap;

use crate::limits::{NODE_ADDRS_MAX, NODE_CONNECTIONS_PER_ADDR, NODE_REQUEST_TIMEOUT_MS};

/// How a forward failed.
#[derive(Debug, Clone)]
pub enum NodeFailure {
    /// The node answered with this error.
    Answered(proto::Error),
    /// The node could not be reached: the request was not sent.
    NotSent(String),
    /// The request was sent and then the connection failed or timed out: outcome unknown.
    Unknown(String),
}

impl NodeFailure {
    /// How a call to a node failed, from the client's error.
    pub fn of(e: client::Error) -> NodeFailure {
        match e {
            client::Error::Server(e) => NodeFailure::Answered(e),
            client::Error::Io(e) if connect_failed(e.kind()) => NodeFailure::NotSent(e.to_string()),
            e @ client::Error::FrameTooLarge { .. } => {
                NodeFailure::Answered(proto::Error::internal(e.to_string()))
            }
            e => NodeFailure::Unknown(e.to_string()),
        }
    }
}

#[derive(Default)]
struct Slot {
    client: RefCell<Option<Client>>,
}

/// One core's connections to node cores (see the module doc).
pub struct NodePool {
    /// By node core address. Fx, not SipHash: the addresses come from meta, and this map
    /// is looked up once per forwarded request.
    slots: RefCell<FxHashMap<SocketAddr, Rc<Slot>>>,
    /// One connect at a time per core: a burst of first requests to a new address waits
    /// for one connect instead of opening one each.
    connecting: Semaphore,
    timeout: Duration,
}

impl Default for NodePool {
    fn default() -> Self {
        NodePool::new()
    }
}

impl NodePool {
    /// No connection yet.
    pub fn new() -> NodePool {
        NodePool {
            slots: RefCell::new(FxHashMap::default()),
            connecting: Semaphore::new(1),
            timeout: Duration::from_millis(NODE_REQUEST_TIMEOUT_MS),
        }
    }

    /// Node core addresses with a client.
    pub fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.slots.borrow().is_empty()
    }

    /// Forwards one request frame (its payload encoded, a client's or the router's own) to
    /// the node core at `addr` and returns the answer's frame, checked but not decoded; an
    /// error answer comes back as [`NodeFailure::Answered`].
    pub async fn call(
        &self,
        addr: SocketAddr,
        header: &[u8; HEADER_BYTES],
        payload: &[u8],
        idempotent: bool,
    ) -> Result<Frame, NodeFailure> {
        let client = self.client(addr).await?;
        client
            .call_frame(header, payload, idempotent)
            .await
            .map_err(NodeFailure::of)
    }

    /// The client for `addr` if it is connected already (nothing is opened).
    pub fn ready_client(&self, addr: SocketAddr) -> Option<Client> {
        let slots = self.slots.borrow();
        let client = slots.get(&addr)?.client.borrow();
        client.clone()
    }

    async fn client(&self, addr: SocketAddr) -> Result<Client, NodeFailure> {
        let slot = self.slot(addr);
        if let Some(c) = slot.client.borrow().as_ref() {
            return Ok(c.clone());
        }
        // Boxed: connecting is a large future that every forward would otherwise carry.
        Box::pin(self.connect(addr, slot)).await
    }

    async fn connect(&self, addr: SocketAddr, slot: Rc<Slot>) -> Result<Client, NodeFailure> {
        let _one = self
            .connecting
            .acquire_permit(1)
            .await
            .map_err(|_| NodeFailure::NotSent("the router is stopping".into()))?;
        if let Some(c) = slot.client.borrow().as_ref() {
            return Ok(c.clone());
        }
        let config = ClientConfig {
            addrs: vec![addr],
            connections: NODE_CONNECTIONS_PER_ADDR,
            request_timeout: self.timeout,
            // The router retries itself, knowing the route; the client must not.
            max_attempts: 1,
            backoff: Backoff::default(),
        };
        let client = Client::connect(config)
            .await
            .map_err(|e| NodeFailure::NotSent(e.to_string()))?;
        *slot.client.borrow_mut() = Some(client.clone());
        Ok(client)
    }

    fn slot(&self, addr: SocketAddr) -> Rc<Slot> {
        let mut slots = self.slots.borrow_mut();
        if !slots.contains_key(&addr) && slots.len() >= NODE_ADDRS_MAX {
            // Keep only the clients with requests in flight; the rest reconnect on use.
            slots.retain(|_, s| {
                s.client
                    .borrow()
                    .as_ref()
                    .is_some_and(|c| c.in_flight() > 0)
            });
        }
        slots.entry(addr).or_default().clone()
    }

    /// Drops every connection (at shutdown).
    pub fn close(&self) {
        self.slots.borrow_mut().clear();
        self.connecting.close();
    }
}

/// Whether an I/O error can only have come from connecting (nothing was sent).
fn connect_failed(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
    )
}
