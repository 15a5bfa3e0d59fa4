//! Workarounds for glommio's DMA traps, shared by every device on glommio.
//!
//! See `../shared/GLOMMIO-NOTES.md`. Each helper says which trap it avoids and why.

use std::io::{self, Write};
use std::path::Path;

use glommio::io::{DmaFile, OpenOptions};

/// The name of the small file [`prime_device`] leaves in a data directory.
pub const PRIME_FILE_NAME: &str = ".glommio-prime";

/// Bytes in the priming file: one block of a non-empty file.
const PRIME_FILE_BYTES: usize = 4096;

/// Makes glommio decide correctly, on this executor, whether `dir`'s device takes polled
/// I/O, before any real file there is opened.
///
/// glommio probes polled-I/O support once per device and thread, with a read of the first
/// DMA file opened there. If that file is empty or only fallocated the probe succeeds
/// wrongly and every later DMA read on the device fails with EOPNOTSUPP (os error 95;
/// upstream issues #605 and #670). So: write one non-empty block with std (buffered, then
/// fsync), and open it through glommio first, read-write so that the probe read can run.
pub async fn prime_device(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(PRIME_FILE_NAME);
    let needs_write = std::fs::metadata(&path)
        .map(|m| m.len() < PRIME_FILE_BYTES as u64)
        .unwrap_or(true);
    if needs_write {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&[0x5a; PRIME_FILE_BYTES])?;
        f.sync_all()?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(&path)
        .await?;
    let read = file.read_at(0, PRIME_FILE_BYTES).await?;
    if read.len() != PRIME_FILE_BYTES {
        return Err(io::Error::other(format!(
            "priming read of {} returned {} bytes",
            path.display(),
            read.len()
        )));
    }
    file.close().await?;
    Ok(())
}

/// Opens `path` for DMA reads and writes where every write is durable on return (O_DSYNC),
/// creating it if asked. O_DSYNC writes beat write + fdatasync by about 20 µs here
/// (`../shared/GLOMMIO-NOTES.md`); glommio keeps the flag when it adds O_DIRECT. Read-write, never `DmaFile::create` (write-only: reads would fail).
pub async fn open_dsync(path: &Path, create: bool) -> io::Result<DmaFile> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .custom_flags(libc::O_DSYNC)
        .dma_open(path)
        .await?)
}

/// Makes a directory's entries durable (after creating, renaming or removing a file in it).
///
/// Through glommio's ring, not `std::fs::File::sync_all`: a blocking directory sync holds
/// the whole core (every partition on it) for the milliseconds a flush takes, and segment
/// files are created and removed while the log serves appends.
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    let directory = glommio::io::Directory::open(dir).await?;
    directory.sync().await?;
    directory.close().await?;
    Ok(())
}
