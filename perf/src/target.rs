//! What the generator drives: a [`Target`] issues one operation and resolves when its answer
//! is back. The real one speaks percore's protocol through the `client` crate
//! (`crate::client_target`); [`NullTarget`] answers at once, to measure the generator itself.

use std::future::Future;

use crate::stats::ErrorKind;

/// A record's key as the wire carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key<'a> {
    /// The partition key.
    pub partition: &'a [u8],
    /// The sort key, when the table has one.
    pub sort: Option<&'a [u8]>,
}

/// Something that serves one core's requests. It lives on one executor (no `Send`), and many
/// of its operations are in flight at once, each borrowing it.
///
/// Each method resolves when the answer has come back; a failure is mapped to the
/// [`ErrorKind`] the reports count.
pub trait Target {
    /// Gets one record.
    fn read(&self, key: Key<'_>) -> impl Future<Output = Result<(), ErrorKind>>;

    /// Writes one record (insert or overwrite).
    fn write(&self, key: Key<'_>, value: &[u8]) -> impl Future<Output = Result<(), ErrorKind>>;

    /// Reads up to `limit` records of `start`'s partition key, from `start` on (a query).
    fn scan(&self, start: Key<'_>, limit: u32) -> impl Future<Output = Result<(), ErrorKind>>;

    /// Writes several records in one request (the `load` command).
    fn write_batch(
        &self,
        records: &[(Key<'_>, &[u8])],
    ) -> impl Future<Output = Result<(), ErrorKind>>;
}

/// A target that answers every request at once, without any I/O: `--dry-run`. It measures
/// what the generator itself costs per request and how closely it keeps its schedule.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullTarget;

impl Target for NullTarget {
    async fn read(&self, _key: Key<'_>) -> Result<(), ErrorKind> {
        Ok(())
    }

    async fn write(&self, _key: Key<'_>, _value: &[u8]) -> Result<(), ErrorKind> {
        Ok(())
    }

    async fn scan(&self, _start: Key<'_>, _limit: u32) -> Result<(), ErrorKind> {
        Ok(())
    }

    async fn write_batch(&self, _records: &[(Key<'_>, &[u8])]) -> Result<(), ErrorKind> {
        Ok(())
    }
}

/// Makes each core's [`Target`]. It is sent to every generator core; the target it makes
/// stays on that core.
pub trait TargetFactory: Clone + Send + 'static {
    /// The target made.
    type Target: Target + 'static;

    /// Connects the target of core `core_index` of `core_count`; a failure is a message
    /// saying what went wrong.
    fn connect(
        &self,
        core_index: usize,
        core_count: usize,
    ) -> impl Future<Output = Result<Self::Target, String>>;

    /// Creates the benchmark table (the `load --create-table` command), from core 0 before
    /// the load starts. `Ok(false)` when it already existed.
    fn create_table(
        &self,
        target: &Self::Target,
        spec: &TableSpec,
    ) -> impl Future<Output = Result<bool, String>>;
}

/// The table `load --create-table` makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// Its name.
    pub name: String,
    /// Whether its key schema has a sort key (records share partition keys).
    pub sort_key: bool,
    /// Partitions to cut it into; `None` lets the node choose (two per core).
    pub partitions: Option<u32>,
}

/// The factory of [`NullTarget`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullFactory;

impl TargetFactory for NullFactory {
    type Target = NullTarget;

    async fn connect(&self, _core_index: usize, _core_count: usize) -> Result<NullTarget, String> {
        Ok(NullTarget)
    }

    async fn create_table(&self, _target: &NullTarget, _spec: &TableSpec) -> Result<bool, String> {
        Ok(true)
    }
}
