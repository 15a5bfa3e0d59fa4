//! The real target: percore's native protocol through the `client` crate, one pipelined
//! connection pool per generator core.

use client::proto::{
    self, Consistency, Direction, Key as WireKey, Query, SortBound, WriteOp, WriteOutcome,
};
use client::{Client, ClientConfig};

use crate::stats::ErrorKind;
use crate::target::{Key, TableSpec, Target, TargetFactory};

/// The attribute names `load --create-table` gives the table's keys (the store sees bytes;
/// the names are for front-ends).
const PARTITION_KEY_NAME: &str = "key";
const SORT_KEY_NAME: &str = "sort";

/// Maps a client error to the kind the reports count.
pub fn error_kind(error: &client::Error) -> ErrorKind {
    match error {
        client::Error::Server(server) => server_error_kind(server),
        client::Error::Io(_) | client::Error::Closed | client::Error::Protocol(_) => {
            ErrorKind::Connection
        }
        client::Error::Timeout => ErrorKind::Timeout,
        client::Error::FrameTooLarge { .. } => ErrorKind::Rejected,
    }
}

fn server_error_kind(error: &proto::Error) -> ErrorKind {
    match error {
        proto::Error::NotFound => ErrorKind::NotFound,
        proto::Error::ConditionFailed { .. } => ErrorKind::ConditionFailed,
        proto::Error::Throttled { .. } => ErrorKind::Throttled,
        proto::Error::WrongOwner { .. } | proto::Error::Unavailable { .. } => {
            ErrorKind::Unavailable
        }
        proto::Error::UnknownTable { .. } => ErrorKind::UnknownTable,
        proto::Error::TooLarge { .. }
        | proto::Error::TableExists { .. }
        | proto::Error::BadFrame { .. }
        | proto::Error::UnsupportedVersion { .. }
        | proto::Error::InvalidRequest { .. } => ErrorKind::Rejected,
        proto::Error::Internal { .. } => ErrorKind::Internal,
    }
}

fn wire_key(key: Key<'_>) -> WireKey {
    WireKey::new(key.partition, key.sort.unwrap_or_default())
}

/// One core's connection pool and the benchmark table's name.
pub struct ClientTarget {
    client: Client,
    table: String,
}

impl ClientTarget {
    /// The client this target sends through.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Target for ClientTarget {
    async fn read(&self, key: Key<'_>) -> Result<(), ErrorKind> {
        match self
            .client
            .get(&self.table, wire_key(key), Consistency::Strong)
            .await
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(ErrorKind::NotFound),
            Err(error) => Err(error_kind(&error)),
        }
    }

    async fn write(&self, key: Key<'_>, value: &[u8]) -> Result<(), ErrorKind> {
        self.client
            .put(&self.table, wire_key(key), value.to_vec())
            .await
            .map(drop)
            .map_err(|error| error_kind(&error))
    }

    async fn scan(&self, start: Key<'_>, limit: u32) -> Result<(), ErrorKind> {
        let query = Query {
            table: self.table.clone(),
            partition_key: start.partition.to_vec(),
            start: match start.sort {
                Some(sort) => SortBound::Included(sort.to_vec()),
                None => SortBound::Unbounded,
            },
            end: SortBound::Unbounded,
            direction: Direction::Forward,
            limit,
            resume: None,
            consistency: Consistency::Strong,
        };
        self.client
            .query(query)
            .await
            .map(drop)
            .map_err(|error| error_kind(&error))
    }

    async fn write_batch(&self, records: &[(Key<'_>, &[u8])]) -> Result<(), ErrorKind> {
        let writes = records
            .iter()
            .map(|&(key, value)| WriteOp::Put {
                key: wire_key(key),
                value: value.to_vec(),
            })
            .collect();
        let outcomes = self
            .client
            .batch_write(&self.table, writes)
            .await
            .map_err(|e| error_kind(&e))?;
        // A batch is not atomic: report its first failed write, if any.
        match outcomes.iter().find_map(|outcome| match outcome {
            WriteOutcome::Failed(error) => Some(error),
            WriteOutcome::Written { .. } => None,
        }) {
            Some(error) => Err(server_error_kind(error)),
            None => Ok(()),
        }
    }
}

/// Connects each core's [`ClientTarget`]: the pool's connections are split over the cores.
#[derive(Clone, Debug)]
pub struct ClientFactory {
    /// The client's configuration; `connections` is the total over all cores.
    pub config: ClientConfig,
    /// The benchmark table.
    pub table: String,
}

impl TargetFactory for ClientFactory {
    type Target = ClientTarget;

    async fn connect(&self, core_index: usize, core_count: usize) -> Result<ClientTarget, String> {
        let total = self.config.connections.max(core_count);
        // Spread the connections as evenly as they go; the first cores take the remainder.
        let connections = total / core_count + usize::from(core_index < total % core_count);
        let mut config = self.config.clone();
        config.connections = connections;
        let client = Client::connect(config).await.map_err(|error| {
            format!(
                "{error} (is percore-node running at {:?}?)",
                self.config.addrs
            )
        })?;
        Ok(ClientTarget {
            client,
            table: self.table.clone(),
        })
    }

    async fn create_table(&self, target: &ClientTarget, spec: &TableSpec) -> Result<bool, String> {
        let request = client::create_table_request(
            &spec.name,
            PARTITION_KEY_NAME,
            spec.sort_key.then_some(SORT_KEY_NAME),
            spec.partitions.unwrap_or(0),
        );
        match target.client.create_table(request).await {
            Ok(_) => Ok(true),
            Err(client::Error::Server(proto::Error::TableExists { .. })) => Ok(false),
            Err(error) => Err(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_kinds() {
        let server = |e| error_kind(&client::Error::Server(e));
        assert_eq!(server(proto::Error::NotFound), ErrorKind::NotFound);
        assert_eq!(
            server(proto::Error::Throttled { retry_after_ms: 5 }),
            ErrorKind::Throttled
        );
        assert_eq!(
            server(proto::Error::UnknownTable {
                name: "usertable".into()
            }),
            ErrorKind::UnknownTable
        );
        assert_eq!(
            server(proto::Error::Unavailable {
                reason: "starting".into()
            }),
            ErrorKind::Unavailable
        );
        assert_eq!(error_kind(&client::Error::Timeout), ErrorKind::Timeout);
        assert_eq!(error_kind(&client::Error::Closed), ErrorKind::Connection);
    }
}
