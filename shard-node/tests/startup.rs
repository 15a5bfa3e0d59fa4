//! The node's own start-up and shutdown behaviour, against the real binary: configuration
//! precedence (flag over environment over file over default), the refusals (no O_DIRECT, a
//! data directory another node holds, a bad configuration), start then SIGTERM exits 0 quickly,
//! and a restart recovers what a clean stop left.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shard_node::config::{Cli, Config, ConfigError, FileConfig, SystemFacts};

const BIN: &str = env!("CARGO_BIN_EXE_percore-node");

/// How long a node may take to print its ready line.
const READY_TIMEOUT_MS: u64 = 60_000;

/// How long a node may take to exit after SIGTERM.
const STOP_TIMEOUT_MS: u64 = 15_000;

fn facts() -> SystemFacts {
    SystemFacts {
        cpus: vec![0, 1, 2, 3],
        physical_memory_bytes: 8 << 30,
    }
}

/// Free ports: one shared and `cores` per-core ones.
fn free_ports(cores: usize) -> (u16, Vec<u16>) {
    let listeners: Vec<TcpListener> = (0..=cores)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    (ports[0], ports[1..].to_vec())
}

fn cpus(n: usize) -> String {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n)
        .map(|i| (i % available).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A node process with piped stdout; its stderr goes to `log`.
struct Node {
    child: Child,
    ready: mpsc::Receiver<String>,
    port: u16,
}

fn node_command(data_dir: &Path, port: u16, core_ports: &[u16]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--data-dir")
        .arg(data_dir)
        .args(["--port", &port.to_string()])
        .args([
            "--core-ports",
            &core_ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ])
        .args(["--cores", &cpus(core_ports.len())])
        .args(["--memory-budget", "16MiB", "--io-memory", "1MiB"])
        .args(["--wal-segment-bytes", "4MiB", "--wal-batch-bytes", "64KiB"])
        .args([
            "--wal-tail-cache-bytes",
            "1MiB",
            "--wal-spare-segments",
            "1",
        ])
        .env_remove("PERCORE_CONFIG")
        .env_remove("PERCORE_DATA_DIR")
        .env_remove("PERCORE_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    c
}

impl Node {
    fn spawn(mut command: Command, port: u16, log: &Path) -> Node {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = command.stderr(Stdio::from(log)).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Node { child, ready, port }
    }

    fn start(data_dir: &Path, cores: usize) -> Node {
        let (port, core_ports) = free_ports(cores);
        let log = data_dir.with_extension("log");
        let mut node = Node::spawn(node_command(data_dir, port, &core_ports), port, &log);
        node.wait_ready(&log);
        node
    }

    fn wait_ready(&mut self, log: &Path) {
        let expected = format!("percore-node ready port={}", self.port);
        let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        loop {
            if let Ok(line) = self.ready.recv_timeout(Duration::from_millis(20)) {
                if line == expected {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "exited with {status} before ready:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not ready in time:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }

    /// SIGTERM, then the exit status and the lines the node printed on stdout. A node that
    /// has not exited within `STOP_TIMEOUT_MS` is a hang: killed, and the test fails.
    fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let started = Instant::now();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_millis(STOP_TIMEOUT_MS) {
                let _ = self.child.kill();
                panic!("the node did not stop within {STOP_TIMEOUT_MS} ms of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The reader thread ends when the exited node's stdout closes.
        let lines = self.ready.iter().collect();
        (status, lines)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PERCORE_")) {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn defaults_fill_what_nothing_sets() {
    let cli = Cli {
        data_dir: Some("/data".into()),
        ..Cli::default()
    };
    let c = Config::merge(&cli, &FileConfig::default(), &facts()).unwrap();
    assert_eq!(c.port, 7700);
    assert_eq!(c.core_ports, vec![7701, 7702, 7703, 7704]);
    assert_eq!(c.cores, vec![0, 1, 2, 3]);
    assert_eq!(
        c.memory_budget_bytes,
        2 << 30,
        "a quarter of physical memory"
    );
    assert_eq!(c.partitions_per_core, 2);
    assert_eq!(c.listen_host, "127.0.0.1");
    assert_eq!(c.wal.wal_config(), wal::Config::default());
}

#[test]
fn flags_win_over_the_file_and_the_file_over_defaults() {
    let file = FileConfig::parse(
        r#"
        data_dir = "/from-file"
        port = 9000
        cores = "0-1"
        memory_budget = "1GiB"
        io_memory = 2097152
        log_level = "debug"
        "#,
    )
    .unwrap();
    let cli = Cli {
        port: Some(9100),
        io_memory: Some("8MiB".into()),
        ..Cli::default()
    };
    let c = Config::merge(&cli, &file, &facts()).unwrap();
    assert_eq!(c.data_dir, Path::new("/from-file"));
    assert_eq!(c.port, 9100, "the flag wins");
    assert_eq!(
        c.core_ports,
        vec![9101, 9102],
        "derived from the winning port"
    );
    assert_eq!(c.cores, vec![0, 1]);
    assert_eq!(c.memory_budget_bytes, 1 << 30);
    assert_eq!(c.io_memory_bytes, 8 << 20);
    assert_eq!(c.log_level, "debug");
}

#[test]
fn bad_configurations_are_refused_naming_the_field() {
    let base = || Cli {
        data_dir: Some("/d".into()),
        ..Cli::default()
    };
    let refuse = |cli: Cli, file: &str| {
        Config::merge(&cli, &FileConfig::parse(file).unwrap(), &facts()).unwrap_err()
    };
    assert_eq!(refuse(Cli::default(), ""), ConfigError::MissingDataDir);
    assert!(matches!(
        refuse(
            Cli {
                cores: Some("0,9".into()),
                ..base()
            },
            ""
        ),
        ConfigError::CoreNotAvailable { cpu: 9, .. }
    ));
    assert!(matches!(
        refuse(
            Cli {
                core_ports: Some("8001".into()),
                cores: Some("0,1".into()),
                ..base()
            },
            ""
        ),
        ConfigError::CorePortsCount { cores: 2, ports: 1 }
    ));
    assert!(matches!(
        refuse(
            Cli {
                port: Some(65535),
                ..base()
            },
            ""
        ),
        ConfigError::BadPort { port: 65536, .. }
    ));
    assert!(matches!(
        refuse(
            Cli {
                memory_budget: Some("12 parsecs".into()),
                ..base()
            },
            ""
        ),
        ConfigError::BadValue {
            field: "memory_budget",
            ..
        }
    ));
    assert!(matches!(
        refuse(
            Cli {
                memory_budget: Some("1KiB".into()),
                ..base()
            },
            ""
        ),
        ConfigError::MemoryBudgetTooSmall { .. }
    ));
    assert!(matches!(
        refuse(base(), "background_shares = 5000"),
        ConfigError::OutOfRange {
            field: "background_shares",
            ..
        }
    ));
    assert!(matches!(
        refuse(base(), "wal_segment_bytes = 4096"),
        ConfigError::Wal(_)
    ));
    assert!(matches!(
        refuse(
            Cli {
                log_level: Some("shard_node=loud".into()),
                ..base()
            },
            ""
        ),
        ConfigError::BadLogLevel { .. }
    ));
    assert!(
        FileConfig::parse("prot = 1").unwrap_err().contains("prot"),
        "unknown fields are refused"
    );
}

#[test]
fn print_config_shows_flag_over_env_over_file_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        "data_dir = \"/file\"\nport = 9000\nlog_level = \"warn\"\npartitions_per_core = 3\ncores = [0]\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let o = run(
        &[
            "--config",
            file,
            "--port",
            "9999",
            "--port",
            "9500",
            "--print-config",
        ],
        &[("PERCORE_PORT", "9400"), ("PERCORE_LOG_LEVEL", "debug")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    let c = Config::merge(
        &Cli::default(),
        &FileConfig::parse(&printed).unwrap(),
        &facts(),
    )
    .unwrap();
    assert_eq!(
        c.port, 9500,
        "the flag beats the variable; the last of two flags wins"
    );
    assert_eq!(c.log_level, "debug", "the variable beats the file");
    assert_eq!(c.partitions_per_core, 3, "the file beats the default");
    assert_eq!(c.data_dir, Path::new("/file"));
    assert_eq!(c.core_ports, vec![9501]);
}

#[test]
fn a_bad_configuration_exits_2_with_a_message() {
    let o = run(&["--port", "7000"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--data-dir"), "{}", stderr(&o));
    let o = run(&["--data-dir", "/tmp/x", "--cores", "0-"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cores"), "{}", stderr(&o));
}

#[test]
fn a_data_dir_without_o_direct_is_refused_with_advice() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipped: no /dev/shm (tmpfs) on this machine");
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    if shard_node::checks::check_direct_io(dir.path()).is_ok() {
        // tmpfs takes O_DIRECT since Linux 6.6; then no file system here lacks it.
        eprintln!("skipped: /dev/shm accepts O_DIRECT on this kernel");
        return;
    }
    let (port, core_ports) = free_ports(1);
    let o = node_command(dir.path(), port, &core_ports)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("O_DIRECT") && stderr(&o).contains("ext4"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_direct_io_check_names_the_directory_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    // A "directory" that is a file: the probe cannot be created, and the refusal says why.
    let e = shard_node::checks::check_direct_io(&file).unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("a-file") && message.contains("O_DIRECT"),
        "{message}"
    );
    assert!(
        shard_node::checks::check_direct_io(dir.path()).is_ok(),
        "ext4 takes O_DIRECT"
    );
}

#[test]
fn a_second_node_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Node::start(&data, 1);
    let (port, core_ports) = free_ports(1);
    let o = node_command(&data, port, &core_ports)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("in use") && e.contains(&format!("pid {}", first.child.id())),
        "{e}"
    );
    let (status, _) = first.stop();
    assert!(status.success());
    // Once the first has exited, the lock is free again.
    let again = Node::start(&data, 1);
    let (status, _) = again.stop();
    assert!(status.success());
}

#[test]
fn sigterm_stops_a_started_node_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), 2);
    let (status, _) = node.stop();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn tables_and_items_survive_a_clean_restart() {
    use client::proto::{Consistency, Key};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&data, 2);
    let addr = format!("127.0.0.1:{}", node.port);
    let mut c = client::blocking::Client::connect(&addr, Some(Duration::from_secs(20))).unwrap();
    c.create_table(client::create_table_request("restart", "pk", None, 4))
        .unwrap();
    let mut versions = Vec::new();
    for i in 0..40u32 {
        versions.push(
            c.put("restart", Key::simple(format!("k{i}")), vec![i as u8; 100])
                .unwrap(),
        );
    }
    drop(c);
    let (status, _) = node.stop();
    assert!(status.success());

    let node = Node::start(&data, 2);
    let addr = format!("127.0.0.1:{}", node.port);
    let mut c = client::blocking::Client::connect(&addr, Some(Duration::from_secs(20))).unwrap();
    for i in 0..40u32 {
        let item = c
            .get("restart", Key::simple(format!("k{i}")), Consistency::Strong)
            .unwrap()
            .expect("an item written before a clean stop");
        assert_eq!(item.version, versions[i as usize]);
        assert_eq!(item.value, vec![i as u8; 100]);
    }
    drop(c);
    let (status, _) = node.stop();
    assert!(status.success());
}

#[test]
fn sigterm_during_start_up_exits_0_without_waiting_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (port, core_ports) = free_ports(2);
    // Default-sized WAL segments: zero-filling them keeps the node busy starting up.
    let mut command = node_command(&data, port, &core_ports);
    command.args(["--wal-segment-bytes", "64MiB", "--wal-spare-segments", "2"]);
    let node = Node::spawn(command, port, &data.with_extension("log"));
    std::thread::sleep(Duration::from_millis(30));
    let (status, stdout) = node.stop();
    assert_eq!(status.code(), Some(0));
    // It left without finishing its start-up: it never said it was ready.
    assert!(
        !stdout.iter().any(|l| l.starts_with("percore-node ready")),
        "{stdout:?}"
    );
}

#[test]
fn a_port_another_process_listens_on_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Another process's listener, with SO_REUSEPORT as glommio sets it: without the check
    // the node would bind beside it and share its connections.
    let squatter =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    {
        use std::os::unix::io::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                squatter.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEPORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
    }
    squatter
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    squatter.listen(8).unwrap();
    let port = squatter.local_addr().unwrap().as_socket().unwrap().port();
    let (_, core_ports) = free_ports(1);
    let started = Instant::now();
    let mut child = node_command(&dir.path().join("data"), port, &core_ports)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It waits PORT_RELEASE_WAIT_MS for the port to go quiet, then refuses.
    let limit = Duration::from_millis(shard_node::checks::PORT_RELEASE_WAIT_MS + 10_000);
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node did not refuse a port another process listens on");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("127.0.0.1:{port}")),
        "{}",
        stderr(&o)
    );
}
