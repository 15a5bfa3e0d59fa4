//! The channel mesh between cores: a bounded glommio shared channel from every core to
//! every other, for the rare request that lands on a core that does not own its partition,
//! and for catalog broadcasts from core 0.
//!
//! A message is a [`Call`] (answered) or a [`Reply`]; a call carries a token that its reply
//! names, so one channel pair carries many calls in flight. A cross-core wake-up costs
//! 25-50 µs here (GLOMMIO-NOTES pitfall 5): this is the slow path, counted in
//! [`Mesh::forwarded`].
//!
//! The mesh is built by hand rather than with glommio's `MeshBuilder`, whose peer numbers
//! follow glommio's executor ids rather than our core indices; the connect trap (pitfall 6:
//! each end's `connect()` waits for the other) is avoided the same way glommio's builder
//! does, by connecting every end concurrently. A connect waiting for its peer is woken only
//! when its reactor next wakes for something else; the core's keep-alive timer
//! ([`crate::shard::REACTOR_KEEPALIVE_US`]) makes sure it does.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

use crate::catalog::Catalog;
use crate::limits::MESH_CHANNEL_MESSAGES_MAX;
use crate::oneshot;

/// A scan step over one partition, run by the core that owns it.
#[derive(Debug, Clone)]
pub struct ScanStep {
    /// The table.
    pub table: String,
    /// The partition's index within the table.
    pub partition: u32,
    /// Go on after this key (exclusive); `None`: from the partition's start.
    pub after: Option<proto::Key>,
    /// Items to return at most (never 0: the caller stops before).
    pub items_max: u32,
}

/// What a scan step found.
#[derive(Debug, Clone)]
pub struct ScanStepPage {
    /// Items in key order.
    pub items: Vec<proto::Item>,
    /// Where the partition goes on; `None` when it has no items after the last returned.
    pub resume: Option<proto::Key>,
}

/// Work one core asks of another.
#[derive(Debug)]
pub enum Call {
    /// Serve this request: the receiving core owns every partition it touches.
    Request(proto::Request),
    /// Run one step of a scan on a partition the receiving core owns.
    Scan(ScanStep),
    /// Adopt this catalog: open the partitions it gives the core, drop those it took away.
    ApplyCatalog(Arc<Catalog>),
}

/// The answer to a [`Call`].
#[derive(Debug)]
pub enum Reply {
    /// To [`Call::Request`].
    Response(proto::Response),
    /// To [`Call::Scan`].
    Scan(Result<ScanStepPage, proto::Error>),
    /// To [`Call::ApplyCatalog`]: done, or why not.
    CatalogApplied(Result<(), String>),
}

/// One message on the mesh.
#[derive(Debug)]
pub enum Envelope {
    /// A call from core `from`, to be answered with its token.
    Call {
        /// The calling core.
        from: u32,
        /// Names the reply.
        token: u64,
        /// The work.
        call: Call,
    },
    /// The answer to the call with this token.
    Reply {
        /// The call's token.
        token: u64,
        /// The answer.
        reply: Reply,
    },
}

/// Why a call over the mesh failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshError {
    /// The core index does not exist or is this core.
    NoSuchPeer(u32),
    /// The peer's channel is closed (it is shutting down).
    PeerGone(u32),
}

impl fmt::Display for MeshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeshError::NoSuchPeer(c) => write!(f, "no core {c} on the mesh"),
            MeshError::PeerGone(c) => write!(f, "core {c} has left the mesh (shutting down)"),
        }
    }
}

impl std::error::Error for MeshError {}

/// One core's unconnected ends of the mesh, built on the main thread and moved into the
/// core's executor.
pub struct MeshPorts {
    me: u32,
    senders: Vec<Option<SharedSender<Envelope>>>,
    receivers: Vec<Option<SharedReceiver<Envelope>>>,
}

/// Builds the ends of a full mesh of `cores` cores: `result[i]` belongs to core `i`.
pub fn build(cores: usize) -> Vec<MeshPorts> {
    let mut ports: Vec<MeshPorts> = (0..cores)
        .map(|me| MeshPorts {
            me: me as u32,
            senders: (0..cores).map(|_| None).collect(),
            receivers: (0..cores).map(|_| None).collect(),
        })
        .collect();
    for from in 0..cores {
        for to in 0..cores {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(MESH_CHANNEL_MESSAGES_MAX);
                ports[from].senders[to] = Some(tx);
                ports[to].receivers[from] = Some(rx);
            }
        }
    }
    ports
}

impl MeshPorts {
    /// Connects every end concurrently (each end's connect waits for its peer's), on the
    /// core's executor. Returns the core's [`Mesh`] and its receivers, by peer.
    pub async fn connect(self) -> (Rc<Mesh>, Vec<(u32, ConnectedReceiver<Envelope>)>) {
        let senders: Vec<_> = self
            .senders
            .into_iter()
            .map(|s| s.map(|s| glommio::spawn_local(s.connect()).detach()))
            .collect();
        let receivers: Vec<_> = self
            .receivers
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|r| (i as u32, glommio::spawn_local(r.connect()).detach())))
            .collect();
        let mut connected_senders = Vec::with_capacity(senders.len());
        for s in senders {
            connected_senders.push(match s {
                Some(task) => Some(task.await.expect("a connect task runs to completion")),
                None => None,
            });
        }
        let mut connected_receivers = Vec::with_capacity(receivers.len());
        for (i, task) in receivers {
            connected_receivers.push((i, task.await.expect("a connect task runs to completion")));
        }
        let mesh = Rc::new(Mesh {
            me: self.me,
            senders: connected_senders,
            next_token: Cell::new(1),
            pending: RefCell::new(HashMap::new()),
            forwarded: Cell::new(0),
        });
        (mesh, connected_receivers)
    }
}

/// One core's connected mesh.
pub struct Mesh {
    me: u32,
    senders: Vec<Option<ConnectedSender<Envelope>>>,
    next_token: Cell<u64>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
    forwarded: Cell<u64>,
}

impl Mesh {
    /// This core's index.
    pub fn me(&self) -> u32 {
        self.me
    }

    /// Calls made from this core so far (requests forwarded, scan steps, broadcasts).
    pub fn forwarded(&self) -> u64 {
        self.forwarded.get()
    }

    async fn send(&self, to: u32, envelope: Envelope) -> Result<(), MeshError> {
        let Some(Some(sender)) = self.senders.get(to as usize) else {
            return Err(MeshError::NoSuchPeer(to));
        };
        sender
            .send(envelope)
            .await
            .map_err(|_| MeshError::PeerGone(to))
    }

    /// Sends `call` to core `to` and waits for its reply.
    pub async fn call(&self, to: u32, call: Call) -> Result<Reply, MeshError> {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(token, tx);
        self.forwarded.set(self.forwarded.get() + 1);
        if let Err(e) = self
            .send(
                to,
                Envelope::Call {
                    from: self.me,
                    token,
                    call,
                },
            )
            .await
        {
            self.pending.borrow_mut().remove(&token);
            return Err(e);
        }
        rx.await.ok_or(MeshError::PeerGone(to))
    }

    /// Answers a call from core `to`.
    pub async fn reply(&self, to: u32, token: u64, reply: Reply) -> Result<(), MeshError> {
        self.send(to, Envelope::Reply { token, reply }).await
    }

    /// Hands a reply to the task that made the call (dropped if that task is gone).
    pub fn deliver(&self, token: u64, reply: Reply) {
        if let Some(tx) = self.pending.borrow_mut().remove(&token) {
            tx.send(reply);
        }
    }

    /// Fails every call still waiting (its peer left): their tasks get `PeerGone`.
    pub fn fail_pending(&self) {
        self.pending.borrow_mut().clear();
    }

    /// Closes the sending ends: peers' receive loops end once they have drained.
    pub fn close(&self) {
        for s in self.senders.iter().flatten() {
            s.close();
        }
    }
}
