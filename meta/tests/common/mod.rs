//! Test helpers: the real `percore-meta` binary on 127.0.0.1, fake nodes, cluster calls.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use proto::cluster::{ClusterReply, ClusterRequest, NodeInfo};

/// How long the service may take to say it is ready.
pub const READY_TIMEOUT_MS: u64 = 20_000;
/// How long a stopped service may take to exit.
pub const STOP_TIMEOUT_MS: u64 = 20_000;
/// Every test call's timeout.
pub const CALL_TIMEOUT_MS: u64 = 15_000;

/// A free port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `percore-meta`.
pub struct MetaProc {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    extra: Vec<String>,
}

impl MetaProc {
    /// Starts it on a free port with `data_dir`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> MetaProc {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        MetaProc::start_on(
            data_dir,
            addr,
            extra.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn start_on(data_dir: &Path, addr: SocketAddr, extra: Vec<String>) -> MetaProc {
        let log_path = data_dir.with_extension("log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_percore-meta"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &addr.to_string()])
            .args(["--log-level", "info"])
            .args(&extra)
            .env_remove("PERCORE_META_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start percore-meta");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let expected = format!("percore-meta ready addr={addr}");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.trim() == expected {
                    let _ = tx.send(());
                }
            }
        });
        let mut m = MetaProc {
            child: Some(child),
            addr,
            data_dir: data_dir.to_owned(),
            log_path,
            extra,
        };
        let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return m;
            }
            if let Some(s) = m.child.as_mut().unwrap().try_wait().unwrap() {
                m.child = None;
                panic!("percore-meta exited with {s} before ready:\n{}", m.log());
            }
            assert!(
                Instant::now() < deadline,
                "percore-meta not ready in time:\n{}",
                m.log()
            );
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("percore-meta did not stop:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data directory and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        *self = MetaProc::start_on(&self.data_dir, self.addr, self.extra.clone());
    }

    /// A native client.
    pub fn client(&self) -> client::blocking::Client {
        client::blocking::Client::connect(self.addr, Some(Duration::from_millis(CALL_TIMEOUT_MS)))
            .unwrap()
    }

    /// A cluster connection.
    pub fn cluster(&self) -> ClusterClient {
        ClusterClient::connect(self.addr)
    }
}

impl Drop for MetaProc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("percore-meta's log:\n{}", self.log());
        }
    }
}

/// A blocking connection for cluster frames.
pub struct ClusterClient {
    pub inner: client::blocking::Client,
    next_id: u64,
}

impl ClusterClient {
    pub fn connect(addr: SocketAddr) -> ClusterClient {
        ClusterClient {
            inner: client::blocking::Client::connect(
                addr,
                Some(Duration::from_millis(CALL_TIMEOUT_MS)),
            )
            .unwrap(),
            next_id: 1000,
        }
    }

    pub fn call(&mut self, request: &ClusterRequest) -> ClusterReply {
        self.next_id += 1;
        let id = self.next_id;
        self.inner
            .send_raw(&proto::encode_cluster(id, request))
            .unwrap();
        let frame = self.inner.read_frame().unwrap();
        assert_eq!(frame.header.request_id, id);
        proto::decode_cluster_reply(&frame).unwrap()
    }
}

/// A fake node: core 0's port answers `Assign` and `Drop` (with `Ok`, or the error set)
/// and records every message.
pub struct FakeNode {
    pub info: NodeInfo,
    pub received: Arc<Mutex<Vec<ClusterRequest>>>,
    pub refuse: Arc<Mutex<Option<proto::Error>>>,
}

impl FakeNode {
    /// A node with `cores` cores; only core 0 listens (the others' addresses are never called).
    pub fn start(id: u64, cores: usize) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut core_addrs = vec![addr.to_string()];
        for c in 1..cores {
            core_addrs.push(format!("127.0.0.1:{}", 1 + c));
        }
        let received = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(Mutex::new(None));
        let (r, f) = (received.clone(), refuse.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (r, f) = (r.clone(), f.clone());
                std::thread::spawn(move || serve_fake(stream, r, f));
            }
        });
        FakeNode {
            info: NodeInfo {
                node: id,
                core_addrs,
                zone: format!("zone-{id}"),
            },
            received,
            refuse,
        }
    }

    pub fn take(&self) -> Vec<ClusterRequest> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }
}

fn serve_fake(
    mut stream: TcpStream,
    received: Arc<Mutex<Vec<ClusterRequest>>>,
    refuse: Arc<Mutex<Option<proto::Error>>>,
) {
    let mut reader = proto::FrameReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Ok(Some(frame)) = reader.next_frame() {
            let reply = match proto::decode_cluster(&frame) {
                Ok(m) => {
                    received.lock().unwrap().push(m);
                    match refuse.lock().unwrap().clone() {
                        Some(e) => ClusterReply::Error(e),
                        None => ClusterReply::Ok,
                    }
                }
                Err(e) => ClusterReply::Error(e),
            };
            if stream
                .write_all(&proto::encode_cluster_reply(
                    frame.header.request_id,
                    &reply,
                ))
                .is_err()
            {
                return;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => reader.push(&buf[..n]),
        }
    }
}

/// A table create request.
pub fn create(name: &str, partitions: u32) -> proto::CreateTable {
    proto::CreateTable {
        name: name.into(),
        key_schema: proto::KeySchema {
            partition_key: "pk".into(),
            sort_key: Some("sk".into()),
        },
        capacity: proto::CapacityMode::Provisioned {
            read_units_per_s: 10,
            write_units_per_s: 5,
        },
        partitions,
    }
}
