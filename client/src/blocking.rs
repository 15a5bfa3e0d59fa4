//! A blocking client over `std::net`, one request at a time, for tests and tools.
//!
//! It never retries (a test wants to see every answer) and never checks a request before
//! sending it (a test wants the server's answer to a bad one). [`Client::send_raw`] and
//! [`Client::read_frame`] write and read arbitrary bytes, for protocol-abuse tests.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::Duration;

use proto::{
    Condition, Consistency, CreateTable, Frame, FrameReader, Item, Key, Query, Request, Response,
    Scan, TableDescription, WriteOp, WriteOutcome,
};

use crate::limits::SOCKET_READ_BYTES;
use crate::ops::{self, BatchItems, Deleted, QueryPage, ScanPage, TablesPage};
use crate::{Error, ProtocolError, Result};

/// One blocking connection.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    frames: FrameReader,
    next_request_id: u64,
}

impl Client {
    /// Connects, with a read and write timeout of `timeout` (`None`: wait forever).
    pub fn connect(addr: impl ToSocketAddrs, timeout: Option<Duration>) -> Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        Ok(Client {
            stream,
            frames: FrameReader::new(),
            next_request_id: 1,
        })
    }

    /// The socket, for tests that need to poke at it.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends a request and waits for its answer; the server's error answer is
    /// `Err(Error::Server)`. An answer with another request id is a protocol error.
    pub fn call(&mut self, request: &Request) -> Result<Response> {
        let id = self.send(request)?;
        let (got, response) = self.read_response()?;
        if got != id {
            return Err(Error::Protocol(ProtocolError::UnknownRequestId {
                request_id: got,
            }));
        }
        ops::into_result(response)
    }

    /// Sends a request without waiting; returns its request id.
    pub fn send(&mut self, request: &Request) -> Result<u64> {
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.send_raw(&proto::encode_request(id, request, 0))?;
        Ok(id)
    }

    /// Writes raw bytes to the connection.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Reads the next whole frame; the server closing the connection is `Err(Closed)`.
    pub fn read_frame(&mut self) -> Result<Frame> {
        let mut buf = vec![0u8; SOCKET_READ_BYTES];
        loop {
            match self.frames.next_frame() {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(lost) => return Err(Error::Protocol(ProtocolError::FramingLost(lost))),
            }
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(Error::Closed);
            }
            self.frames.push(&buf[..n]);
        }
    }

    /// Sends a cluster message (admin: list nodes, move a partition; or as meta to a node)
    /// and waits for its answer; an error answer is `Ok(ClusterReply::Error(..))`.
    pub fn cluster_call(
        &mut self,
        request: &proto::cluster::ClusterRequest,
    ) -> Result<proto::cluster::ClusterReply> {
        self.send_raw(&proto::encode_cluster(1, request))?;
        let frame = self.read_frame()?;
        proto::decode_cluster_reply(&frame)
            .map_err(|e| Error::Protocol(ProtocolError::BadResponse(e)))
    }

    /// Reads the next response: its request id and the answer (an error answer included).
    pub fn read_response(&mut self) -> Result<(u64, Response)> {
        let frame = self.read_frame()?;
        let id = frame.header.request_id;
        let response = proto::decode_response(&frame)
            .map_err(|e| Error::Protocol(ProtocolError::BadResponse(e)))?;
        Ok((id, response))
    }

    /// Whether the server has closed the connection: waits up to `timeout` for the end of
    /// the stream. Bytes that arrive meanwhile are kept for [`Client::read_frame`].
    pub fn is_closed_by_server(&mut self, timeout: Duration) -> Result<bool> {
        let previous = self.stream.read_timeout()?;
        self.stream.set_read_timeout(Some(timeout))?;
        let mut buf = vec![0u8; SOCKET_READ_BYTES];
        let outcome = loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break Ok(true),
                Ok(n) => self.frames.push(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break Ok(false)
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Ok(true),
                Err(e) => break Err(Error::from(e)),
            }
        };
        self.stream.set_read_timeout(previous)?;
        outcome
    }

    /// Closes the connection.
    pub fn close(self) {
        // The peer may have closed it already; nothing to do about a failure here.
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Creates a table.
    pub fn create_table(&mut self, table: CreateTable) -> Result<TableDescription> {
        ops::table(self.call(&Request::CreateTable(table)))
    }

    /// Describes a table.
    pub fn describe_table(&mut self, name: &str) -> Result<TableDescription> {
        ops::table(self.call(&Request::DescribeTable {
            name: name.to_owned(),
        }))
    }

    /// One page of table names, after `start_after`; `limit` 0 takes the server's page size.
    pub fn list_tables(&mut self, start_after: Option<&str>, limit: u32) -> Result<TablesPage> {
        ops::tables(self.call(&Request::ListTables {
            start_after: start_after.map(str::to_owned),
            limit,
        }))
    }

    /// Deletes a table and every item in it.
    pub fn delete_table(&mut self, name: &str) -> Result<TableDescription> {
        ops::table(self.call(&Request::DeleteTable {
            name: name.to_owned(),
        }))
    }

    /// Writes an item unconditionally; returns its version.
    pub fn put(&mut self, table: &str, key: Key, value: Vec<u8>) -> Result<u64> {
        self.put_if(table, key, value, Condition::None)
    }

    /// Writes an item if `condition` holds; returns its version.
    pub fn put_if(
        &mut self,
        table: &str,
        key: Key,
        value: Vec<u8>,
        condition: Condition,
    ) -> Result<u64> {
        ops::written(self.call(&ops::put_request(table, key, value, condition)))
    }

    /// Reads an item; a missing one is `Ok(None)`.
    pub fn get(&mut self, table: &str, key: Key, consistency: Consistency) -> Result<Option<Item>> {
        ops::item(self.call(&ops::get_request(table, key, consistency)))
    }

    /// Deletes an item if `condition` holds.
    pub fn delete(&mut self, table: &str, key: Key, condition: Condition) -> Result<Deleted> {
        ops::deleted(self.call(&ops::delete_request(table, key, condition)))
    }

    /// One page of a query.
    pub fn query(&mut self, query: Query) -> Result<QueryPage> {
        ops::query_page(self.call(&Request::Query(query)))
    }

    /// Every item of a query, following its pages.
    pub fn query_all(&mut self, mut query: Query) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        loop {
            let page = self.query(query.clone())?;
            items.extend(page.items);
            match page.resume {
                Some(r) => query.resume = Some(r),
                None => return Ok(items),
            }
        }
    }

    /// One page of a scan.
    pub fn scan(&mut self, scan: Scan) -> Result<ScanPage> {
        ops::scan_page(self.call(&Request::Scan(scan)))
    }

    /// Every item of a table, following the scan's pages.
    pub fn scan_all(&mut self, mut scan: Scan) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        loop {
            let page = self.scan(scan.clone())?;
            items.extend(page.items);
            match page.resume {
                Some(r) => scan.resume = Some(r),
                None => return Ok(items),
            }
        }
    }

    /// Reads many items.
    pub fn batch_get(
        &mut self,
        table: &str,
        keys: Vec<Key>,
        consistency: Consistency,
    ) -> Result<BatchItems> {
        ops::batch_items(self.call(&ops::batch_get_request(table, keys, consistency)))
    }

    /// Writes many items; one outcome per write, in order.
    pub fn batch_write(&mut self, table: &str, writes: Vec<WriteOp>) -> Result<Vec<WriteOutcome>> {
        ops::batch_written(self.call(&ops::batch_write_request(table, writes)))
    }
}
