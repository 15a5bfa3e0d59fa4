//! The client's typed errors.

use std::fmt;
use std::io;
use std::sync::Arc;

/// Why a call failed. `Server` errors are the server's answer; the others happened on the
/// way (and for a write, except [`Error::FrameTooLarge`], leave its outcome unknown).
#[derive(Clone, Debug)]
pub enum Error {
    /// The server answered with this error.
    Server(proto::Error),
    /// Connecting, reading or writing failed. Shared so that every request in flight on a
    /// broken connection can carry the same cause.
    Io(Arc<io::Error>),
    /// No answer within the configured request timeout.
    Timeout,
    /// The connection closed (the server hung up, or the client is shutting the connection
    /// down) before the answer came.
    Closed,
    /// The server's bytes broke the protocol.
    Protocol(ProtocolError),
    /// The request's frame would be over the protocol's frame limit; it was not sent (the
    /// server would have to close the connection, failing every other request on it).
    FrameTooLarge {
        /// The encoded payload's size.
        payload_bytes: usize,
        /// [`proto::limits::FRAME_PAYLOAD_BYTES_MAX`].
        max: usize,
    },
}

/// How the server's bytes broke the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// The byte stream lost its framing; the connection was closed.
    FramingLost(proto::FramingLost),
    /// A response frame's payload was bad (checksum, version, not a valid response).
    BadResponse(proto::Error),
    /// A response named a request id that is not in flight; the connection was closed.
    UnknownRequestId {
        /// The id in the response.
        request_id: u64,
    },
    /// The server answered with a response of the wrong kind for the request.
    UnexpectedResponse {
        /// What the request expects.
        expected: &'static str,
        /// What came (the response's variant name).
        got: &'static str,
    },
    /// A frame of the wrong kind (a request) came from the server.
    NotAResponse {
        /// The frame's request id.
        request_id: u64,
    },
}

impl Error {
    /// The server error, if the server answered with one.
    pub fn server(&self) -> Option<&proto::Error> {
        match self {
            Error::Server(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(Arc::new(e))
    }
}

impl From<proto::Error> for Error {
    fn from(e: proto::Error) -> Error {
        Error::Server(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Server(e) => write!(f, "server: {e}"),
            Error::Io(e) => write!(f, "i/o: {e}"),
            Error::Timeout => write!(f, "no answer within the request timeout"),
            Error::Closed => write!(f, "the connection closed before the answer came"),
            Error::Protocol(e) => write!(f, "protocol: {e}"),
            Error::FrameTooLarge { payload_bytes, max } => write!(
                f,
                "the request's frame payload is {payload_bytes} bytes, over the limit of {max}; \
                 it was not sent"
            ),
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::FramingLost(e) => write!(f, "{e}"),
            ProtocolError::BadResponse(e) => write!(f, "bad response: {e}"),
            ProtocolError::UnknownRequestId { request_id } => {
                write!(
                    f,
                    "a response for request {request_id}, which is not in flight"
                )
            }
            ProtocolError::UnexpectedResponse { expected, got } => {
                write!(f, "expected a {expected} response, got {got}")
            }
            ProtocolError::NotAResponse { request_id } => {
                write!(f, "the server sent a request frame (id {request_id})")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Server(e) => Some(e),
            Error::Io(e) => Some(&**e),
            _ => None,
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A client result.
pub type Result<T> = std::result::Result<T, Error>;
