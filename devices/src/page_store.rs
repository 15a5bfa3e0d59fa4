//! The B-tree's page store on a glommio DMA file: O_DIRECT reads and writes through
//! io_uring, one file per tree, pages at `page_id * page_size`.
//!
//! Writes are plain DMA writes (several may be in flight: the tree's checkpoint issues a
//! window of them, consecutive pages as one write); durability comes from `sync`
//! (fdatasync), which the checkpoint calls twice around its meta-slot write, or once after a
//! small checkpoint's pages and meta slot (whose verify list lets open tell whether they all
//! landed). The file is not opened O_DSYNC on purpose: a checkpoint writes many pages and
//! syncs once or twice, which beats a flush per page.

use std::cell::Cell;
use std::io;
use std::path::Path;
use std::rc::Rc;

use btree::{PageStore, StoreError};
use glommio::io::{DmaFile, OpenOptions};

/// A [`PageStore`] on one glommio `DmaFile`, opened read-write.
///
/// Open it inside a glommio executor. It primes the data device first (GLOMMIO-NOTES
/// pitfall 1): a fresh, empty tree file opened first would make every later DMA read on
/// the device fail with EOPNOTSUPP.
pub struct DmaPageStore {
    file: Rc<DmaFile>,
    page_size: usize,
    pages: Cell<u64>,
}

fn io_err(op: &'static str, page_id: Option<u64>, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        op,
        page_id,
        message: e.to_string(),
    }
}

impl DmaPageStore {
    /// Opens (creating if missing) the tree file at `path`, whose pages are `page_size`
    /// bytes (a power of two, 4096..=65536).
    pub async fn open(path: &Path, page_size: usize) -> io::Result<Self> {
        if !(4096..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "page size must be a power of two in 4096..=65536",
            ));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        crate::dma::prime_device(&dir).await?;
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await?;
        if !existed {
            // The new file's directory entry must survive a crash too.
            crate::dma::sync_dir(&dir).await?;
        }
        let len = file.file_size().await?;
        Ok(DmaPageStore {
            file: Rc::new(file),
            page_size,
            pages: Cell::new(len / page_size as u64),
        })
    }

    /// Closes the file.
    pub async fn close(self) -> io::Result<()> {
        match Rc::try_unwrap(self.file) {
            Ok(f) => Ok(f.close().await?),
            Err(_) => Ok(()),
        }
    }
}

impl PageStore for DmaPageStore {
    fn page_size(&self) -> usize {
        self.page_size
    }

    async fn read_page(&self, page_id: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        if buf.len() != self.page_size {
            return Err(StoreError::BadBufferLength {
                len: buf.len(),
                page_size: self.page_size,
            });
        }
        self.read_pages(page_id, buf).await
    }

    async fn read_pages(&self, first_page_id: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        if buf.len() % self.page_size != 0 {
            return Err(StoreError::BadBufferLength {
                len: buf.len(),
                page_size: self.page_size,
            });
        }
        if buf.is_empty() {
            return Ok(());
        }
        let pages = (buf.len() / self.page_size) as u64;
        if first_page_id.saturating_add(pages) > self.pages.get() {
            return Err(StoreError::OutOfRange {
                page_id: first_page_id.saturating_add(pages - 1),
                page_count: self.pages.get(),
            });
        }
        let pos = first_page_id * self.page_size as u64;
        let r = self
            .file
            .read_at_aligned(pos, buf.len())
            .await
            .map_err(|e| io_err("read", Some(first_page_id), e))?;
        if r.len() != buf.len() {
            return Err(io_err(
                "read",
                Some(first_page_id),
                format!("short read: {} of {} bytes", r.len(), buf.len()),
            ));
        }
        buf.copy_from_slice(&r);
        Ok(())
    }

    async fn write_page(&self, page_id: u64, buf: &[u8]) -> Result<(), StoreError> {
        if buf.len() != self.page_size {
            return Err(StoreError::BadBufferLength {
                len: buf.len(),
                page_size: self.page_size,
            });
        }
        self.write_pages(page_id, buf).await
    }

    async fn write_pages(&self, first_page_id: u64, buf: &[u8]) -> Result<(), StoreError> {
        if buf.is_empty() || buf.len() % self.page_size != 0 {
            return Err(StoreError::BadBufferLength {
                len: buf.len(),
                page_size: self.page_size,
            });
        }
        // One DMA write for the whole run: a bulk checkpoint's pages are mostly consecutive.
        let mut dma = self.file.alloc_dma_buffer(buf.len());
        dma.as_bytes_mut().copy_from_slice(buf);
        let pos = first_page_id * self.page_size as u64;
        let n = self
            .file
            .write_at(dma, pos)
            .await
            .map_err(|e| io_err("write", Some(first_page_id), e))?;
        if n != buf.len() {
            return Err(io_err(
                "write",
                Some(first_page_id),
                format!("short write: {n} bytes"),
            ));
        }
        let pages = (buf.len() / self.page_size) as u64;
        self.pages.set(self.pages.get().max(first_page_id + pages));
        Ok(())
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.file
            .fdatasync()
            .await
            .map_err(|e| io_err("sync", None, e))
    }

    fn page_count(&self) -> u64 {
        self.pages.get()
    }

    async fn truncate(&self, page_count: u64) -> Result<(), StoreError> {
        self.file
            .truncate(page_count * self.page_size as u64)
            .await
            .map_err(|e| io_err("truncate", None, e))?;
        self.pages.set(page_count);
        Ok(())
    }
}
