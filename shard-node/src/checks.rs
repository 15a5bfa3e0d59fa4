//! The start-up checks: the node refuses to start, with a message that says what to do,
//! rather than start and then fail or run slowly.
//!
//! Each check runs on the main thread before any executor starts, with blocking system
//! calls (allowed while opening: nothing is served yet):
//!
//! 1. io_uring is available ([`check_io_uring`]): glommio cannot run without it.
//! 2. The locked-memory limit covers what glommio will register ([`check_memlock`]): short
//!    of it glommio silently falls back to unregistered buffers (pitfall 8).
//! 3. The data directory exists or can be made, and takes O_DIRECT writes
//!    ([`check_direct_io`]): tmpfs, for one, does not.
//! 4. No other node uses the data directory ([`DataDirLock`]): two nodes of one user on one
//!    port would silently share it through SO_REUSEPORT (pitfall 7) and both write one WAL.
//! 5. No other process listens on the node's ports ([`check_ports_free`]): glommio binds with
//!    SO_REUSEPORT, so a node on another data directory but the same port would otherwise
//!    silently receive half of this node's connections (pitfall 7 again; found when a
//!    forgotten node answered "table exists" for a table on a fresh node).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::limits::RING_MEMLOCK_BYTES_PER_CORE;

/// The lock file's name inside the data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// The probe file's name inside the data directory (removed after the probe).
pub const DIRECT_IO_PROBE_FILE_NAME: &str = ".direct-io-probe";

/// Bytes of the O_DIRECT probe write: one page, the unit of every tree and WAL write.
const DIRECT_IO_PROBE_BYTES: usize = 4096;

/// Why the node refused to start. `Display` says what to do.
#[derive(Debug)]
pub enum CheckError {
    /// io_uring_setup failed.
    IoUringUnavailable {
        /// The OS error.
        error: io::Error,
    },
    /// RLIMIT_MEMLOCK is below what glommio will lock.
    MemlockTooLow {
        /// The soft limit, in bytes.
        limit_bytes: u64,
        /// What the configuration needs.
        needed_bytes: u64,
    },
    /// The data directory cannot be created or opened.
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The data directory's file system refused an O_DIRECT write.
    NoDirectIo {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// Another process listens on one of the node's ports.
    PortInUse {
        /// `host:port`.
        addr: String,
        /// The OS error.
        error: io::Error,
    },
    /// Another process holds the data directory's lock.
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::IoUringUnavailable { error } => write!(
                f,
                "io_uring is not available ({error}). percore needs Linux 5.10 or later with \
                 io_uring enabled: check `sysctl kernel.io_uring_disabled` (must be 0, or 1 with \
                 this user in the io_uring group), and that no seccomp profile (docker's default, \
                 for one) blocks io_uring_setup"
            ),
            CheckError::MemlockTooLow {
                limit_bytes,
                needed_bytes,
            } => write!(
                f,
                "the locked-memory limit is {limit_bytes} bytes but glommio needs about \
                 {needed_bytes} (3 x io_memory + ring memory, per core). Raise it: `ulimit -l \
                 unlimited` in the shell, `LimitMEMLOCK=infinity` in the systemd unit, or \
                 `memlock` in /etc/security/limits.conf; or lower --io-memory or --cores"
            ),
            CheckError::DataDir { path, error } => write!(
                f,
                "cannot create or open the data directory {}: {error}",
                path.display()
            ),
            CheckError::NoDirectIo { path, error } => write!(
                f,
                "the data directory {} cannot do O_DIRECT writes ({error}); its file system \
                 (tmpfs? a network or FUSE mount?) does not support direct I/O. Put the data \
                 directory on ext4 or xfs",
                path.display()
            ),
            CheckError::PortInUse { addr, error } => write!(
                f,
                "cannot use {addr}: {error}. Another process (another percore-node?) listens \
                 there; with SO_REUSEPORT it would take part of this node's connections. Stop \
                 it or choose other ports (--port, --core-ports)"
            ),
            CheckError::Locked { path, holder } => write!(
                f,
                "the data directory is in use: {} is locked by another process ({holder}). \
                 Stop that node or give this one another --data-dir",
                path.display()
            ),
        }
    }
}

impl std::error::Error for CheckError {}

/// Every check, in order; the lock is returned and must be kept for the process's life.
pub fn run_all(config: &Config) -> Result<DataDirLock, CheckError> {
    check_io_uring()?;
    check_memlock(config)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|error| CheckError::DataDir {
        path: config.data_dir.clone(),
        error,
    })?;
    let lock = DataDirLock::acquire(&config.data_dir)?;
    check_direct_io(&config.data_dir)?;
    check_ports_free(config)?;
    Ok(lock)
}

/// How long one port probe waits for a connection to be accepted. A local listener
/// answers in microseconds; a remote address that drops packets must not stall start-up.
const PORT_PROBE_TIMEOUT_MS: u64 = 200;

/// How long start-up waits for a port to stop accepting before it refuses. A node killed
/// with SIGKILL keeps its listening socket alive (and accepting into its backlog) until the
/// kernel has torn its io_uring rings down, which it does asynchronously: a restart right
/// after a kill finds the port busy for a moment (found by the SIGKILL test).
pub const PORT_RELEASE_WAIT_MS: u64 = 5_000;

/// Pause between two probes while waiting.
const PORT_RELEASE_POLL_MS: u64 = 50;

/// Refuses if something keeps accepting connections on one of the node's ports, before the
/// node has bound them, for [`PORT_RELEASE_WAIT_MS`].
///
/// A connection attempt, not a bind: a bind would also fail on the connected sockets a
/// killed node leaves behind on its port, which take no connections and must not stop a
/// restart. A process that starts listening between this probe and the executors' binds is
/// not caught.
pub fn check_ports_free(config: &Config) -> Result<(), CheckError> {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(PORT_RELEASE_WAIT_MS);
    let mut waited = false;
    loop {
        match busy_port(config) {
            None => return Ok(()),
            Some(addr) if std::time::Instant::now() >= deadline => {
                return Err(CheckError::PortInUse {
                    addr,
                    error: io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("a process still accepts connections there after {PORT_RELEASE_WAIT_MS} ms"),
                    ),
                })
            }
            Some(addr) => {
                if !waited {
                    tracing::warn!(%addr, "a process accepts connections on this node's port; waiting for it to go");
                    waited = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(PORT_RELEASE_POLL_MS));
            }
        }
    }
}

/// The first of the node's addresses that accepts a connection now.
fn busy_port(config: &Config) -> Option<String> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
    for port in std::iter::once(config.port).chain(config.core_ports.iter().copied()) {
        let addr = format!("{}:{port}", config.listen_host);
        // Unresolvable: the executors' bind will say so.
        let targets: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default();
        for mut target in targets {
            if target.ip().is_unspecified() {
                target.set_ip(match target.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            let timeout = std::time::Duration::from_millis(PORT_PROBE_TIMEOUT_MS);
            match std::net::TcpStream::connect_timeout(&target, timeout) {
                // Accepted: a listener. Timed out: a listener whose backlog is full (it
                // drops the handshake instead of refusing it).
                Ok(_) => return Some(addr),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Some(addr),
                // Refused: nothing listens. Anything else (unreachable...): the bind
                // will say what is wrong.
                Err(_) => {}
            }
        }
    }
    None
}

/// Sets up (and tears down) one io_uring with the raw system call, the way glommio will.
pub fn check_io_uring() -> Result<(), CheckError> {
    // `struct io_uring_params` is 120 bytes; the kernel fills what it returns and reads only
    // zeros (no flags) from the rest.
    let mut params = [0u32; 30];
    // SAFETY: the syscall reads and writes `params`, which lives across the call and is
    // large enough; the returned descriptor is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(CheckError::IoUringUnavailable {
            error: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` is a descriptor we own and close once.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// The locked memory the configuration needs, in bytes: glommio registers its I/O pool in
/// three rings on every core, and recent kernels charge the rings themselves too.
pub fn memlock_needed_bytes(config: &Config) -> u64 {
    let io_memory = config.io_memory_bytes.max(64 * 1024);
    config.cores.len() as u64 * (3 * io_memory + RING_MEMLOCK_BYTES_PER_CORE)
}

/// Refuses when RLIMIT_MEMLOCK is short of [`memlock_needed_bytes`], unless the process
/// may lock without limit (root, or CAP_IPC_LOCK: the kernel then ignores the limit).
pub fn check_memlock(config: &Config) -> Result<(), CheckError> {
    let needed_bytes = memlock_needed_bytes(config);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        // Unknown: glommio will find out and say so; do not refuse on a guess.
        return Ok(());
    }
    if limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= needed_bytes {
        return Ok(());
    }
    if has_cap_ipc_lock() {
        return Ok(());
    }
    Err(CheckError::MemlockTooLow {
        limit_bytes: limit.rlim_cur,
        needed_bytes,
    })
}

/// Whether the process has CAP_IPC_LOCK in its effective set (root normally does), read
/// from /proc/self/status so that no capability library is needed.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK_BIT: u32 = 14;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        // SAFETY: geteuid has no preconditions.
        return unsafe { libc::geteuid() } == 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK_BIT) != 0)
}

/// Writes one aligned 4 KiB block with O_DIRECT into the data directory, then removes it.
pub fn check_direct_io(dir: &Path) -> Result<(), CheckError> {
    let path = dir.join(DIRECT_IO_PROBE_FILE_NAME);
    let result = direct_write(&path);
    let _ = std::fs::remove_file(&path);
    result.map_err(|error| CheckError::NoDirectIo {
        path: dir.to_path_buf(),
        error,
    })
}

fn direct_write(path: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let layout = std::alloc::Layout::from_size_align(DIRECT_IO_PROBE_BYTES, DIRECT_IO_PROBE_BYTES)
        .expect("a valid layout");
    // SAFETY: the layout has a non-zero size; the buffer is freed below on every path.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(io::Error::other("cannot allocate the probe buffer"));
    }
    // SAFETY: `ptr` points to DIRECT_IO_PROBE_BYTES initialised (zeroed) bytes.
    let buf = unsafe { std::slice::from_raw_parts(ptr, DIRECT_IO_PROBE_BYTES) };
    let result = file.write_all(buf);
    // SAFETY: allocated above with this layout, freed once.
    unsafe { std::alloc::dealloc(ptr, layout) };
    result
}

/// An exclusive `flock` on the data directory's lock file, held while the value lives.
///
/// The lock is advisory and tied to the open file: the kernel drops it when the process
/// exits, however it exits, so a crash never leaves a stale lock behind. The file holds the
/// holder's pid for the message a second node prints.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, CheckError> {
        let path = dir.join(LOCK_FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| CheckError::DataDir {
                path: dir.to_path_buf(),
                error,
            })?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(CheckError::Locked {
                    path,
                    holder: if holder.is_empty() {
                        "unknown holder".to_string()
                    } else {
                        holder.to_string()
                    },
                });
            }
            return Err(CheckError::DataDir {
                path: dir.to_path_buf(),
                error,
            });
        }
        let note = format!("percore-node pid {}\n", std::process::id());
        let written = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(note.as_bytes()));
        if let Err(error) = written {
            return Err(CheckError::DataDir {
                path: dir.to_path_buf(),
                error,
            });
        }
        Ok(DataDirLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The locked file (kept open for the lock's life).
    pub fn file(&self) -> &File {
        &self.file
    }
}
