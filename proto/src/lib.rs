//! percore's wire protocol: frames, requests, responses, typed errors, limits, placement.
//!
//! # What it owns
//!
//! Everything two percore processes (or a client and a server) must agree on byte for byte:
//!
//! - [`frame`]: a 24-byte header (magic, format version, kind, flags, request id, payload
//!   length, payload crc32) and an rkyv payload, a sans-I/O [`FrameReader`] that splits a
//!   byte stream into frames, and the encoders and validating decoders;
//! - [`Request`] and [`Response`], one struct per operation, and [`Error`], the typed errors
//!   every server answers with (each names what was wrong);
//! - [`limits`]: every size limit, with the reason for each;
//! - [`validate()`]: the checks a request must pass before anything else touches it;
//! - [`partition_key_hash`] and [`partition_index`]: the 128-bit placement hash, fixed forever.
//!
//! # What it never does
//!
//! No I/O, no runtime, no allocation it does not hand back. It never trusts bytes from
//! outside the process: every payload's checksum is checked and `rkyv::access` validates it
//! before it is read. It never panics on input: lost framing and bad payloads are errors.
//!
//! # Why its own crate
//!
//! The node, the router, the client and the load generator all speak it; as a leaf with no
//! runtime it can be fuzzed and property-tested alone, and a format change shows up as a
//! change to one crate. rkyv's version and format features are pinned in the workspace
//! manifest because rkyv has no schema evolution: a new layout is a new [`FORMAT_VERSION`].

#![warn(missing_docs)]

// rkyv's derive generates undocumented structs for enum variants with fields; every item
// written by hand in these modules is documented.
#[allow(missing_docs)]
pub mod cluster;
#[allow(missing_docs)]
mod error;
pub mod frame;
mod hash;
pub mod limits;
#[allow(missing_docs)]
mod types;
mod validate;

pub use error::{bounded, Error, Field, Owner};
pub use frame::{
    access_checked_request, access_request, access_response, check_request, decode_checked_request,
    decode_checked_response, decode_cluster, decode_cluster_reply, decode_request, decode_response,
    deserialize_error, encode_cluster, encode_cluster_reply, encode_request, encode_response,
    Frame, FrameHeader, FrameKind, FrameReader, FramingLost, FLAG_FORWARDED, FORMAT_VERSION,
    HEADER_BYTES,
};
pub use hash::{partition_index, partition_key_hash, partition_start};
pub use types::*;
pub use validate::{check_item, check_key, check_table_name, item_target, validate, ItemTarget};
