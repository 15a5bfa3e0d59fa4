//! The block-device trait the log does all its I/O through, and an in-memory device.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use crate::FileId;

/// A directory of segment files that takes whole-block, durable writes.
///
/// Offsets and lengths of writes are multiples of [`crate::limits::BLOCK_BYTES`]. The futures
/// are `!Send` (a device belongs to one core), hence no `Send` bounds.
#[allow(async_fn_in_trait)]
pub trait BlockDevice {
    /// Every segment file, with its size in bytes.
    async fn list(&self) -> io::Result<Vec<(FileId, u64)>>;

    /// Creates `file` with `bytes` zero bytes actually written (not a hole: a write into an
    /// unwritten extent costs about twice as much), durable — data, size and directory entry.
    async fn allocate(&self, file: FileId, bytes: u64) -> io::Result<()>;

    /// Writes `data` at `offset` and returns once it is durable (an O_DSYNC / RWF_DSYNC write,
    /// or a write then fdatasync). A write that fails may have left any of its sectors
    /// written or not.
    async fn write_at(&self, file: FileId, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Reads `len` bytes at `offset` (short only at the end of the file).
    async fn read_at(&self, file: FileId, offset: u64, len: usize) -> io::Result<Vec<u8>>;

    /// Deletes `file`, durably.
    async fn remove(&self, file: FileId) -> io::Result<()>;
}

/// A device in memory: every write is durable at once. Clones share the same files, so a
/// test can drop a log and open another over what it left.
#[derive(Clone, Debug, Default)]
pub struct MemDevice {
    files: Rc<RefCell<BTreeMap<FileId, Vec<u8>>>>,
}

impl MemDevice {
    /// An empty device.
    pub fn new() -> MemDevice {
        MemDevice::default()
    }

    /// A copy of every file's bytes (for tests that damage them and recover).
    pub fn files(&self) -> BTreeMap<FileId, Vec<u8>> {
        self.files.borrow().clone()
    }

    /// Replaces every file (for tests that damage bytes).
    pub fn set_files(&self, files: BTreeMap<FileId, Vec<u8>>) {
        *self.files.borrow_mut() = files;
    }
}

pub(crate) fn not_found(file: FileId) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {file}"))
}

pub(crate) fn write_into(
    files: &mut BTreeMap<FileId, Vec<u8>>,
    file: FileId,
    offset: u64,
    data: &[u8],
) -> io::Result<()> {
    let f = files.get_mut(&file).ok_or_else(|| not_found(file))?;
    let end = offset as usize + data.len();
    if end > f.len() {
        f.resize(end, 0);
    }
    f[offset as usize..end].copy_from_slice(data);
    Ok(())
}

pub(crate) fn read_from(
    files: &BTreeMap<FileId, Vec<u8>>,
    file: FileId,
    offset: u64,
    len: usize,
) -> io::Result<Vec<u8>> {
    let f = files.get(&file).ok_or_else(|| not_found(file))?;
    let start = (offset as usize).min(f.len());
    let end = (start + len).min(f.len());
    Ok(f[start..end].to_vec())
}

impl BlockDevice for MemDevice {
    async fn list(&self) -> io::Result<Vec<(FileId, u64)>> {
        Ok(self
            .files
            .borrow()
            .iter()
            .map(|(id, f)| (*id, f.len() as u64))
            .collect())
    }

    async fn allocate(&self, file: FileId, bytes: u64) -> io::Result<()> {
        self.files
            .borrow_mut()
            .insert(file, vec![0; bytes as usize]);
        Ok(())
    }

    async fn write_at(&self, file: FileId, offset: u64, data: &[u8]) -> io::Result<()> {
        write_into(&mut self.files.borrow_mut(), file, offset, data)
    }

    async fn read_at(&self, file: FileId, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        read_from(&self.files.borrow(), file, offset, len)
    }

    async fn remove(&self, file: FileId) -> io::Result<()> {
        self.files.borrow_mut().remove(&file);
        Ok(())
    }
}
