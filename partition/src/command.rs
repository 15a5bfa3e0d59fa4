//! The command format: what a raft entry of a partition carries (see `DESIGN.md`, "Commands").
//!
//! Own, small and versioned, because it outlives any one build: entries written by this
//! version are replayed by later ones. Every length is checked against the input before it is
//! used, and every limit a write must obey is checked again when decoding, so that a command
//! that decodes can always be applied (a bad one is a typed [`DecodeError`], never a panic).

use proto::{Condition, Key, WriteOp};

use crate::limits::VALUE_BYTES_MAX;

/// The format version this build writes, and the only one it reads.
pub const COMMAND_FORMAT_VERSION: u8 = 1;

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_BATCH: u8 = 3;

const COND_NONE: u8 = 0;
const COND_IF_ABSENT: u8 = 1;
const COND_IF_PRESENT: u8 = 2;
const COND_IF_VERSION: u8 = 3;

/// A write to one partition, as proposed to its raft group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Writes an item if `condition` holds when the command is applied.
    Put {
        /// The item's key.
        key: Key,
        /// Its value.
        value: Vec<u8>,
        /// Checked against the item's current version at apply time.
        condition: Condition,
    },
    /// Deletes an item (absent is not an error) if `condition` holds when applied.
    Delete {
        /// The item's key.
        key: Key,
        /// Checked against the item's current version at apply time.
        condition: Condition,
    },
    /// Unconditional writes to keys of this partition, applied atomically in one tree batch.
    Batch {
        /// One to `proto::limits::BATCH_WRITES_MAX` writes.
        writes: Vec<WriteOp>,
    },
}

/// Why bytes are not a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// No bytes at all.
    Empty,
    /// A format version this build does not read.
    UnsupportedVersion {
        /// The version byte found.
        got: u8,
    },
    /// A tag byte with no meaning.
    UnknownTag {
        /// Which tag: "command", "condition" or "batch write".
        what: &'static str,
        /// The byte found.
        tag: u8,
    },
    /// The input ends inside a field.
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Its offset in the input.
        offset: usize,
    },
    /// Bytes left after the command.
    TrailingBytes {
        /// How many.
        bytes: usize,
    },
    /// The command is well formed but breaks a limit (a key or item too large, an empty
    /// partition key, a batch with no write or too many).
    Invalid(proto::Error),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "command: no bytes"),
            DecodeError::UnsupportedVersion { got } => write!(
                f,
                "command: format version {got} is not {COMMAND_FORMAT_VERSION}"
            ),
            DecodeError::UnknownTag { what, tag } => write!(f, "command: unknown {what} tag {tag}"),
            DecodeError::Truncated { what, offset } => {
                write!(
                    f,
                    "command: input ends inside the {what} at offset {offset}"
                )
            }
            DecodeError::TrailingBytes { bytes } => {
                write!(f, "command: {bytes} bytes after the end")
            }
            DecodeError::Invalid(e) => write!(f, "command: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Checks a value against what the tree can store after the version (the tree's value limit
/// leaves a few bytes less than the item limit when keys are tiny).
fn check_value(key: &Key, value: &[u8]) -> Result<(), proto::Error> {
    proto::check_item(key, value)?;
    if value.len() > VALUE_BYTES_MAX {
        return Err(proto::Error::TooLarge {
            field: proto::Field::Item,
            bytes: (key.bytes() + value.len()) as u64,
            max: (key.bytes() + VALUE_BYTES_MAX) as u64,
        });
    }
    Ok(())
}

impl Command {
    /// Checks every limit a command must obey (the ones `proto::validate` checks, plus the
    /// tree's value limit). A command that passes can always be applied.
    pub fn validate(&self) -> Result<(), proto::Error> {
        match self {
            Command::Put { key, value, .. } => check_value(key, value),
            Command::Delete { key, .. } => proto::check_key(key),
            Command::Batch { writes } => {
                if writes.is_empty() {
                    return Err(proto::Error::invalid("a batch needs at least one write"));
                }
                if writes.len() > proto::limits::BATCH_WRITES_MAX {
                    return Err(proto::Error::TooLarge {
                        field: proto::Field::BatchWrites,
                        bytes: writes.len() as u64,
                        max: proto::limits::BATCH_WRITES_MAX as u64,
                    });
                }
                for w in writes {
                    match w {
                        WriteOp::Put { key, value } => check_value(key, value)?,
                        WriteOp::Delete { key } => proto::check_key(key)?,
                    }
                }
                Ok(())
            }
        }
    }

    /// The keys the command writes, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        let (one, many) = match self {
            Command::Put { key, .. } | Command::Delete { key, .. } => (Some(key), &[][..]),
            Command::Batch { writes } => (None, &writes[..]),
        };
        one.into_iter().chain(many.iter().map(WriteOp::key))
    }

    /// The size of [`Command::encode`]'s output, in bytes.
    pub fn encoded_len(&self) -> usize {
        let key = |k: &Key| 4 + k.partition.len() + k.sort.len();
        let cond = |c: &Condition| {
            if matches!(c, Condition::IfVersion(_)) {
                9
            } else {
                1
            }
        };
        2 + match self {
            Command::Put {
                key: k,
                value,
                condition,
            } => key(k) + cond(condition) + 4 + value.len(),
            Command::Delete { key: k, condition } => key(k) + cond(condition),
            Command::Batch { writes } => {
                2 + writes
                    .iter()
                    .map(|w| match w {
                        WriteOp::Put { key: k, value } => 1 + key(k) + 4 + value.len(),
                        WriteOp::Delete { key: k } => 1 + key(k),
                    })
                    .sum::<usize>()
            }
        }
    }

    /// The command's bytes. Call [`Command::validate`] first: lengths are written as the
    /// format's fixed-width integers.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(COMMAND_FORMAT_VERSION);
        match self {
            Command::Put {
                key,
                value,
                condition,
            } => {
                out.push(TAG_PUT);
                put_key(&mut out, key);
                put_condition(&mut out, condition);
                put_value(&mut out, value);
            }
            Command::Delete { key, condition } => {
                out.push(TAG_DELETE);
                put_key(&mut out, key);
                put_condition(&mut out, condition);
            }
            Command::Batch { writes } => {
                out.push(TAG_BATCH);
                out.extend_from_slice(&(writes.len() as u16).to_le_bytes());
                for w in writes {
                    match w {
                        WriteOp::Put { key, value } => {
                            out.push(TAG_PUT);
                            put_key(&mut out, key);
                            put_value(&mut out, value);
                        }
                        WriteOp::Delete { key } => {
                            out.push(TAG_DELETE);
                            put_key(&mut out, key);
                        }
                    }
                }
            }
        }
        debug_assert_eq!(out.len(), self.encoded_len());
        out
    }

    /// Reads a command, checking its structure and every limit.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let version = *bytes.first().ok_or(DecodeError::Empty)?;
        r.at = 1;
        if version != COMMAND_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion { got: version });
        }
        let command = match r.u8("command tag")? {
            TAG_PUT => {
                let key = r.key()?;
                let condition = r.condition()?;
                let value = r.value()?;
                Command::Put {
                    key,
                    value,
                    condition,
                }
            }
            TAG_DELETE => {
                let key = r.key()?;
                let condition = r.condition()?;
                Command::Delete { key, condition }
            }
            TAG_BATCH => {
                let count = r.u16("batch count")? as usize;
                // Check the count before allocating for it.
                if count > proto::limits::BATCH_WRITES_MAX {
                    return Err(DecodeError::Invalid(proto::Error::TooLarge {
                        field: proto::Field::BatchWrites,
                        bytes: count as u64,
                        max: proto::limits::BATCH_WRITES_MAX as u64,
                    }));
                }
                let mut writes = Vec::with_capacity(count);
                for _ in 0..count {
                    writes.push(match r.u8("batch write tag")? {
                        TAG_PUT => {
                            let key = r.key()?;
                            let value = r.value()?;
                            WriteOp::Put { key, value }
                        }
                        TAG_DELETE => WriteOp::Delete { key: r.key()? },
                        tag => {
                            return Err(DecodeError::UnknownTag {
                                what: "batch write",
                                tag,
                            })
                        }
                    });
                }
                Command::Batch { writes }
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "command",
                    tag,
                })
            }
        };
        if r.at != bytes.len() {
            return Err(DecodeError::TrailingBytes {
                bytes: bytes.len() - r.at,
            });
        }
        command.validate().map_err(DecodeError::Invalid)?;
        Ok(command)
    }
}

fn put_key(out: &mut Vec<u8>, key: &Key) {
    out.extend_from_slice(&(key.partition.len() as u16).to_le_bytes());
    out.extend_from_slice(&key.partition);
    out.extend_from_slice(&(key.sort.len() as u16).to_le_bytes());
    out.extend_from_slice(&key.sort);
}

fn put_condition(out: &mut Vec<u8>, condition: &Condition) {
    match condition {
        Condition::None => out.push(COND_NONE),
        Condition::IfAbsent => out.push(COND_IF_ABSENT),
        Condition::IfPresent => out.push(COND_IF_PRESENT),
        Condition::IfVersion(v) => {
            out.push(COND_IF_VERSION);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn put_value(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(DecodeError::Truncated {
                what,
                offset: self.at,
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn key(&mut self) -> Result<Key, DecodeError> {
        let n = self.u16("partition key length")? as usize;
        let partition = self.take(n, "partition key")?.to_vec();
        let n = self.u16("sort key length")? as usize;
        let sort = self.take(n, "sort key")?.to_vec();
        Ok(Key { partition, sort })
    }

    fn condition(&mut self) -> Result<Condition, DecodeError> {
        Ok(match self.u8("condition tag")? {
            COND_NONE => Condition::None,
            COND_IF_ABSENT => Condition::IfAbsent,
            COND_IF_PRESENT => Condition::IfPresent,
            COND_IF_VERSION => Condition::IfVersion(self.u64("condition version")?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "condition",
                    tag,
                })
            }
        })
    }

    fn value(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32("value length")? as usize;
        // `take` checks the length against the input before anything is allocated.
        Ok(self.take(n, "value")?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Command> {
        vec![
            Command::Put {
                key: Key::new("pk", "sk"),
                value: b"v".to_vec(),
                condition: Condition::IfVersion(7),
            },
            Command::Delete {
                key: Key::simple("pk"),
                condition: Condition::IfPresent,
            },
            Command::Batch {
                writes: vec![
                    WriteOp::Put {
                        key: Key::new("a", ""),
                        value: vec![],
                    },
                    WriteOp::Delete {
                        key: Key::new("b", "c"),
                    },
                ],
            },
        ]
    }

    #[test]
    fn round_trips() {
        for c in samples() {
            let bytes = c.encode();
            assert_eq!(bytes.len(), c.encoded_len());
            assert_eq!(Command::decode(&bytes).unwrap(), c);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for c in samples() {
            let bytes = c.encode();
            for n in 0..bytes.len() {
                assert!(Command::decode(&bytes[..n]).is_err(), "{c:?} cut at {n}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                Command::decode(&longer),
                Err(DecodeError::TrailingBytes { bytes: 1 })
            );
        }
    }

    #[test]
    fn limits_are_checked_when_decoding() {
        let c = Command::Delete {
            key: Key::simple(""),
            condition: Condition::None,
        };
        assert!(matches!(
            Command::decode(&c.encode()),
            Err(DecodeError::Invalid(_))
        ));
        let mut bytes = vec![COMMAND_FORMAT_VERSION, TAG_BATCH];
        bytes.extend_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(
            Command::decode(&bytes),
            Err(DecodeError::Invalid(proto::Error::TooLarge { .. }))
        ));
        assert_eq!(
            Command::decode(&[9]),
            Err(DecodeError::UnsupportedVersion { got: 9 })
        );
    }
}
