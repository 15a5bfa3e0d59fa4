//! Fakes for the router's tests: a metadata service and node cores, each a small blocking
//! TCP server on 127.0.0.1 answering proto frames, and the router as a real process.
//!
//! They are scripted stand-ins for percore-meta and percore-node (written at the same time
//! as the router), holding just enough state to check where each request went: a fake node
//! holds the partitions the test gives it and answers `WrongOwner` for any other key, the
//! way a cluster node answers for a range it does not hold.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::cluster::{ClusterReply, ClusterRequest, Placement, Route};
use proto::{
    Error, FrameKind, FrameReader, Item, Key, Request, Response, ScanResume, TableDescription,
    TableStatus, WriteOp, WriteOutcome,
};

/// A blocking TCP server answering each frame with `answer`.
pub struct FakeServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

type Answer = dyn Fn(&proto::Frame) -> Vec<u8> + Send + Sync;

impl FakeServer {
    pub fn start(answer: Arc<Answer>) -> FakeServer {
        Self::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), answer)
    }

    pub fn start_on(listener: TcpListener, answer: Arc<Answer>) -> FakeServer {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        {
            let (stop, conns) = (stop.clone(), conns.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    conns.lock().unwrap().push(stream.try_clone().unwrap());
                    let answer = answer.clone();
                    std::thread::spawn(move || serve(stream, answer));
                }
            });
        }
        FakeServer { addr, stop, conns }
    }

    /// Stops listening and cuts every connection, like a killed process.
    pub fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        // Let the accept thread see the flag and drop the listener.
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if !self.stop.load(Ordering::SeqCst) {
            self.kill();
        }
    }
}

fn serve(mut stream: TcpStream, answer: Arc<Answer>) {
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        reader.push(&buf[..n]);
        while let Ok(Some(frame)) = reader.next_frame() {
            let out = answer(&frame);
            if stream.write_all(&out).is_err() {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The fake metadata service.

#[derive(Default)]
pub struct MetaState {
    pub next_id: u64,
    /// Table name → (description, routes in hash order).
    pub tables: BTreeMap<String, (TableDescription, Vec<Route>)>,
    /// Node core addresses a new table's partitions go to, in turn.
    pub nodes: Vec<SocketAddr>,
    pub lookups: u64,
    pub table_maps: u64,
    /// `SyncRoot` calls (one per refresh).
    pub syncs: u64,
    /// Prefixes asked by `SyncExpand` calls.
    pub prefixes_expanded: u64,
}

impl MetaState {
    /// The map as a routing trie, built afresh (tests hold a few routes).
    fn trie(&self) -> routing::Trie<Route> {
        let mut t = routing::Trie::new();
        for (_, routes) in self.tables.values() {
            for r in routes {
                t.insert(routing::route_key(r.table_id, r.start()), r.clone());
            }
        }
        t
    }
}

pub struct FakeMeta {
    pub server: FakeServer,
    pub state: Arc<Mutex<MetaState>>,
}

impl FakeMeta {
    pub fn start(nodes: Vec<SocketAddr>) -> FakeMeta {
        let state = Arc::new(Mutex::new(MetaState {
            next_id: 1,
            nodes,
            ..MetaState::default()
        }));
        let s = state.clone();
        let server = FakeServer::start(Arc::new(move |frame: &proto::Frame| {
            let id = frame.header.request_id;
            match frame.header.kind {
                FrameKind::Cluster => {
                    let reply = match proto::decode_cluster(frame) {
                        Ok(r) => meta_cluster(&mut s.lock().unwrap(), r),
                        Err(e) => ClusterReply::Error(e),
                    };
                    proto::encode_cluster_reply(id, &reply)
                }
                _ => {
                    let resp = match proto::decode_request(frame) {
                        Ok(r) => meta_admin(&mut s.lock().unwrap(), r),
                        Err(e) => Response::Error(e),
                    };
                    proto::encode_response(id, &resp)
                }
            }
        }));
        FakeMeta { server, state }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Moves partition `index` of `table` to `to` under a new epoch.
    pub fn move_partition(&self, table: &str, index: u32, to: SocketAddr) {
        let mut st = self.state.lock().unwrap();
        let r = &mut st.tables.get_mut(table).unwrap().1[index as usize];
        r.epoch += 1;
        r.replicas[0].addr = to.to_string();
    }

    pub fn routes(&self, table: &str) -> Vec<Route> {
        self.state.lock().unwrap().tables[table].1.clone()
    }

    pub fn lookups(&self) -> u64 {
        let st = self.state.lock().unwrap();
        st.lookups + st.table_maps
    }

    pub fn syncs(&self) -> u64 {
        self.state.lock().unwrap().syncs
    }
}

fn unknown(name: &str) -> Error {
    Error::UnknownTable {
        name: name.to_string(),
    }
}

fn meta_cluster(st: &mut MetaState, r: ClusterRequest) -> ClusterReply {
    match r {
        ClusterRequest::Lookup { table, hash } => {
            st.lookups += 1;
            match st.tables.get(&table) {
                None => ClusterReply::Error(unknown(&table)),
                Some((d, routes)) => ClusterReply::Route(
                    routes[proto::partition_index(hash, d.partitions) as usize].clone(),
                ),
            }
        }
        ClusterRequest::TableMap { table } => {
            st.table_maps += 1;
            match st.tables.get(&table) {
                None => ClusterReply::Error(unknown(&table)),
                Some((_, routes)) => ClusterReply::Routes(routes.clone()),
            }
        }
        ClusterRequest::SyncRoot => {
            st.syncs += 1;
            let (hash, count) = st.trie().root();
            ClusterReply::SyncRoot { hash, count }
        }
        ClusterRequest::SyncExpand { prefixes } => {
            let prefixes = match routing::prefixes_from_wire(&prefixes) {
                Ok(p) => p,
                Err(e) => return ClusterReply::Error(Error::invalid(e.to_string())),
            };
            st.prefixes_expanded += prefixes.len() as u64;
            let trie = st.trie();
            ClusterReply::Expansions(routing::expansions_to_wire(
                prefixes.iter().map(|p| trie.expand(p)).collect(),
            ))
        }
        other => ClusterReply::Error(Error::invalid(format!(
            "the fake meta does not do {other:?}"
        ))),
    }
}

fn meta_admin(st: &mut MetaState, r: Request) -> Response {
    match r {
        Request::CreateTable(c) => {
            if st.tables.contains_key(&c.name) {
                return Response::Error(Error::TableExists { name: c.name });
            }
            let partitions = if c.partitions == 0 { 4 } else { c.partitions };
            let id = st.next_id;
            st.next_id += 1;
            let d = TableDescription {
                name: c.name.clone(),
                id,
                key_schema: c.key_schema,
                capacity: c.capacity,
                partitions,
                status: TableStatus::Active,
                created_unix_ms: 0,
            };
            let routes = (0..partitions)
                .map(|i| Route {
                    table_id: id,
                    table: c.name.clone(),
                    index: i,
                    partitions,
                    partition_id: id * 1000 + i as u64,
                    epoch: 1,
                    replicas: vec![Placement {
                        node: 1 + (i as usize % st.nodes.len()) as u64,
                        core: 0,
                        addr: st.nodes[i as usize % st.nodes.len()].to_string(),
                    }],
                    leader: 0,
                })
                .collect();
            st.tables.insert(c.name, (d.clone(), routes));
            Response::Table(d)
        }
        Request::DescribeTable { name } => match st.tables.get(&name) {
            Some((d, _)) => Response::Table(d.clone()),
            None => Response::Error(unknown(&name)),
        },
        Request::ListTables { .. } => Response::Tables {
            names: st.tables.keys().cloned().collect(),
            last: None,
        },
        Request::DeleteTable { name } => match st.tables.remove(&name) {
            Some((mut d, _)) => {
                d.status = TableStatus::Deleting;
                Response::Table(d)
            }
            None => Response::Error(unknown(&name)),
        },
        _ => Response::Error(Error::invalid("the fake meta serves table admin only")),
    }
}

// ---------------------------------------------------------------------------------------
// The fake node core.

#[derive(Default)]
pub struct NodeState {
    /// (table, partitions) → the partition indexes held here.
    pub held: HashMap<String, (u32, HashSet<u32>)>,
    pub items: BTreeMap<(String, Key), (Vec<u8>, u64)>,
    pub version: u64,
    /// Requests received (every kind).
    pub requests: u64,
    /// When set, every data request is answered with this error.
    pub refuse_with: Option<Error>,
}

pub struct FakeNode {
    pub server: FakeServer,
    pub state: Arc<Mutex<NodeState>>,
}

impl FakeNode {
    pub fn start() -> FakeNode {
        let state: Arc<Mutex<NodeState>> = Arc::default();
        let s = state.clone();
        let server = FakeServer::start(Arc::new(move |frame: &proto::Frame| {
            let resp = match proto::decode_request(frame) {
                Ok(r) => node_serve(&mut s.lock().unwrap(), r),
                Err(e) => Response::Error(e),
            };
            proto::encode_response(frame.header.request_id, &resp)
        }));
        FakeNode { server, state }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Holds the partitions meta's routes place here.
    pub fn hold_from(&self, routes: &[Route]) {
        let mut st = self.state.lock().unwrap();
        for r in routes {
            let e = st
                .held
                .entry(r.table.clone())
                .or_insert_with(|| (r.partitions, HashSet::new()));
            if r.replicas[0].addr == self.addr().to_string() {
                e.1.insert(r.index);
            } else {
                e.1.remove(&r.index);
            }
        }
    }

    pub fn requests(&self) -> u64 {
        self.state.lock().unwrap().requests
    }

    pub fn items(&self) -> usize {
        self.state.lock().unwrap().items.len()
    }
}

fn not_here(table: &str, index: u32) -> Error {
    Error::WrongOwner {
        owner: proto::Owner {
            node: 0,
            core: 0,
            addr: format!("partition {index} of table {table:?} is not on this node"),
        },
        epoch: 0,
    }
}

fn holds(st: &NodeState, table: &str, pk: &[u8]) -> Result<(), Error> {
    let Some((n, held)) = st.held.get(table) else {
        return Err(unknown(table));
    };
    let i = proto::partition_index(proto::partition_key_hash(pk), *n);
    if held.contains(&i) {
        Ok(())
    } else {
        Err(not_here(table, i))
    }
}

fn node_serve(st: &mut NodeState, r: Request) -> Response {
    st.requests += 1;
    if let Some(e) = &st.refuse_with {
        return Response::Error(e.clone());
    }
    let result = (|| -> Result<Response, Error> {
        match r {
            Request::Put(p) => {
                holds(st, &p.table, &p.key.partition)?;
                st.version += 1;
                let v = st.version;
                st.items.insert((p.table, p.key), (p.value, v));
                Ok(Response::Written { version: v })
            }
            Request::Get(g) => {
                holds(st, &g.table, &g.key.partition)?;
                match st.items.get(&(g.table, g.key.clone())) {
                    Some((value, version)) => Ok(Response::Item(Item {
                        key: g.key,
                        value: value.clone(),
                        version: *version,
                    })),
                    None => Err(Error::NotFound),
                }
            }
            Request::Delete(d) => {
                holds(st, &d.table, &d.key.partition)?;
                st.version += 1;
                let existed = st.items.remove(&(d.table, d.key)).is_some();
                Ok(Response::Deleted {
                    version: st.version,
                    existed,
                })
            }
            Request::BatchGet(b) => {
                let mut items = Vec::new();
                for k in &b.keys {
                    holds(st, &b.table, &k.partition)?;
                    if let Some((value, version)) = st.items.get(&(b.table.clone(), k.clone())) {
                        items.push(Item {
                            key: k.clone(),
                            value: value.clone(),
                            version: *version,
                        });
                    }
                }
                Ok(Response::BatchItems {
                    items,
                    unprocessed: Vec::new(),
                })
            }
            Request::BatchWrite(b) => {
                for w in &b.writes {
                    holds(st, &b.table, &w.key().partition)?;
                }
                let mut outcomes = Vec::new();
                for w in b.writes {
                    st.version += 1;
                    match w {
                        WriteOp::Put { key, value } => {
                            st.items.insert((b.table.clone(), key), (value, st.version));
                        }
                        WriteOp::Delete { key } => {
                            st.items.remove(&(b.table.clone(), key));
                        }
                    }
                    outcomes.push(WriteOutcome::Written {
                        version: st.version,
                    });
                }
                Ok(Response::BatchWritten { outcomes })
            }
            Request::Scan(s) => {
                // One partition per page, like a node whose neighbours are elsewhere.
                let (n, held) = st
                    .held
                    .get(&s.table)
                    .cloned()
                    .ok_or_else(|| unknown(&s.table))?;
                let p = s.resume.as_ref().map_or(0, |r| r.partition);
                if !held.contains(&p) {
                    return Err(not_here(&s.table, p));
                }
                let items: Vec<Item> = st
                    .items
                    .iter()
                    .filter(|((t, k), _)| {
                        *t == s.table
                            && proto::partition_index(proto::partition_key_hash(&k.partition), n)
                                == p
                    })
                    .map(|((_, k), (v, ver))| Item {
                        key: k.clone(),
                        value: v.clone(),
                        version: *ver,
                    })
                    .collect();
                Ok(Response::ScanPage {
                    items,
                    resume: (p + 1 < n).then_some(ScanResume {
                        partition: p + 1,
                        after: None,
                    }),
                })
            }
            other => Err(Error::invalid(format!(
                "the fake node does not do {other:?}"
            ))),
        }
    })();
    result.unwrap_or_else(Response::Error)
}

// ---------------------------------------------------------------------------------------
// The router process.

pub struct RouterProc {
    pub child: Child,
    pub port: u16,
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

static STARTED: AtomicU64 = AtomicU64::new(0);

impl RouterProc {
    pub fn start(meta: SocketAddr, extra: &[&str]) -> RouterProc {
        STARTED.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("router.log");
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_percore-router"))
            .args(["--listen-host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--meta", &meta.to_string(), "--io-memory", "1MiB"])
            .args(["--log-level", "info", "--log-file", log.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start percore-router");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the router prints its ready line");
        assert_eq!(line, format!("percore-router ready port={port}"));
        RouterProc {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    pub fn client(&self) -> client::blocking::Client {
        client::blocking::Client::connect(("127.0.0.1", self.port), Some(Duration::from_secs(20)))
            .unwrap()
    }

    /// SIGTERM, then the exit status within `within`.
    pub fn stop(&mut self, within: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < within, "the router did not stop in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RouterProc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn key(i: usize) -> Key {
    Key::simple(format!("user#{i}"))
}
