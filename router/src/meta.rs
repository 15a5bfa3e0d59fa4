//! One core's link to the metadata service: a few `client::ClusterConn`s, each carrying one
//! call at a time, every call bounded in time.
//!
//! Lookups and the sync are idempotent: they reuse an idle connection, and one that turns
//! out to be dead (meta restarted since) is replaced and the call made once more. Table
//! creates and deletes are not: each goes on a fresh connection, so that a failure to
//! connect (nothing was sent: meta is unreachable) can be told apart from a failure after
//! sending (the outcome is unknown, and the client must not be told to simply retry).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use client::ClusterConn;
use futures_lite::future;
use glommio::sync::Semaphore;
use proto::cluster::{ClusterReply, ClusterRequest, Route};
use proto::{Error, Request, Response};

use crate::limits::{META_CALL_TIMEOUT_MS, META_CONNECTIONS_PER_CORE_MAX};

/// Why a call to the metadata service did not get an answer.
#[derive(Debug, Clone)]
enum Failure {
    /// No connection could be opened: nothing was sent.
    Unreachable(String),
    /// Sent, then the connection failed or timed out: the outcome is unknown.
    Lost(String),
}

/// One core's link to the metadata service (see the module doc).
pub struct MetaLink {
    addr: SocketAddr,
    idle: RefCell<Vec<ClusterConn>>,
    room: Semaphore,
    timeout: Duration,
}

impl MetaLink {
    /// A link to meta at `addr`; connects lazily.
    pub fn new(addr: SocketAddr) -> MetaLink {
        MetaLink {
            addr,
            idle: RefCell::new(Vec::new()),
            room: Semaphore::new(META_CONNECTIONS_PER_CORE_MAX as u64),
            timeout: Duration::from_millis(META_CALL_TIMEOUT_MS),
        }
    }

    /// The metadata service's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn unreachable(&self, why: &str) -> Error {
        Error::unavailable(format!(
            "the metadata service at {} is unreachable: {why}",
            self.addr
        ))
    }

    /// A cluster call (idempotent: lookups, maps, the sync). A meta error answer comes back
    /// as that error; no answer as `Unavailable` naming the metadata service.
    pub async fn call(&self, request: &ClusterRequest) -> Result<ClusterReply, Error> {
        match self.idempotent(Call::Cluster(request)).await? {
            Answer::Cluster(ClusterReply::Error(e)) => Err(e),
            Answer::Cluster(r) => Ok(r),
            Answer::Native(_) => Err(Error::internal("a native answer to a cluster call")),
        }
    }

    /// The route of the partition holding `hash` in `table`.
    pub async fn lookup(&self, table: &str, hash: u128) -> Result<Route, Error> {
        let request = ClusterRequest::Lookup {
            table: table.to_string(),
            hash,
        };
        match self.call(&request).await? {
            ClusterReply::Route(r) => Ok(r),
            other => Err(unexpected("Lookup", &other)),
        }
    }

    /// Every route of a table.
    pub async fn table_map(&self, table: &str) -> Result<Vec<Route>, Error> {
        let request = ClusterRequest::TableMap {
            table: table.to_string(),
        };
        match self.call(&request).await? {
            ClusterReply::Routes(r) => Ok(r),
            other => Err(unexpected("TableMap", &other)),
        }
    }

    /// A native table-admin request, relayed. Its answer (an error answer included) is what
    /// meta said; no answer is `Unavailable` if nothing was sent, or, for a create or a
    /// delete that was sent, `Internal` saying that its outcome is unknown.
    pub async fn admin(&self, request: &Request) -> Result<Response, Error> {
        if request.is_idempotent() {
            return match self.idempotent(Call::Native(request)).await? {
                Answer::Native(r) => Ok(r),
                Answer::Cluster(_) => Err(Error::internal("a cluster answer to a native call")),
            };
        }
        let _room = self
            .room
            .acquire_permit(1)
            .await
            .map_err(|_| self.unreachable("the router is stopping"))?;
        let mut conn = ClusterConn::connect(self.addr, self.timeout)
            .await
            .map_err(|e| self.unreachable(&e.to_string()))?;
        match self.bounded(conn.call_native(request)).await {
            Ok(r) => {
                self.park(conn);
                Ok(r)
            }
            Err(Failure::Unreachable(e)) => Err(self.unreachable(&e)),
            Err(Failure::Lost(e)) => Err(Error::internal(format!(
                "the metadata service at {} stopped answering after the request was sent \
                 ({e}): its outcome is unknown; describe the table to find out",
                self.addr
            ))),
        }
    }

    /// Runs an idempotent call on an idle connection (or a new one); a reused connection
    /// that fails is replaced once.
    async fn idempotent(&self, call: Call<'_>) -> Result<Answer, Error> {
        let _room = self
            .room
            .acquire_permit(1)
            .await
            .map_err(|_| self.unreachable("the router is stopping"))?;
        let mut reused = self.idle.borrow_mut().pop();
        loop {
            let was_reused = reused.is_some();
            let mut conn = match reused.take() {
                Some(c) => c,
                None => ClusterConn::connect(self.addr, self.timeout)
                    .await
                    .map_err(|e| self.unreachable(&e.to_string()))?,
            };
            match self.bounded(call.once(&mut conn)).await {
                Ok(answer) => {
                    self.park(conn);
                    return Ok(answer);
                }
                // A connection that sat idle may have died with a previous meta process:
                // try once on a fresh one.
                Err(_) if was_reused => continue,
                Err(Failure::Unreachable(e)) | Err(Failure::Lost(e)) => {
                    return Err(self.unreachable(&e))
                }
            }
        }
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = client::Result<T>>,
    ) -> Result<T, Failure> {
        let timeout = self.timeout;
        let outcome = future::or(async { Some(call.await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        match outcome {
            Some(Ok(answer)) => Ok(answer),
            Some(Err(client::Error::Io(e)))
                if e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                Err(Failure::Unreachable(e.to_string()))
            }
            Some(Err(e)) => Err(Failure::Lost(e.to_string())),
            None => Err(Failure::Lost(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    fn park(&self, conn: ClusterConn) {
        if !conn.is_broken() {
            let mut idle = self.idle.borrow_mut();
            if idle.len() < META_CONNECTIONS_PER_CORE_MAX {
                idle.push(conn);
            }
        }
    }

    /// Closes the idle connections (at shutdown).
    pub fn close(&self) {
        self.idle.borrow_mut().clear();
        self.room.close();
    }
}

/// An idempotent call, made again on a fresh connection if a reused one fails.
#[derive(Clone, Copy)]
enum Call<'a> {
    Cluster(&'a ClusterRequest),
    Native(&'a Request),
}

enum Answer {
    Cluster(ClusterReply),
    Native(Response),
}

impl Call<'_> {
    async fn once(self, conn: &mut ClusterConn) -> client::Result<Answer> {
        match self {
            Call::Cluster(r) => conn.call(r).await.map(Answer::Cluster),
            Call::Native(r) => conn.call_native(r).await.map(Answer::Native),
        }
    }
}

fn unexpected(asked: &str, got: &ClusterReply) -> Error {
    let name = match got {
        ClusterReply::Ok => "Ok",
        ClusterReply::Assigned { .. } => "Assigned",
        ClusterReply::Route(_) => "Route",
        ClusterReply::Routes(_) => "Routes",
        ClusterReply::SyncRoot { .. } => "SyncRoot",
        ClusterReply::Expansions(_) => "Expansions",
        ClusterReply::Nodes(_) => "Nodes",
        ClusterReply::Error(_) => "Error",
    };
    Error::internal(format!("the metadata service answered {asked} with {name}"))
}
