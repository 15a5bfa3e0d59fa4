//! The WAL's block device on glommio DMA files: O_DIRECT, io_uring, O_DSYNC writes.
//!
//! Each segment is one file `<id as 16 hex digits>.wal` in the data directory. Writes are
//! `DmaFile::write_at` of whole aligned blocks on a descriptor opened with O_DSYNC, so each
//! write returns once durable with no separate fdatasync (about 20 µs cheaper here), and
//! never `DmaStreamWriter` (its `sync` rewrites its whole buffer, and its `close` truncates
//! the file, which would destroy a preallocated segment).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;
use wal::{BlockDevice, FileId};

use crate::dma::{open_dsync, prime_device, sync_dir};

/// Bytes written per request when zero-filling a new segment.
const ZERO_FILL_CHUNK_BYTES: usize = 1024 * 1024;

/// Bytes read per request when reading a segment back.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// Suffix of segment file names.
const SEGMENT_SUFFIX: &str = ".wal";

/// A directory of WAL segment files on glommio DMA files. Belongs to one executor.
pub struct DmaBlockDevice {
    dir: PathBuf,
    files: RefCell<HashMap<FileId, Rc<DmaFile>>>,
}

impl DmaBlockDevice {
    /// Opens (creating if needed) the data directory `dir` on the current glommio executor,
    /// priming the device against the EOPNOTSUPP trap first.
    pub async fn open(dir: impl AsRef<Path>) -> io::Result<DmaBlockDevice> {
        let dir = dir.as_ref().to_path_buf();
        prime_device(&dir).await?;
        Ok(DmaBlockDevice {
            dir,
            files: RefCell::new(HashMap::new()),
        })
    }

    fn path(&self, file: FileId) -> PathBuf {
        self.dir.join(format!("{file:016x}{SEGMENT_SUFFIX}"))
    }

    async fn handle(&self, file: FileId) -> io::Result<Rc<DmaFile>> {
        if let Some(f) = self.files.borrow().get(&file) {
            return Ok(f.clone());
        }
        let f = Rc::new(open_dsync(&self.path(file), false).await?);
        self.files.borrow_mut().insert(file, f.clone());
        Ok(f)
    }
}

fn short(op: &str, file: FileId, done: usize, wanted: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::WriteZero,
        format!("{op} of segment file {file}: {done} of {wanted} bytes"),
    )
}

impl BlockDevice for DmaBlockDevice {
    async fn list(&self) -> io::Result<Vec<(FileId, u64)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
                continue;
            };
            let Ok(id) = u64::from_str_radix(hex, 16) else {
                continue;
            };
            out.push((id, entry.metadata()?.len()));
        }
        out.sort_unstable();
        Ok(out)
    }

    async fn allocate(&self, file: FileId, bytes: u64) -> io::Result<()> {
        let path = self.path(file);
        let f = open_dsync(&path, true).await?;
        // Reserve the extents in one go, then write real zeros: a write into an unwritten
        // (fallocated) extent costs about twice as much as an overwrite.
        f.pre_allocate(bytes, false).await?;
        let mut offset = 0u64;
        while offset < bytes {
            let len = ZERO_FILL_CHUNK_BYTES.min((bytes - offset) as usize);
            let mut buf = f.alloc_dma_buffer(len);
            buf.as_bytes_mut().fill(0);
            let written = f.write_at(buf, offset).await?;
            if written != len {
                return Err(short("zero-fill", file, written, len));
            }
            offset += len as u64;
        }
        f.fdatasync().await?; // the size change, for file systems that need it
        sync_dir(&self.dir).await?;
        self.files.borrow_mut().insert(file, Rc::new(f));
        Ok(())
    }

    async fn write_at(&self, file: FileId, offset: u64, data: &[u8]) -> io::Result<()> {
        let f = self.handle(file).await?;
        let mut buf = f.alloc_dma_buffer(data.len());
        buf.as_bytes_mut()[..data.len()].copy_from_slice(data);
        let written = f.write_at(buf, offset).await?;
        if written != data.len() {
            return Err(short("write", file, written, data.len()));
        }
        Ok(())
    }

    async fn read_at(&self, file: FileId, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let f = self.handle(file).await?;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let want = READ_CHUNK_BYTES.min(len - out.len());
            let got = f.read_at(offset + out.len() as u64, want).await?;
            out.extend_from_slice(&got);
            if got.len() < want {
                break; // end of file
            }
        }
        Ok(out)
    }

    async fn remove(&self, file: FileId) -> io::Result<()> {
        let handle = self.files.borrow_mut().remove(&file);
        if let Some(f) = handle {
            if let Ok(f) = Rc::try_unwrap(f) {
                f.close().await?;
            }
        }
        glommio::io::remove(self.path(file)).await?;
        sync_dir(&self.dir).await
    }
}
