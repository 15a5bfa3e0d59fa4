//! `xtask relay`: the cheapest process a request can pass through, as the router benchmark's
//! peer.
//!
//! The router benchmark asks what a router costs next to talking to the node directly. Part
//! of that cost is the router's own work (reading frames, routing, relaying answers); part is
//! only that a request crosses one more process: two more loopback sends, two more wake-ups,
//! a core shared with the load generator. This relay does only the second part: it copies
//! bytes between each client connection and its own connection to one fixed address, with a
//! blocked thread per direction (the kernel wakes it straight from the sender; no runtime, no
//! parsing, no timers). Measured in the same run, it separates what any middle process costs
//! on this machine from what the router adds on top.
//!
//! It is a benchmark tool, not a product: it forwards to one address, knows no protocol,
//! and holds no limit beyond [`RELAY_CONNECTIONS_MAX`]. It runs until it is killed.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::Result;

/// Bytes copied per read: as much as one socket read of the router takes
/// (`daemon::server::SOCKET_READ_BYTES`), so that both pass the same batches on.
const RELAY_READ_BYTES: usize = 64 * 1024;

/// Client connections served at once; a benchmark opens a few. Beyond it a connection is
/// closed at once (two threads each: the bound keeps a runaway client from spawning
/// thousands).
const RELAY_CONNECTIONS_MAX: usize = 64;

/// The line the relay prints once it listens (what `procs::Daemon` waits for).
pub const READY_LINE: &str = "xtask-relay ready";

/// `xtask relay --listen ADDR --to ADDR`: relays every connection to `ADDR` until killed.
pub fn serve(args: &[String]) -> Result<()> {
    let addr =
        |flag: &str| crate::flag_str(args, flag)?.ok_or_else(|| format!("relay needs {flag} ADDR"));
    let (listen, to) = (addr("--listen")?, addr("--to")?);
    let listener =
        TcpListener::bind(listen).map_err(|e| format!("relay cannot listen on {listen}: {e}"))?;
    println!("{READY_LINE} listen={listen} to={to}");
    std::io::stdout()
        .flush()
        .map_err(|e| format!("relay cannot write its ready line: {e}"))?;
    // Copying threads alive: two per connection.
    let threads = Arc::new(AtomicUsize::new(0));
    for client in listener.incoming() {
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                eprintln!("relay: accept failed: {e}");
                continue;
            }
        };
        if threads.load(Ordering::Relaxed) >= 2 * RELAY_CONNECTIONS_MAX {
            eprintln!("relay: over {RELAY_CONNECTIONS_MAX} connections; closing a new one");
            continue;
        }
        let server = match TcpStream::connect(to) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("relay: cannot connect to {to}: {e}");
                continue;
            }
        };
        // Both sides carry pipelined requests written in batches: Nagle would only delay.
        if let Err(e) = client.set_nodelay(true).and(server.set_nodelay(true)) {
            eprintln!("relay: cannot set TCP_NODELAY: {e}");
            continue;
        }
        let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
            eprintln!("relay: cannot clone a socket");
            continue;
        };
        threads.fetch_add(2, Ordering::Relaxed);
        for (from, to) in [(client, server), (server2, client2)] {
            let threads = threads.clone();
            std::thread::spawn(move || {
                copy(from, to);
                threads.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
    Ok(())
}

/// Copies `from` to `to` until either side ends, then shuts `to`'s write side and `from`'s
/// read side, so that the peer and the other direction's copy see the end too.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; RELAY_READ_BYTES];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
