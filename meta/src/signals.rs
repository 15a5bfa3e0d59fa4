//! SIGTERM and SIGINT, delivered into the executor.
//!
//! glommio has no shutdown API (upstream #303, GLOMMIO-NOTES pitfall 10): signal-hook's
//! handler writes a byte to one end of a socket pair (async-signal safe) and the executor
//! awaits the other end like any socket. A signal that arrives during recovery waits in the
//! socket until the service looks. SIGUSR1 is left alone: glommio's stall detector uses it.

use std::io;
use std::os::unix::io::{FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;

use futures_lite::AsyncReadExt;

/// The signals that stop the service.
pub const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// The reading end of the signal pipe, moved into the executor.
pub struct StopPipe {
    fd: RawFd,
}

/// Registers the pipe for [`STOP_SIGNALS`]; call before the executor starts.
pub fn register() -> io::Result<StopPipe> {
    let (read, write) = UnixStream::pair()?;
    for signal in STOP_SIGNALS {
        signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
    }
    Ok(StopPipe {
        fd: read.into_raw_fd(),
    })
}

impl StopPipe {
    /// Resolves when a stop signal arrives. Runs on the executor.
    pub async fn wait(self) {
        // SAFETY: `fd` came from `into_raw_fd` of a socket this value owns alone.
        let mut stream = unsafe { glommio::net::UnixStream::from_raw_fd(self.fd) };
        let mut byte = [0u8; 1];
        // A read error or end of file would mean the writing end is gone, which never
        // happens while the process lives (signal-hook keeps it); treat it as a stop.
        let _ = stream.read(&mut byte).await;
    }
}
