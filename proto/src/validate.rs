//! Checks of a request against the protocol's limits, before anything else touches it.
//!
//! What needs the table's schema (a sort key on a table without one) is the server's to
//! check; everything that the request alone can break is checked here, so that every
//! server and router refuses the same requests with the same errors.

use std::collections::HashSet;

use crate::limits::*;
use crate::{ArchivedCondition, ArchivedRequest, Error, Field, Key, Request, WriteOp};

fn too_large(field: Field, bytes: usize, max: usize) -> Error {
    Error::TooLarge {
        field,
        bytes: bytes as u64,
        max: max as u64,
    }
}

/// Checks a table name: 3 to 255 bytes of `[A-Za-z0-9_.-]` (DynamoDB's rule).
pub fn check_table_name(name: &str) -> Result<(), Error> {
    if name.len() > TABLE_NAME_BYTES_MAX {
        return Err(too_large(
            Field::TableName,
            name.len(),
            TABLE_NAME_BYTES_MAX,
        ));
    }
    if name.len() < TABLE_NAME_BYTES_MIN {
        return Err(Error::invalid(format!(
            "table name {name:?} is {} bytes; at least {TABLE_NAME_BYTES_MIN} are needed",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(Error::invalid(format!(
            "table name {name:?} has {c:?}; only A-Z a-z 0-9 _ . - are allowed"
        )));
    }
    Ok(())
}

/// Checks a key's sizes: a partition key of 1 to 2 KiB, a sort key of at most 1 KiB.
pub fn check_key(key: &Key) -> Result<(), Error> {
    check_key_bytes(&key.partition, &key.sort)
}

fn check_key_bytes(partition: &[u8], sort: &[u8]) -> Result<(), Error> {
    if partition.is_empty() {
        return Err(Error::invalid("the partition key is empty"));
    }
    if partition.len() > PARTITION_KEY_BYTES_MAX {
        return Err(too_large(
            Field::PartitionKey,
            partition.len(),
            PARTITION_KEY_BYTES_MAX,
        ));
    }
    if sort.len() > SORT_KEY_BYTES_MAX {
        return Err(too_large(Field::SortKey, sort.len(), SORT_KEY_BYTES_MAX));
    }
    Ok(())
}

/// Checks an item: its key, and key + value within [`ITEM_BYTES_MAX`].
pub fn check_item(key: &Key, value: &[u8]) -> Result<(), Error> {
    check_item_bytes(&key.partition, &key.sort, value.len())
}

fn check_item_bytes(partition: &[u8], sort: &[u8], value_bytes: usize) -> Result<(), Error> {
    check_key_bytes(partition, sort)?;
    let bytes = partition.len() + sort.len() + value_bytes;
    if bytes > ITEM_BYTES_MAX {
        return Err(too_large(Field::Item, bytes, ITEM_BYTES_MAX));
    }
    Ok(())
}

/// Where a single-item request goes, read from its archived form: what a router needs to
/// relay the request's frame without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemTarget<'a> {
    /// The table.
    pub table: &'a str,
    /// The item's partition key (its hash picks the partition).
    pub partition_key: &'a [u8],
    /// What [`Request::is_idempotent`] says of the request.
    pub idempotent: bool,
}

/// For an archived put, get or delete: its [`ItemTarget`], after the checks [`validate`]
/// makes of the owned request (the same errors, in the same order). `None` for every
/// other request, which is decoded and validated whole.
pub fn item_target(request: &ArchivedRequest) -> Option<Result<ItemTarget<'_>, Error>> {
    let (table, key, value_bytes, idempotent) = match request {
        ArchivedRequest::Put(p) => {
            let idempotent = matches!(
                p.condition,
                ArchivedCondition::IfAbsent | ArchivedCondition::IfVersion(_)
            );
            (&p.table, &p.key, Some(p.value.len()), idempotent)
        }
        ArchivedRequest::Get(g) => (&g.table, &g.key, None, true),
        ArchivedRequest::Delete(d) => {
            let idempotent = matches!(d.condition, ArchivedCondition::IfVersion(_));
            (&d.table, &d.key, None, idempotent)
        }
        _ => return None,
    };
    let (table, partition, sort) = (
        table.as_str(),
        key.partition.as_slice(),
        key.sort.as_slice(),
    );
    let checked = check_table_name(table).and_then(|()| match value_bytes {
        Some(v) => check_item_bytes(partition, sort, v),
        None => check_key_bytes(partition, sort),
    });
    Some(checked.map(|()| ItemTarget {
        table,
        partition_key: partition,
        idempotent,
    }))
}

fn check_sort_bound(b: &crate::SortBound) -> Result<(), Error> {
    match b {
        crate::SortBound::Included(k) | crate::SortBound::Excluded(k)
            if k.len() > SORT_KEY_BYTES_MAX =>
        {
            Err(too_large(Field::SortKey, k.len(), SORT_KEY_BYTES_MAX))
        }
        _ => Ok(()),
    }
}

/// Checks everything the request alone can break. The first problem found is returned.
pub fn validate(request: &Request) -> Result<(), Error> {
    match request {
        Request::CreateTable(c) => {
            check_table_name(&c.name)?;
            if c.partitions > TABLE_PARTITIONS_MAX {
                return Err(too_large(
                    Field::Partitions,
                    c.partitions as usize,
                    TABLE_PARTITIONS_MAX as usize,
                ));
            }
            if c.key_schema.partition_key.is_empty() {
                return Err(Error::invalid(
                    "the partition key's attribute name is empty",
                ));
            }
            if let crate::CapacityMode::Provisioned {
                read_units_per_s,
                write_units_per_s,
            } = c.capacity
            {
                if read_units_per_s == 0 || write_units_per_s == 0 {
                    return Err(Error::invalid(
                        "provisioned capacity needs at least one read and one write unit",
                    ));
                }
            }
            Ok(())
        }
        Request::DescribeTable { name } | Request::DeleteTable { name } => check_table_name(name),
        Request::ListTables { .. } => Ok(()),
        Request::Put(p) => {
            check_table_name(&p.table)?;
            check_item(&p.key, &p.value)
        }
        Request::Get(g) => {
            check_table_name(&g.table)?;
            check_key(&g.key)
        }
        Request::Delete(d) => {
            check_table_name(&d.table)?;
            check_key(&d.key)
        }
        Request::Query(q) => {
            check_table_name(&q.table)?;
            check_key(&Key {
                partition: q.partition_key.clone(),
                sort: Vec::new(),
            })?;
            check_sort_bound(&q.start)?;
            check_sort_bound(&q.end)?;
            if let Some(r) = &q.resume {
                if r.len() > SORT_KEY_BYTES_MAX {
                    return Err(too_large(Field::SortKey, r.len(), SORT_KEY_BYTES_MAX));
                }
            }
            Ok(())
        }
        Request::Scan(s) => {
            check_table_name(&s.table)?;
            if let Some(crate::ScanResume { after: Some(k), .. }) = &s.resume {
                check_key(k)?;
            }
            Ok(())
        }
        Request::BatchGet(b) => {
            check_table_name(&b.table)?;
            if b.keys.is_empty() {
                return Err(Error::invalid("a batch get needs at least one key"));
            }
            if b.keys.len() > BATCH_GETS_MAX {
                return Err(too_large(Field::BatchGets, b.keys.len(), BATCH_GETS_MAX));
            }
            b.keys.iter().try_for_each(check_key)
        }
        Request::BatchWrite(b) => {
            check_table_name(&b.table)?;
            if b.writes.is_empty() {
                return Err(Error::invalid("a batch write needs at least one write"));
            }
            if b.writes.len() > BATCH_WRITES_MAX {
                return Err(too_large(
                    Field::BatchWrites,
                    b.writes.len(),
                    BATCH_WRITES_MAX,
                ));
            }
            let mut seen = HashSet::with_capacity(b.writes.len());
            for w in &b.writes {
                match w {
                    WriteOp::Put { key, value } => check_item(key, value)?,
                    WriteOp::Delete { key } => check_key(key)?,
                }
                if !seen.insert(w.key()) {
                    return Err(Error::invalid("a batch write names the same key twice"));
                }
            }
            Ok(())
        }
    }
}
