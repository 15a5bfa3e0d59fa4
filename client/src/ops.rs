//! The typed operations' requests and how their answers are read, shared by the async and
//! the blocking client so that both map every answer the same way.

use proto::{
    CapacityMode, Condition, Consistency, CreateTable, Item, Key, KeySchema, Request, Response,
    ScanResume, TableDescription, WriteOp, WriteOutcome,
};

use crate::{Error, ProtocolError, Result};

/// A page of table names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablesPage {
    /// Names in order.
    pub names: Vec<String>,
    /// Set when more may follow: pass it as `start_after`.
    pub last: Option<String>,
}

/// The outcome of a delete that was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// The log index of the delete.
    pub version: u64,
    /// Whether an item was there.
    pub existed: bool,
}

/// A page of a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryPage {
    /// Items in the query's order.
    pub items: Vec<Item>,
    /// Set when more may follow: the sort key to pass as the query's `resume`.
    pub resume: Option<Vec<u8>>,
}

/// A page of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    /// Items in partition order, then key order within a partition.
    pub items: Vec<Item>,
    /// Set when more may follow: pass it as the scan's `resume`.
    pub resume: Option<ScanResume>,
}

/// The answer to a batch get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchItems {
    /// The items found, in no set order (absent keys are left out).
    pub items: Vec<Item>,
    /// Keys not read this time (throttled or over the frame's size): ask again.
    pub unprocessed: Vec<Key>,
}

/// A create-table request for a table with a partition key named `partition_key`, an
/// optional sort key, on-demand capacity and `partitions` partitions (0: the node's
/// default).
pub fn create_table_request(
    name: &str,
    partition_key: &str,
    sort_key: Option<&str>,
    partitions: u32,
) -> CreateTable {
    CreateTable {
        name: name.to_owned(),
        key_schema: KeySchema {
            partition_key: partition_key.to_owned(),
            sort_key: sort_key.map(str::to_owned),
        },
        capacity: CapacityMode::OnDemand,
        partitions,
    }
}

fn unexpected<T>(expected: &'static str, got: &Response) -> Result<T> {
    Err(Error::Protocol(ProtocolError::UnexpectedResponse {
        expected,
        got: got.name(),
    }))
}

/// A response as a result: the server's error answer becomes `Err(Error::Server)`.
pub(crate) fn into_result(r: Response) -> Result<Response> {
    match r {
        Response::Error(e) => Err(Error::Server(e)),
        r => Ok(r),
    }
}

pub(crate) fn put_request(table: &str, key: Key, value: Vec<u8>, condition: Condition) -> Request {
    Request::Put(proto::Put {
        table: table.to_owned(),
        key,
        value,
        condition,
    })
}

pub(crate) fn get_request(table: &str, key: Key, consistency: Consistency) -> Request {
    Request::Get(proto::Get {
        table: table.to_owned(),
        key,
        consistency,
    })
}

pub(crate) fn delete_request(table: &str, key: Key, condition: Condition) -> Request {
    Request::Delete(proto::Delete {
        table: table.to_owned(),
        key,
        condition,
    })
}

pub(crate) fn batch_get_request(table: &str, keys: Vec<Key>, consistency: Consistency) -> Request {
    Request::BatchGet(proto::BatchGet {
        table: table.to_owned(),
        keys,
        consistency,
    })
}

pub(crate) fn batch_write_request(table: &str, writes: Vec<WriteOp>) -> Request {
    Request::BatchWrite(proto::BatchWrite {
        table: table.to_owned(),
        writes,
    })
}

pub(crate) fn table(r: Result<Response>) -> Result<TableDescription> {
    match r? {
        Response::Table(t) => Ok(t),
        other => unexpected("Table", &other),
    }
}

pub(crate) fn tables(r: Result<Response>) -> Result<TablesPage> {
    match r? {
        Response::Tables { names, last } => Ok(TablesPage { names, last }),
        other => unexpected("Tables", &other),
    }
}

pub(crate) fn written(r: Result<Response>) -> Result<u64> {
    match r? {
        Response::Written { version } => Ok(version),
        other => unexpected("Written", &other),
    }
}

/// A get's answer: a missing item is `Ok(None)`, not an error.
pub(crate) fn item(r: Result<Response>) -> Result<Option<Item>> {
    match r {
        Err(Error::Server(proto::Error::NotFound)) => Ok(None),
        Err(e) => Err(e),
        Ok(Response::Item(i)) => Ok(Some(i)),
        Ok(other) => unexpected("Item", &other),
    }
}

pub(crate) fn deleted(r: Result<Response>) -> Result<Deleted> {
    match r? {
        Response::Deleted { version, existed } => Ok(Deleted { version, existed }),
        other => unexpected("Deleted", &other),
    }
}

pub(crate) fn query_page(r: Result<Response>) -> Result<QueryPage> {
    match r? {
        Response::QueryPage { items, resume } => Ok(QueryPage { items, resume }),
        other => unexpected("QueryPage", &other),
    }
}

pub(crate) fn scan_page(r: Result<Response>) -> Result<ScanPage> {
    match r? {
        Response::ScanPage { items, resume } => Ok(ScanPage { items, resume }),
        other => unexpected("ScanPage", &other),
    }
}

pub(crate) fn batch_items(r: Result<Response>) -> Result<BatchItems> {
    match r? {
        Response::BatchItems { items, unprocessed } => Ok(BatchItems { items, unprocessed }),
        other => unexpected("BatchItems", &other),
    }
}

pub(crate) fn batch_written(r: Result<Response>) -> Result<Vec<WriteOutcome>> {
    match r? {
        Response::BatchWritten { outcomes } => Ok(outcomes),
        other => unexpected("BatchWritten", &other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_item_is_none_and_other_errors_stay_errors() {
        assert_eq!(
            item(Err(Error::Server(proto::Error::NotFound))).unwrap(),
            None
        );
        assert!(matches!(
            item(Err(Error::Server(proto::Error::UnknownTable {
                name: "t1x".into()
            }))),
            Err(Error::Server(proto::Error::UnknownTable { .. }))
        ));
        assert!(matches!(
            item(Ok(Response::Written { version: 1 })),
            Err(Error::Protocol(ProtocolError::UnexpectedResponse {
                expected: "Item",
                got: "Written"
            }))
        ));
    }

    #[test]
    fn a_server_error_answer_is_an_error() {
        assert!(matches!(
            into_result(Response::Error(proto::Error::NotFound)),
            Err(Error::Server(proto::Error::NotFound))
        ));
        assert!(into_result(Response::Written { version: 3 }).is_ok());
    }
}
