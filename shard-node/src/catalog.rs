//! The table catalog: which tables exist, how each is cut into partitions and which core
//! owns each partition. On a single node the node is its own metadata service.
//!
//! The catalog is a plain value ([`Catalog`]) with pure planning functions
//! ([`Catalog::plan_create`], [`Catalog::plan_delete`]) and a text encoding (TOML, so an
//! operator can read it). Only core 0 changes it: it plans the change, makes the new
//! catalog durable ([`write_durable`]: a temporary file, fdatasync, rename over the old one,
//! fsync of the directory), and only then broadcasts it to the other cores, which open or
//! drop their partitions. A crash between the write and the broadcast is repaired at
//! start-up: partitions the catalog names are opened (created empty if need be), and tree
//! files and WAL streams it does not name are removed.
//!
//! Ids are never reused: a table's id and every partition's id come from counters in the
//! catalog, so a WAL stream left by a deleted partition can never be mistaken for a new one.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The catalog's file name in the data directory.
pub const CATALOG_FILE_NAME: &str = "catalog";

/// The temporary file a new catalog is written to before it is renamed over the old one.
pub const CATALOG_TMP_FILE_NAME: &str = "catalog.tmp";

/// The catalog file's format version. A new layout is a new version.
pub const CATALOG_FORMAT_VERSION: u32 = 1;

/// Tables one node holds. Bounds the catalog file and the per-core table index.
pub const TABLES_MAX: usize = 1024;

/// A table's capacity mode, as stored (proto's type is rkyv-only).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Capacity {
    /// No set capacity.
    OnDemand,
    /// Read and write units per second.
    Provisioned {
        /// Read units per second.
        read_units_per_s: u64,
        /// Write units per second.
        write_units_per_s: u64,
    },
}

impl From<proto::CapacityMode> for Capacity {
    fn from(c: proto::CapacityMode) -> Capacity {
        match c {
            proto::CapacityMode::OnDemand => Capacity::OnDemand,
            proto::CapacityMode::Provisioned {
                read_units_per_s,
                write_units_per_s,
            } => Capacity::Provisioned {
                read_units_per_s,
                write_units_per_s,
            },
        }
    }
}

impl From<Capacity> for proto::CapacityMode {
    fn from(c: Capacity) -> proto::CapacityMode {
        match c {
            Capacity::OnDemand => proto::CapacityMode::OnDemand,
            Capacity::Provisioned {
                read_units_per_s,
                write_units_per_s,
            } => proto::CapacityMode::Provisioned {
                read_units_per_s,
                write_units_per_s,
            },
        }
    }
}

/// One partition of a table: the `index`-th range of the table's hash space (see
/// `proto::partition_start`), its global id (also its WAL stream id) and its core.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionEntry {
    /// The global id, never reused (0 for a remote partition, whose id this node need not
    /// know).
    pub id: u64,
    /// The core index (not the CPU number) that owns it.
    pub core: u32,
    /// In a cluster: another node holds this range (the metadata service knows which).
    #[serde(default, skip_serializing_if = "is_false")]
    pub remote: bool,
    /// The ownership generation it is held under here (meta's; 1 for a table this node
    /// created itself).
    #[serde(default = "first_epoch")]
    pub epoch: u64,
}

fn first_epoch() -> u64 {
    1
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TableEntry {
    /// Its name.
    pub name: String,
    /// Its id, never reused.
    pub id: u64,
    /// The partition key's attribute name.
    pub partition_key: String,
    /// The sort key's attribute name, if any.
    pub sort_key: Option<String>,
    /// Its capacity mode.
    pub capacity: Capacity,
    /// Milliseconds since the Unix epoch at creation.
    pub created_unix_ms: u64,
    /// The B-tree page size of its partitions, fixed at creation (the node's `page_size`
    /// then), so that a later config change never misreads an existing tree file.
    pub page_size_bytes: u32,
    /// Its partitions, in hash order: `partitions[i]` holds range `i`.
    pub partitions: Vec<PartitionEntry>,
}

impl TableEntry {
    /// The table as the protocol describes it.
    pub fn describe(&self, status: proto::TableStatus) -> proto::TableDescription {
        proto::TableDescription {
            name: self.name.clone(),
            id: self.id,
            key_schema: proto::KeySchema {
                partition_key: self.partition_key.clone(),
                sort_key: self.sort_key.clone(),
            },
            capacity: self.capacity.into(),
            partitions: self.partitions.len() as u32,
            status,
            created_unix_ms: self.created_unix_ms,
        }
    }

    /// The hashes partition `index` holds: from its start to the next one's start (the last
    /// partition runs to the end of the space).
    pub fn hash_range(&self, index: u32) -> std::ops::RangeInclusive<u128> {
        let n = self.partitions.len() as u32;
        let start = proto::partition_start(index, n);
        let end = if index + 1 >= n {
            u128::MAX
        } else {
            proto::partition_start(index + 1, n) - 1
        };
        start..=end
    }

    /// The index of the partition that holds `partition_key`.
    pub fn partition_of(&self, partition_key: &[u8]) -> u32 {
        proto::partition_index(
            proto::partition_key_hash(partition_key),
            self.partitions.len() as u32,
        )
    }
}

/// Every table of the node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Catalog {
    /// [`CATALOG_FORMAT_VERSION`].
    pub format_version: u32,
    /// Bumps on every change; cores apply broadcasts in this order.
    pub version: u64,
    /// The next table id to give.
    pub next_table_id: u64,
    /// The next partition id to give.
    pub next_partition_id: u64,
    /// The tables, in name order.
    #[serde(default)]
    pub tables: Vec<TableEntry>,
}

impl Default for Catalog {
    fn default() -> Catalog {
        Catalog {
            format_version: CATALOG_FORMAT_VERSION,
            version: 0,
            next_table_id: 1,
            next_partition_id: 1,
            tables: Vec::new(),
        }
    }
}

/// Why a catalog file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogError {
    /// The file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The operation.
        op: &'static str,
        /// The OS error.
        reason: String,
    },
    /// The file does not parse.
    Parse {
        /// The parser's reason.
        reason: String,
    },
    /// The file parses but breaks an invariant.
    Invalid {
        /// Which.
        reason: String,
    },
    /// A partition belongs to a core this node does not run.
    CoreMissing {
        /// The table.
        table: String,
        /// The partition's core.
        core: u32,
        /// Cores configured.
        cores: usize,
    },
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogError::Io { path, op, reason } => {
                write!(f, "catalog {}: {op} failed: {reason}", path.display())
            }
            CatalogError::Parse { reason } => write!(f, "the catalog does not parse: {reason}"),
            CatalogError::Invalid { reason } => write!(f, "the catalog is inconsistent: {reason}"),
            CatalogError::CoreMissing { table, core, cores } => write!(
                f,
                "table {table:?} has a partition on core index {core}, but only {cores} cores are \
                 configured: its WAL is in core-{core}/. Start with at least {} cores",
                core + 1
            ),
        }
    }
}

impl std::error::Error for CatalogError {}

impl Catalog {
    /// Parses and checks a catalog file's text.
    pub fn decode(text: &str) -> Result<Catalog, CatalogError> {
        let catalog: Catalog = toml::from_str(text).map_err(|e| CatalogError::Parse {
            reason: e.to_string(),
        })?;
        catalog.check()?;
        Ok(catalog)
    }

    /// The file's text.
    pub fn encode(&self) -> String {
        toml::to_string(self).expect("a catalog always encodes as TOML")
    }

    /// Checks the invariants: a known format, names in order and unique, ids unique and
    /// below the counters, every table with at least one partition.
    pub fn check(&self) -> Result<(), CatalogError> {
        let bad = |reason: String| Err(CatalogError::Invalid { reason });
        if self.format_version != CATALOG_FORMAT_VERSION {
            return bad(format!(
                "format version {} (this build reads {CATALOG_FORMAT_VERSION})",
                self.format_version
            ));
        }
        let mut partition_ids = std::collections::HashSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            if i > 0 && self.tables[i - 1].name >= t.name {
                return bad(format!("table {:?} is out of name order", t.name));
            }
            if t.id >= self.next_table_id {
                return bad(format!(
                    "table {:?} has id {} >= next_table_id",
                    t.name, t.id
                ));
            }
            if t.partitions.is_empty() {
                return bad(format!("table {:?} has no partitions", t.name));
            }
            for p in t.partitions.iter().filter(|p| !p.remote) {
                if p.id >= self.next_partition_id || !partition_ids.insert(p.id) {
                    return bad(format!(
                        "partition id {} of {:?} is reused or too high",
                        p.id, t.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that every partition's core is one of `cores`.
    pub fn check_cores(&self, cores: usize) -> Result<(), CatalogError> {
        for t in &self.tables {
            if let Some(p) = t
                .partitions
                .iter()
                .find(|p| !p.remote && p.core as usize >= cores)
            {
                return Err(CatalogError::CoreMissing {
                    table: t.name.clone(),
                    core: p.core,
                    cores,
                });
            }
        }
        Ok(())
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&TableEntry> {
        self.tables
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.tables[i])
    }

    /// The catalog with the table `create` asks for, cut into `create.partitions` ranges
    /// (or `default_partitions_per_core * cores` when 0), partition `i` on core `i % cores`.
    pub fn plan_create(
        &self,
        create: &proto::CreateTable,
        cores: u32,
        default_partitions_per_core: u32,
        page_size_bytes: u32,
        now_unix_ms: u64,
    ) -> Result<(Catalog, TableEntry), proto::Error> {
        debug_assert!(cores > 0);
        if self.table(&create.name).is_some() {
            return Err(proto::Error::TableExists {
                name: create.name.clone(),
            });
        }
        if self.tables.len() >= TABLES_MAX {
            return Err(proto::Error::invalid(format!(
                "this node holds {TABLES_MAX} tables, its limit; delete one first"
            )));
        }
        let n = if create.partitions == 0 {
            default_partitions_per_core.saturating_mul(cores)
        } else {
            create.partitions
        };
        if n == 0 || n > proto::limits::TABLE_PARTITIONS_MAX {
            return Err(proto::Error::TooLarge {
                field: proto::Field::Partitions,
                bytes: n as u64,
                max: proto::limits::TABLE_PARTITIONS_MAX as u64,
            });
        }
        let mut next = self.clone();
        let entry = TableEntry {
            name: create.name.clone(),
            id: next.next_table_id,
            partition_key: create.key_schema.partition_key.clone(),
            sort_key: create.key_schema.sort_key.clone(),
            capacity: create.capacity.into(),
            created_unix_ms: now_unix_ms,
            page_size_bytes,
            partitions: (0..n)
                .map(|i| PartitionEntry {
                    id: next.next_partition_id + i as u64,
                    core: i % cores,
                    remote: false,
                    epoch: 1,
                })
                .collect(),
        };
        next.next_table_id += 1;
        next.next_partition_id += n as u64;
        next.version += 1;
        let at = next
            .tables
            .binary_search_by(|t| t.name.as_str().cmp(&create.name))
            .expect_err("absent, checked above");
        next.tables.insert(at, entry.clone());
        debug_assert!(next.check().is_ok());
        Ok((next, entry))
    }

    /// The catalog without the table `name`, and the removed entry.
    pub fn plan_delete(&self, name: &str) -> Result<(Catalog, TableEntry), proto::Error> {
        let Ok(at) = self.tables.binary_search_by(|t| t.name.as_str().cmp(name)) else {
            return Err(proto::Error::UnknownTable {
                name: name.to_string(),
            });
        };
        let mut next = self.clone();
        let entry = next.tables.remove(at);
        next.version += 1;
        Ok((next, entry))
    }

    /// In a cluster: the catalog in which this node holds exactly `routes` of `table` (the
    /// metadata service's assignment), every other range of it remote. `routes` must name
    /// this node (`node`) and cores below `cores`; ids and epochs are the service's.
    pub fn plan_assign(
        &self,
        table: &proto::TableDescription,
        routes: &[proto::cluster::Route],
        node: u64,
        cores: u32,
        page_size_bytes: u32,
    ) -> Result<Catalog, proto::Error> {
        let n = table.partitions;
        if n == 0 || n > proto::limits::TABLE_PARTITIONS_MAX {
            return Err(proto::Error::invalid(format!(
                "table {:?} is assigned with {n} partitions",
                table.name
            )));
        }
        let mut partitions = vec![
            PartitionEntry {
                id: 0,
                core: 0,
                remote: true,
                epoch: 0,
            };
            n as usize
        ];
        for r in routes {
            let here = r.replicas.iter().find(|p| p.node == node).ok_or_else(|| {
                proto::Error::invalid(format!(
                    "partition {} is assigned to nodes {:?}, not to this node ({node})",
                    r.partition_id,
                    r.replicas.iter().map(|p| p.node).collect::<Vec<_>>()
                ))
            })?;
            if r.table_id != table.id || r.partitions != n || r.index >= n || here.core >= cores {
                return Err(proto::Error::invalid(format!(
                    "partition {} does not fit table {:?} (id {}, {n} partitions) on {cores} cores",
                    r.partition_id, table.name, table.id
                )));
            }
            partitions[r.index as usize] = PartitionEntry {
                id: r.partition_id,
                core: here.core,
                remote: false,
                epoch: r.epoch,
            };
        }
        let mut next = self.clone();
        let existing = next
            .tables
            .binary_search_by(|t| t.name.as_str().cmp(&table.name));
        let page_size_bytes = match existing {
            // A partition already here keeps the page size its file was made with.
            Ok(at) if next.tables[at].id == table.id => next.tables[at].page_size_bytes,
            _ => page_size_bytes,
        };
        if let Ok(at) = existing {
            if next.tables[at].id != table.id {
                // The name was deleted and created again while this node was away.
                next.tables.remove(at);
            }
        }
        let entry = TableEntry {
            name: table.name.clone(),
            id: table.id,
            partition_key: table.key_schema.partition_key.clone(),
            sort_key: table.key_schema.sort_key.clone(),
            capacity: table.capacity.into(),
            created_unix_ms: table.created_unix_ms,
            page_size_bytes,
            partitions,
        };
        next.next_table_id = next.next_table_id.max(table.id + 1);
        let top = routes.iter().map(|r| r.partition_id).max().unwrap_or(0);
        next.next_partition_id = next.next_partition_id.max(top + 1);
        match next
            .tables
            .binary_search_by(|t| t.name.as_str().cmp(&table.name))
        {
            Ok(at) => next.tables[at] = entry,
            Err(at) => {
                if next.tables.len() >= TABLES_MAX {
                    return Err(proto::Error::invalid(format!(
                        "this node holds {TABLES_MAX} tables, its limit"
                    )));
                }
                next.tables.insert(at, entry)
            }
        }
        next.version += 1;
        next.check().map_err(|e| {
            proto::Error::invalid(format!("the assignment breaks the catalog: {e}"))
        })?;
        Ok(next)
    }

    /// In a cluster: the catalog without the tables holding any of `partition_ids` (the
    /// metadata service drops a deleted table's partitions together), and their names.
    pub fn plan_drop(&self, partition_ids: &[u64]) -> (Catalog, Vec<String>) {
        let mut next = self.clone();
        let mut dropped = Vec::new();
        next.tables.retain(|t| {
            let hit = t
                .partitions
                .iter()
                .any(|p| !p.remote && partition_ids.contains(&p.id));
            if hit {
                dropped.push(t.name.clone());
            }
            !hit
        });
        if !dropped.is_empty() {
            next.version += 1;
        }
        (next, dropped)
    }

    /// A page of table names after `start_after`, at most `limit` (0: the page maximum).
    pub fn list(&self, start_after: Option<&str>, limit: u32) -> (Vec<String>, Option<String>) {
        let limit = match limit {
            0 => proto::limits::LIST_TABLES_PAGE_MAX,
            l => l.min(proto::limits::LIST_TABLES_PAGE_MAX),
        } as usize;
        let from = match start_after {
            Some(s) => self.tables.partition_point(|t| t.name.as_str() <= s),
            None => 0,
        };
        let names: Vec<String> = self.tables[from..]
            .iter()
            .take(limit)
            .map(|t| t.name.clone())
            .collect();
        let last = if from + names.len() < self.tables.len() {
            names.last().cloned()
        } else {
            None
        };
        (names, last)
    }

    /// Every partition of core `core`: (table, partition index, entry).
    pub fn partitions_of_core(
        &self,
        core: u32,
    ) -> impl Iterator<Item = (&TableEntry, u32, PartitionEntry)> {
        self.tables.iter().flat_map(move |t| {
            t.partitions
                .iter()
                .enumerate()
                .filter(move |(_, p)| !p.remote && p.core == core)
                .map(move |(i, p)| (t, i as u32, *p))
        })
    }
}

/// Reads the catalog at start-up (blocking: nothing is served yet). A missing file is an
/// empty catalog; a leftover temporary file (a crash before its rename) is removed, since
/// the change it held was never acknowledged.
pub fn load(data_dir: &Path) -> Result<Catalog, CatalogError> {
    let path = data_dir.join(CATALOG_FILE_NAME);
    let tmp = data_dir.join(CATALOG_TMP_FILE_NAME);
    if tmp.exists() {
        std::fs::remove_file(&tmp).map_err(|e| CatalogError::Io {
            path: tmp.clone(),
            op: "remove",
            reason: e.to_string(),
        })?;
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => Catalog::decode(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog::default()),
        Err(e) => Err(CatalogError::Io {
            path,
            op: "read",
            reason: e.to_string(),
        }),
    }
}

/// Makes `catalog` the durable catalog, atomically, through glommio (on core 0, after
/// start-up: no blocking system call on a core).
///
/// Steps: write `catalog.tmp`; fdatasync it; rename it over `catalog`; fsync the directory.
/// A crash before the rename leaves the old catalog (and a temporary file that [`load`]
/// removes); after it, the new one, whole, because its bytes were durable before the rename.
pub async fn write_durable(data_dir: &Path, catalog: &Catalog) -> Result<(), CatalogError> {
    let path = data_dir.join(CATALOG_FILE_NAME);
    let tmp = data_dir.join(CATALOG_TMP_FILE_NAME);
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e: glommio::GlommioError<()>| CatalogError::Io {
            path: p,
            op,
            reason: e.to_string(),
        }
    };
    let file = glommio::io::BufferedFile::create(&tmp)
        .await
        .map_err(io("create", &tmp))?;
    let bytes = catalog.encode().into_bytes();
    let len = bytes.len();
    let written = file.write_at(bytes, 0).await.map_err(io("write", &tmp))?;
    if written != len {
        return Err(CatalogError::Io {
            path: tmp,
            op: "write",
            reason: format!("short write: {written} of {len} bytes"),
        });
    }
    file.fdatasync().await.map_err(io("fdatasync", &tmp))?;
    file.close().await.map_err(io("close", &tmp))?;
    glommio::io::rename(&tmp, &path)
        .await
        .map_err(io("rename", &path))?;
    devices::dma::sync_dir(data_dir)
        .await
        .map_err(|e| CatalogError::Io {
            path: data_dir.to_path_buf(),
            op: "fsync directory",
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, partitions: u32) -> proto::CreateTable {
        proto::CreateTable {
            name: name.into(),
            key_schema: proto::KeySchema {
                partition_key: "pk".into(),
                sort_key: None,
            },
            capacity: proto::CapacityMode::OnDemand,
            partitions,
        }
    }

    fn route(
        table_id: u64,
        index: u32,
        partitions: u32,
        id: u64,
        node: u64,
        core: u32,
    ) -> proto::cluster::Route {
        proto::cluster::Route {
            table_id,
            table: "alpha".into(),
            index,
            partitions,
            partition_id: id,
            epoch: 1,
            replicas: vec![proto::cluster::Placement {
                node,
                core,
                addr: "127.0.0.1:1".into(),
            }],
            leader: 0,
        }
    }

    fn description(id: u64, partitions: u32) -> proto::TableDescription {
        proto::TableDescription {
            name: "alpha".into(),
            id,
            key_schema: proto::KeySchema {
                partition_key: "pk".into(),
                sort_key: None,
            },
            capacity: proto::CapacityMode::OnDemand,
            partitions,
            status: proto::TableStatus::Active,
            created_unix_ms: 1,
        }
    }

    #[test]
    fn an_assignment_holds_its_ranges_here_and_marks_the_rest_remote() {
        let c = Catalog::default();
        let routes = [route(40, 1, 4, 100, 7, 1), route(40, 3, 4, 102, 7, 0)];
        let c = c
            .plan_assign(&description(40, 4), &routes, 7, 2, 8192)
            .unwrap();
        let t = c.table("alpha").unwrap();
        let remote: Vec<bool> = t.partitions.iter().map(|p| p.remote).collect();
        assert_eq!(remote, vec![true, false, true, false]);
        assert_eq!((t.partitions[1].id, t.partitions[1].core), (100, 1));
        assert!(c.next_partition_id > 102 && c.next_table_id > 40);
        assert_eq!(c.partitions_of_core(0).count(), 1);
        // The same assignment again changes nothing; the catalog still reads back.
        let again = c
            .plan_assign(&description(40, 4), &routes, 7, 2, 8192)
            .unwrap();
        assert_eq!(again.table("alpha"), c.table("alpha"));
        assert_eq!(
            Catalog::decode(&c.encode()).unwrap().table("alpha"),
            c.table("alpha")
        );
        // Another node's route, a core this node lacks, an index out of range: refused.
        for bad in [
            route(40, 0, 4, 99, 8, 0),
            route(40, 0, 4, 99, 7, 5),
            route(40, 4, 4, 99, 7, 0),
        ] {
            assert!(c
                .plan_assign(&description(40, 4), &[bad], 7, 2, 8192)
                .is_err());
        }
        let (c, dropped) = c.plan_drop(&[102]);
        assert_eq!(dropped, vec!["alpha".to_string()]);
        assert!(c.table("alpha").is_none());
    }

    #[test]
    fn create_cuts_partitions_round_robin_and_never_reuses_ids() {
        let c = Catalog::default();
        let (c, t) = c.plan_create(&create("alpha", 0), 3, 2, 4096, 5).unwrap();
        assert_eq!(t.partitions.len(), 6);
        assert_eq!(
            t.partitions.iter().map(|p| p.core).collect::<Vec<_>>(),
            vec![0, 1, 2, 0, 1, 2]
        );
        assert_eq!(t.partitions[0].id, 1);
        let (c, _) = c.plan_delete("alpha").unwrap();
        let (c, t2) = c.plan_create(&create("alpha", 1), 3, 2, 4096, 6).unwrap();
        assert_eq!(
            t2.partitions[0].id, 7,
            "ids of a deleted table are not reused"
        );
        assert_ne!(t2.id, t.id);
        assert_eq!(c.version, 3);
    }

    #[test]
    fn create_of_an_existing_name_fails() {
        let (c, _) = Catalog::default()
            .plan_create(&create("alpha", 1), 1, 2, 4096, 0)
            .unwrap();
        assert_eq!(
            c.plan_create(&create("alpha", 1), 1, 2, 4096, 0)
                .unwrap_err(),
            proto::Error::TableExists {
                name: "alpha".into()
            }
        );
        assert!(matches!(
            c.plan_delete("beta"),
            Err(proto::Error::UnknownTable { .. })
        ));
    }

    #[test]
    fn encode_decode_round_trips_and_checks() {
        let mut c = Catalog::default();
        for name in ["ccc", "aaa", "bbb"] {
            c = c.plan_create(&create(name, 2), 2, 2, 4096, 1).unwrap().0;
        }
        let text = c.encode();
        assert_eq!(Catalog::decode(&text).unwrap(), c);
        assert_eq!(
            c.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["aaa", "bbb", "ccc"]
        );
        assert!(c.check_cores(2).is_ok());
        assert!(matches!(
            c.check_cores(1),
            Err(CatalogError::CoreMissing { core: 1, .. })
        ));
        let broken = text.replace("next_partition_id = 7", "next_partition_id = 3");
        assert!(matches!(
            Catalog::decode(&broken),
            Err(CatalogError::Invalid { .. })
        ));
    }

    #[test]
    fn hash_ranges_tile_the_space_and_agree_with_partition_of() {
        for n in [1u32, 2, 3, 7, 64] {
            let (_, t) = Catalog::default()
                .plan_create(&create("tiles", n), 2, 2, 4096, 0)
                .unwrap();
            assert_eq!(*t.hash_range(0).start(), 0);
            assert_eq!(*t.hash_range(n - 1).end(), u128::MAX);
            for i in 1..n {
                assert_eq!(*t.hash_range(i).start(), t.hash_range(i - 1).end() + 1);
            }
            for k in 0..200u32 {
                let key = format!("key-{k}");
                let i = t.partition_of(key.as_bytes());
                assert!(t
                    .hash_range(i)
                    .contains(&proto::partition_key_hash(key.as_bytes())));
            }
        }
    }

    #[test]
    fn list_pages_in_name_order() {
        let mut c = Catalog::default();
        for i in 0..5 {
            c = c
                .plan_create(&create(&format!("t{i:02}"), 1), 1, 1, 4096, 0)
                .unwrap()
                .0;
        }
        assert_eq!(
            c.list(None, 2),
            (vec!["t00".into(), "t01".into()], Some("t01".into()))
        );
        assert_eq!(
            c.list(Some("t01"), 2),
            (vec!["t02".into(), "t03".into()], Some("t03".into()))
        );
        assert_eq!(c.list(Some("t03"), 2), (vec!["t04".into()], None));
        assert_eq!(c.list(Some("t04"), 0), (vec![], None));
    }
}
