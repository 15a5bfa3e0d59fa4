//! Frames: a fixed header, then an rkyv payload.
//!
//! # Memory layout
//!
//! ```text
//!  0       4       6    7    8               16      20      24
//!  +-------+-------+----+----+---------------+-------+-------+------------------+
//!  | magic |version|kind|flag|  request id   |payload|payload| payload (rkyv)   |
//!  | PCR1  |  u16  | u8 | u8 |     u64       |  len  | crc32 | `len` bytes      |
//!  +-------+-------+----+----+---------------+-------+-------+------------------+
//! ```
//!
//! Integers are little-endian. The crc32 covers the payload only; the magic catches a
//! stream that has lost its framing, and the length is bounded by
//! [`FRAME_PAYLOAD_BYTES_MAX`]. A frame whose framing is lost (bad magic, a length over the
//! limit, an unknown kind or flag) cannot be skipped: the connection must close. A frame
//! whose framing holds but whose payload is bad (checksum, version, contents) can be
//! answered with a typed error and the connection goes on.
//!
//! The payload is copied into its own 16-byte-aligned buffer before `rkyv::access`
//! validates it, because archived types need their alignment and `access` wants exactly the
//! payload's bytes.

use rkyv::rancor::BoxedError;
use rkyv::util::AlignedVec;

use crate::cluster::{ClusterReply, ClusterRequest};
use crate::error::ArchivedError;
use crate::limits::FRAME_PAYLOAD_BYTES_MAX;
use crate::types::{ArchivedRequest, ArchivedResponse};
use crate::{Error, Request, Response};

/// The first four bytes of every frame: "PCR1".
pub const FRAME_MAGIC: [u8; 4] = *b"PCR1";

/// The frame format this build reads and writes. A new format is first deployed as
/// readable everywhere, then written.
pub const FORMAT_VERSION: u16 = 1;

/// The header's size.
pub const HEADER_BYTES: usize = 24;

/// Set on a request one core forwards to another (for counting; it changes nothing else).
pub const FLAG_FORWARDED: u8 = 1;

/// Every flag this version knows; any other bit set is lost framing.
const FLAGS_KNOWN: u8 = FLAG_FORWARDED;

/// Whether a frame is a request or a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Client to server.
    Request = 1,
    /// Server to client.
    Response = 2,
    /// A cluster message ([`crate::cluster::ClusterRequest`]): to the metadata service, or
    /// from it to a node.
    Cluster = 3,
    /// The answer to a cluster message ([`crate::cluster::ClusterReply`]).
    ClusterReply = 4,
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The payload's format version.
    pub version: u16,
    /// Request or response.
    pub kind: FrameKind,
    /// Flag bits (see `FLAG_*`).
    pub flags: u8,
    /// Chosen by the client; the response carries the same one.
    pub request_id: u64,
    /// The payload's size.
    pub payload_bytes: u32,
    /// The crc32 of the payload.
    pub payload_crc32: u32,
}

/// Why a byte stream can no longer be read as frames: the connection must close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FramingLost {
    /// The first four bytes are not [`FRAME_MAGIC`].
    BadMagic {
        /// What was there.
        got: [u8; 4],
    },
    /// The payload length is over [`FRAME_PAYLOAD_BYTES_MAX`].
    PayloadTooLarge {
        /// The length in the header.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The kind byte is none of the known kinds.
    BadKind {
        /// What was there.
        got: u8,
    },
    /// A flag bit this version does not know is set.
    UnknownFlags {
        /// The flags byte.
        got: u8,
    },
}

impl std::fmt::Display for FramingLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FramingLost::BadMagic { got } => write!(f, "bad frame magic {got:02x?}"),
            FramingLost::PayloadTooLarge { bytes, max } => {
                write!(
                    f,
                    "frame payload of {bytes} bytes is over the limit of {max}"
                )
            }
            FramingLost::BadKind { got } => write!(f, "unknown frame kind {got}"),
            FramingLost::UnknownFlags { got } => write!(f, "unknown frame flags {got:#04x}"),
        }
    }
}

impl std::error::Error for FramingLost {}

impl FrameHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..4].copy_from_slice(&FRAME_MAGIC);
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6] = self.kind as u8;
        b[7] = self.flags;
        b[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        b[16..20].copy_from_slice(&self.payload_bytes.to_le_bytes());
        b[20..24].copy_from_slice(&self.payload_crc32.to_le_bytes());
        b
    }

    /// Decodes a header; fails when the framing is lost. The version is not checked here:
    /// a frame of another version can still be skipped and answered.
    pub fn decode(b: &[u8; HEADER_BYTES]) -> Result<FrameHeader, FramingLost> {
        let got: [u8; 4] = b[0..4].try_into().expect("4 bytes");
        if got != FRAME_MAGIC {
            return Err(FramingLost::BadMagic { got });
        }
        let kind = match b[6] {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::Cluster,
            4 => FrameKind::ClusterReply,
            got => return Err(FramingLost::BadKind { got }),
        };
        let flags = b[7];
        if flags & !FLAGS_KNOWN != 0 {
            return Err(FramingLost::UnknownFlags { got: flags });
        }
        let payload_bytes = u32::from_le_bytes(b[16..20].try_into().expect("4 bytes"));
        if payload_bytes as usize > FRAME_PAYLOAD_BYTES_MAX {
            return Err(FramingLost::PayloadTooLarge {
                bytes: payload_bytes as u64,
                max: FRAME_PAYLOAD_BYTES_MAX as u64,
            });
        }
        Ok(FrameHeader {
            version: u16::from_le_bytes(b[4..6].try_into().expect("2 bytes")),
            kind,
            flags,
            request_id: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            payload_bytes,
            payload_crc32: u32::from_le_bytes(b[20..24].try_into().expect("4 bytes")),
        })
    }
}

/// One whole frame: its header and its payload, aligned for rkyv.
#[derive(Debug)]
pub struct Frame {
    /// The header.
    pub header: FrameHeader,
    /// The payload, in its own aligned buffer.
    pub payload: AlignedVec<16>,
}

/// A sans-I/O frame splitter: push the bytes read from a connection, take whole frames.
///
/// ```
/// let bytes = proto::encode_request(7, &proto::Request::DescribeTable { name: "t1x".into() }, 0);
/// let mut reader = proto::FrameReader::new();
/// reader.push(&bytes[..5]);
/// assert!(reader.next_frame().unwrap().is_none());
/// reader.push(&bytes[5..]);
/// let frame = reader.next_frame().unwrap().unwrap();
/// assert_eq!(frame.header.request_id, 7);
/// assert_eq!(proto::decode_request(&frame).unwrap(), proto::Request::DescribeTable { name: "t1x".into() });
/// ```
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Where unread bytes start in `buf`; compacted lazily so a burst of small frames does
    /// not move bytes once per frame.
    start: usize,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes pushed but not yet taken as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, `None` if more bytes are needed, or the reason the framing is
    /// lost (then the connection must close: nothing after this point can be trusted).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingLost> {
        let unread = &self.buf[self.start..];
        if unread.len() < HEADER_BYTES {
            return Ok(None);
        }
        let header = FrameHeader::decode(unread[..HEADER_BYTES].try_into().expect("header"))?;
        let total = HEADER_BYTES + header.payload_bytes as usize;
        if unread.len() < total {
            return Ok(None);
        }
        let mut payload = AlignedVec::<16>::with_capacity(header.payload_bytes as usize);
        payload.extend_from_slice(&unread[HEADER_BYTES..total]);
        self.start += total;
        Ok(Some(Frame { header, payload }))
    }
}

fn encode<T>(kind: FrameKind, request_id: u64, flags: u8, value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    // Serialising owned, in-memory values cannot fail (no shared pointers, no limits).
    let payload =
        rkyv::to_bytes::<rkyv::rancor::Error>(value).expect("serialising a value in memory");
    let header = FrameHeader {
        version: FORMAT_VERSION,
        kind,
        flags,
        request_id,
        payload_bytes: payload.len() as u32,
        payload_crc32: crc32fast::hash(&payload),
    };
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(&payload);
    out
}

/// Encodes a request frame (header and payload). `flags` is 0 unless forwarding.
pub fn encode_request(request_id: u64, request: &Request, flags: u8) -> Vec<u8> {
    encode(FrameKind::Request, request_id, flags, request)
}

/// Encodes a response frame. A response over [`FRAME_PAYLOAD_BYTES_MAX`] would be lost
/// framing at the client, so the server must keep pages and batches under it; this
/// replaces such a response with an internal error rather than send it.
pub fn encode_response(request_id: u64, response: &Response) -> Vec<u8> {
    let out = encode(FrameKind::Response, request_id, 0, response);
    if out.len() - HEADER_BYTES > FRAME_PAYLOAD_BYTES_MAX {
        let e = Response::Error(Error::internal(format!(
            "the response was {} bytes, over the frame limit of {FRAME_PAYLOAD_BYTES_MAX}",
            out.len() - HEADER_BYTES
        )));
        return encode(FrameKind::Response, request_id, 0, &e);
    }
    out
}

fn check(frame: &Frame, kind: FrameKind) -> Result<(), Error> {
    check_header(frame, kind)?;
    check_checksum(frame)
}

fn check_header(frame: &Frame, kind: FrameKind) -> Result<(), Error> {
    if frame.header.version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            got: frame.header.version,
            supported: FORMAT_VERSION,
        });
    }
    if frame.header.kind != kind {
        return Err(Error::bad_frame(format!(
            "expected a {kind:?} frame, got a {:?}",
            frame.header.kind
        )));
    }
    Ok(())
}

/// Checks a frame's payload against its header's crc32.
pub fn check_checksum(frame: &Frame) -> Result<(), Error> {
    let crc = crc32fast::hash(&frame.payload);
    if crc != frame.header.payload_crc32 {
        return Err(Error::bad_frame(format!(
            "payload crc32 {crc:#010x} does not match the header's {:#010x}",
            frame.header.payload_crc32
        )));
    }
    Ok(())
}

/// Checks a request frame's header and checksum (version, kind, crc32): done once per
/// frame, by whoever reads it off the wire. Errors are the ones to answer the client with.
pub fn check_request(frame: &Frame) -> Result<(), Error> {
    check(frame, FrameKind::Request)
}

/// Validates the payload of a frame [`check_request`] accepted with `rkyv::access` and
/// returns the archived request in place: what a relay reads (the table, the partition
/// key) without copying the request out, and without computing the checksum again.
pub fn access_checked_request(frame: &Frame) -> Result<&ArchivedRequest, Error> {
    rkyv::access::<ArchivedRequest, BoxedError>(&frame.payload)
        .map_err(|e| Error::bad_frame(format!("not a valid request: {e}")))
}

/// [`check_request`], then [`access_checked_request`].
pub fn access_request(frame: &Frame) -> Result<&ArchivedRequest, Error> {
    check_request(frame)?;
    access_checked_request(frame)
}

/// Returns a request frame [`check_request`] accepted, owned (validated with
/// `rkyv::access` first).
pub fn decode_checked_request(frame: &Frame) -> Result<Request, Error> {
    rkyv::deserialize::<Request, BoxedError>(access_checked_request(frame)?)
        .map_err(|e| Error::bad_frame(format!("not a valid request: {e}")))
}

/// Checks a request frame like [`access_request`] and returns the request owned.
pub fn decode_request(frame: &Frame) -> Result<Request, Error> {
    check_request(frame)?;
    decode_checked_request(frame)
}

/// Checks a response frame and returns the archived response in place (the client's and
/// the relay's side of [`access_request`]).
pub fn access_response(frame: &Frame) -> Result<&ArchivedResponse, Error> {
    check(frame, FrameKind::Response)?;
    rkyv::access::<ArchivedResponse, BoxedError>(&frame.payload)
        .map_err(|e| Error::bad_frame(format!("not a valid response: {e}")))
}

/// [`access_response`] without the checksum: the version and kind are checked and the
/// payload validated with `rkyv::access` (so reading it is safe), but a flipped bit is not
/// caught. For a caller that checks the checksum itself ([`check_checksum`]) when it acts on
/// what it read, or a relay that passes the frame on unchanged to a client that checks it,
/// end to end.
pub fn access_response_unchecksummed(frame: &Frame) -> Result<&ArchivedResponse, Error> {
    check_header(frame, FrameKind::Response)?;
    rkyv::access::<ArchivedResponse, BoxedError>(&frame.payload)
        .map_err(|e| Error::bad_frame(format!("not a valid response: {e}")))
}

/// Returns a response frame [`access_response`] accepted, owned: validated with
/// `rkyv::access` again (no copy), its checksum not computed twice.
pub fn decode_checked_response(frame: &Frame) -> Result<Response, Error> {
    let archived = rkyv::access::<ArchivedResponse, BoxedError>(&frame.payload)
        .map_err(|e| Error::bad_frame(format!("not a valid response: {e}")))?;
    rkyv::deserialize::<Response, BoxedError>(archived)
        .map_err(|e| Error::bad_frame(format!("not a valid response: {e}")))
}

/// Returns an archived error owned (what a relay reads of an error answer).
pub fn deserialize_error(archived: &ArchivedError) -> Result<Error, Error> {
    rkyv::deserialize::<Error, BoxedError>(archived)
        .map_err(|e| Error::bad_frame(format!("not a valid error answer: {e}")))
}

/// Checks a response frame and returns it owned (the client's side of [`decode_request`]).
pub fn decode_response(frame: &Frame) -> Result<Response, Error> {
    access_response(frame)?;
    decode_checked_response(frame)
}

/// Encodes a cluster message frame.
pub fn encode_cluster(request_id: u64, request: &ClusterRequest) -> Vec<u8> {
    encode(FrameKind::Cluster, request_id, 0, request)
}

/// Encodes the answer to a cluster message. Like [`encode_response`], an answer over the
/// frame limit is replaced by an internal error.
pub fn encode_cluster_reply(request_id: u64, reply: &ClusterReply) -> Vec<u8> {
    let out = encode(FrameKind::ClusterReply, request_id, 0, reply);
    if out.len() - HEADER_BYTES > FRAME_PAYLOAD_BYTES_MAX {
        let e = ClusterReply::Error(Error::internal(format!(
            "the reply was {} bytes, over the frame limit of {FRAME_PAYLOAD_BYTES_MAX}",
            out.len() - HEADER_BYTES
        )));
        return encode(FrameKind::ClusterReply, request_id, 0, &e);
    }
    out
}

/// Checks a cluster message frame and returns it owned (validated with `rkyv::access`).
pub fn decode_cluster(frame: &Frame) -> Result<ClusterRequest, Error> {
    check(frame, FrameKind::Cluster)?;
    let archived =
        rkyv::access::<crate::cluster::ArchivedClusterRequest, BoxedError>(&frame.payload)
            .map_err(|e| Error::bad_frame(format!("not a valid cluster message: {e}")))?;
    rkyv::deserialize::<ClusterRequest, BoxedError>(archived)
        .map_err(|e| Error::bad_frame(format!("not a valid cluster message: {e}")))
}

/// Checks a cluster reply frame and returns it owned.
pub fn decode_cluster_reply(frame: &Frame) -> Result<ClusterReply, Error> {
    check(frame, FrameKind::ClusterReply)?;
    let archived = rkyv::access::<crate::cluster::ArchivedClusterReply, BoxedError>(&frame.payload)
        .map_err(|e| Error::bad_frame(format!("not a valid cluster reply: {e}")))?;
    rkyv::deserialize::<ClusterReply, BoxedError>(archived)
        .map_err(|e| Error::bad_frame(format!("not a valid cluster reply: {e}")))
}

/// Feeds arbitrary bytes through the whole decoding path, as a connection would: split into
/// frames, then decode each as a request and as a response. It must return errors, never
/// panic. Shared by the cargo-fuzz target and its proptest twin.
pub fn fuzz_one(data: &[u8]) {
    let mut reader = FrameReader::new();
    // Push in two pieces so that partial frames are exercised too.
    let cut = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    reader.push(&data[..cut]);
    let mut frames = Vec::new();
    loop {
        match reader.next_frame() {
            Ok(Some(f)) => frames.push(f),
            Ok(None) if cut < data.len() && reader.buffered_bytes() <= data.len() => {
                reader.push(&data[cut..]);
                while let Ok(Some(f)) = reader.next_frame() {
                    frames.push(f);
                }
                break;
            }
            _ => break,
        }
    }
    for frame in &frames {
        if let Ok(request) = decode_request(frame) {
            // Whatever decodes must validate without panicking and encode back.
            let _ = crate::validate(&request);
            let again = encode_request(frame.header.request_id, &request, 0);
            let mut r = FrameReader::new();
            r.push(&again);
            let f = r.next_frame().expect("own frame").expect("whole frame");
            assert_eq!(decode_request(&f).expect("own request"), request);
        }
        let _ = decode_response(frame);
        // Without the checksum's gate, random payloads reach the validator.
        if let Ok(ArchivedResponse::Error(e)) = access_response_unchecksummed(frame) {
            let _ = deserialize_error(e);
        }
        if let Ok(message) = decode_cluster(frame) {
            let again = encode_cluster(frame.header.request_id, &message);
            let mut r = FrameReader::new();
            r.push(&again);
            let f = r.next_frame().expect("own frame").expect("whole frame");
            assert_eq!(decode_cluster(&f).expect("own message"), message);
        }
        let _ = decode_cluster_reply(frame);
    }
}
