//! SIGTERM and SIGINT, delivered into every executor of a daemon.
//!
//! glommio has no shutdown API (upstream #303, GLOMMIO-NOTES pitfall 10), so each executor
//! gets its own socket pair: signal-hook's handler writes a byte to the writing end
//! (async-signal safe), and the executor awaits the reading end through glommio like any
//! socket. A signal that arrives while an executor is still recovering waits in the socket
//! until it looks. SIGUSR1 is left alone: glommio's stall detector uses it.

use std::io;
use std::os::unix::io::{FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;

use futures_lite::AsyncReadExt;
use signal_hook::consts::{SIGINT, SIGTERM};

/// The signals that stop a daemon.
pub const STOP_SIGNALS: [i32; 2] = [SIGTERM, SIGINT];

/// The reading end of one signal pipe, moved into the executor (or thread) that waits on it.
pub struct StopPipe {
    fd: RawFd,
}

/// Registers `count` pipes for [`STOP_SIGNALS`], one per waiter; call before the executors
/// start.
pub fn register(count: usize) -> io::Result<Vec<StopPipe>> {
    let mut pipes = Vec::with_capacity(count);
    for _ in 0..count {
        let (read, write) = UnixStream::pair()?;
        for signal in STOP_SIGNALS {
            signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
        }
        pipes.push(StopPipe {
            fd: read.into_raw_fd(),
        });
    }
    Ok(pipes)
}

/// Stops the whole process the way SIGTERM does (a failed executor takes the others down).
pub fn raise_stop() {
    let _ = signal_hook::low_level::raise(SIGTERM);
}

impl StopPipe {
    /// Blocks the calling thread until a stop signal arrives (for a main thread).
    pub fn wait_blocking(self) {
        use std::io::Read;
        // SAFETY: `fd` came from `into_raw_fd` of a socket this value owns alone.
        let mut stream = unsafe { UnixStream::from_raw_fd(self.fd) };
        let mut byte = [0u8; 1];
        let _ = stream.read(&mut byte);
    }

    /// Resolves when a stop signal arrives. Runs on an executor.
    pub async fn wait(self) {
        // SAFETY: `fd` came from `into_raw_fd` of a socket this value owns alone.
        let mut stream = unsafe { glommio::net::UnixStream::from_raw_fd(self.fd) };
        let mut byte = [0u8; 1];
        // An error or end of file would mean the writing ends are gone, which never happens
        // while the process lives (signal-hook keeps them): treat it as a stop.
        let _ = stream.read(&mut byte).await;
    }
}
