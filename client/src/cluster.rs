//! A plain connection for cluster traffic: a node or a router talking to the metadata
//! service, or the metadata service to a node.
//!
//! Cluster messages are few (a heartbeat a second, a sync round per refresh, an assignment
//! per table change), so this connection carries one request at a time and needs no
//! pipeline: send a frame, read frames until the answer with the same id comes. A failure
//! closes it; the caller connects again. Every wait is bounded by the timeout given at
//! connect, so a dead peer costs at most that long.

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use proto::cluster::{ClusterReply, ClusterRequest};
use proto::{Frame, FrameReader, Request, Response};

use crate::error::{Error, ProtocolError, Result};

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// One connection to a cluster peer (see the module doc).
pub struct ClusterConn {
    stream: TcpStream,
    reader: FrameReader,
    next_id: u64,
    timeout: Duration,
    addr: SocketAddr,
    broken: bool,
}

impl ClusterConn {
    /// Connects to `addr`; `timeout` bounds the connect and, later, each call.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<ClusterConn> {
        let timeout = timeout.max(Duration::from_millis(1));
        let stream = TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(|e| Error::from(std::io::Error::from(e)))?;
        stream.set_nodelay(true).map_err(std::io::Error::from)?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(std::io::Error::from)?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(std::io::Error::from)?;
        Ok(ClusterConn {
            stream,
            reader: FrameReader::new(),
            next_id: 1,
            timeout,
            addr,
            broken: false,
        })
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The timeout given at connect.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a failed call broke the connection (the caller should connect again).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Sends a cluster message and waits for its answer. An `Error` answer comes back as
    /// `Ok(ClusterReply::Error(..))`: the call itself worked.
    pub async fn call(&mut self, request: &ClusterRequest) -> Result<ClusterReply> {
        let id = self.take_id();
        let frame = proto::encode_cluster(id, request);
        let answer = self.exchange(id, &frame).await?;
        proto::decode_cluster_reply(&answer)
            .map_err(|e| self.fail(Error::Protocol(ProtocolError::BadResponse(e))))
    }

    /// Sends a native request (table admin, forwarded to the metadata service) and waits for
    /// its answer.
    pub async fn call_native(&mut self, request: &Request) -> Result<Response> {
        let id = self.take_id();
        let frame = proto::encode_request(id, request, 0);
        let answer = self.exchange(id, &frame).await?;
        proto::decode_response(&answer)
            .map_err(|e| self.fail(Error::Protocol(ProtocolError::BadResponse(e))))
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn fail(&mut self, e: Error) -> Error {
        self.broken = true;
        e
    }

    async fn exchange(&mut self, id: u64, frame: &[u8]) -> Result<Frame> {
        if self.broken {
            return Err(Error::Closed);
        }
        if let Err(e) = self.stream.write_all(frame).await {
            return Err(self.fail(timeout_or_io(e)));
        }
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        loop {
            match self.reader.next_frame() {
                Ok(Some(f)) if f.header.request_id == id => return Ok(f),
                // An answer to an earlier call that timed out on our side: skip it.
                Ok(Some(f)) if f.header.request_id < id => continue,
                Ok(Some(f)) => {
                    return Err(self.fail(Error::Protocol(ProtocolError::UnknownRequestId {
                        request_id: f.header.request_id,
                    })))
                }
                Ok(None) => {}
                Err(e) => return Err(self.fail(Error::Protocol(ProtocolError::FramingLost(e)))),
            }
            match self.stream.read(&mut buf).await {
                Ok(0) => return Err(self.fail(Error::Closed)),
                Ok(n) => self.reader.push(&buf[..n]),
                Err(e) => return Err(self.fail(timeout_or_io(e))),
            }
        }
    }
}

fn timeout_or_io(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock {
        Error::Timeout
    } else {
        Error::from(e)
    }
}
