//! Starting and stopping percore's processes for the demo and the benchmarks.
//!
//! A node is started on 127.0.0.1 with a free block of ports and a fresh data directory;
//! xtask waits for its `percore-node ready` line, reads its peak memory from `/proc`, and
//! stops it with SIGTERM (it drains and exits 0), killing it only if it does not.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{run, workspace_root, Result};

/// How long a daemon may take to recover and start answering.
const NODE_READY_TIMEOUT_S: u64 = 120;

/// How long a daemon may take to drain and exit after SIGTERM before it is killed.
const NODE_STOP_TIMEOUT_S: u64 = 60;

/// Builds the release binaries of these packages.
pub fn build_release(packages: &[&str]) -> Result<()> {
    let mut args = vec!["build", "--release", "--quiet"];
    for p in packages {
        args.push("-p");
        args.push(p);
    }
    run("cargo", &args)
}

/// The path of a release binary, honouring `CARGO_TARGET_DIR`.
pub fn release_bin(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

/// The workspace's target directory (on the data disk, unlike a tmpfs `/tmp`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A fresh, empty directory under the target directory, removed when dropped.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    /// Makes `target/<name>-<pid>`, emptied first.
    pub fn new(name: &str) -> Result<ScratchDir> {
        let dir = target_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A base port such that it and the next `count - 1` ports are free on 127.0.0.1 now.
pub fn free_port_block(count: u16) -> Result<u16> {
    for _ in 0..100 {
        let probe =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind a port: {e}"))?;
        let base = probe.local_addr().map_err(|e| e.to_string())?.port();
        drop(probe);
        if base.checked_add(count).is_none() {
            continue;
        }
        if (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    Err(format!("no block of {count} free ports found on 127.0.0.1"))
}

/// A running percore daemon (`percore-node`, `percore-meta` or `percore-router`).
pub struct Daemon {
    child: Child,
    name: &'static str,
}

/// The node is the daemon most runs start.
pub type Node = Daemon;

impl Daemon {
    /// Starts `percore-node` on `data_dir` and waits until it says it is ready.
    pub fn start(data_dir: &Path, port: u16, cores: &str, extra: &[&str]) -> Result<Daemon> {
        let mut args = vec![
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "--port".into(),
            port.to_string(),
            "--cores".into(),
            cores.into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        Daemon::spawn("percore-node", &args)
    }

    /// Starts `percore-meta` on `data_dir` and a free port; returns it and its address.
    pub fn meta(data_dir: &Path) -> Result<(Daemon, String)> {
        let addr = format!("127.0.0.1:{}", free_port_block(1)?);
        let args = [
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "--listen".into(),
            addr.clone(),
            "--log-level".into(),
            "warn".into(),
        ];
        Ok((Daemon::spawn("percore-meta", &args)?, addr))
    }

    /// Starts `percore-node` number `id` on `cpu` and `data_dir`, registered with meta at
    /// `meta_addr`, with a page budget of `memory_budget`, on a free block of ports; returns
    /// it and its shared port (its core's own port is the next one).
    pub fn cluster_node(
        data_dir: &Path,
        cpu: &str,
        id: u64,
        meta_addr: &str,
        memory_budget: &str,
    ) -> Result<(Daemon, u16)> {
        let port = free_port_block(2)?;
        let id = id.to_string();
        let extra = [
            "--node-id",
            &id,
            "--meta",
            meta_addr,
            "--memory-budget",
            memory_budget,
            "--log-level",
            "warn",
        ];
        Ok((Daemon::start(data_dir, port, cpu, &extra)?, port))
    }

    /// Starts `percore-router` on `cpu` with `meta_addr`, on a free port, and, given one,
    /// serving Redis clients on `redis_port`; returns it and its native port.
    pub fn router(cpu: &str, meta_addr: &str, redis_port: Option<u16>) -> Result<(Daemon, u16)> {
        let port = free_port_block(1)?;
        let mut args = vec![
            "--port".to_string(),
            port.to_string(),
            "--cores".into(),
            cpu.into(),
            "--meta".into(),
            meta_addr.into(),
            "--log-level".into(),
            "warn".into(),
        ];
        if let Some(redis) = redis_port {
            args.extend(["--redis-port".to_string(), redis.to_string()]);
        }
        Ok((Daemon::spawn("percore-router", &args)?, port))
    }

    /// Starts `xtask relay` (this very binary, see `crate::relay`) on `cpu`, on a free port,
    /// relaying to 127.0.0.1:`to`; returns it and its port.
    pub fn relay(cpu: &str, to: u16) -> Result<(Daemon, u16)> {
        let port = free_port_block(1)?;
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find xtask's own binary for the relay: {e}"))?;
        let args = [
            "-c".to_string(),
            cpu.into(),
            exe.display().to_string(),
            "relay".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--to".into(),
            format!("127.0.0.1:{to}"),
        ];
        let ready = crate::relay::READY_LINE;
        Ok((
            Daemon::spawn_as("xtask-relay", "taskset".as_ref(), &args, ready)?,
            port,
        ))
    }

    /// Starts the release binary `name` with `args` and waits for its `<name> ready` line
    /// on standard output (every percore daemon prints one once it serves).
    pub fn spawn(name: &'static str, args: &[String]) -> Result<Daemon> {
        let ready = format!("{name} ready");
        Daemon::spawn_as(name, &release_bin(name), args, &ready)
    }

    /// Starts `bin` with `args` and waits for a line on standard output that starts with
    /// `ready`; `name` is what its output and errors are labelled with.
    fn spawn_as(name: &'static str, bin: &Path, args: &[String], ready: &str) -> Result<Daemon> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        eprintln!("xtask: $ {} {}", bin.display(), args.join(" "));
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let ready = ready.to_owned();
        let short = name.trim_start_matches("percore-");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if line.starts_with(&ready) {
                    let _ = tx.send(());
                }
                eprintln!("{short}: {line}");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(NODE_READY_TIMEOUT_S);
        loop {
            if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                return Ok(Daemon { child, name });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{name} exited before it was ready: {status}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "{name} was not ready within {NODE_READY_TIMEOUT_S} s"
                ));
            }
        }
    }

    /// The node's peak resident memory so far, in MiB (`VmHWM`).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// Sends SIGTERM and waits for a clean exit; kills it if it does not exit in time.
    pub fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(NODE_STOP_TIMEOUT_S);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!("{} exited with {status} after SIGTERM", self.name))
                }
                _ if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    return Err(format!(
                        "{} did not exit within {NODE_STOP_TIMEOUT_S} s of SIGTERM",
                        self.name
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The fields of one flat JSON object line, as (name, raw value) pairs: strings unquoted,
/// numbers as written. Enough for the lines percore-perf prints; not a general parser.
pub fn json_fields(line: &str) -> Vec<(String, String)> {
    let body = line.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('"') {
            break;
        }
        let name: String = chars.by_ref().take_while(|c| *c != '"').collect();
        while chars.peek().is_some_and(|c| *c == ':' || c.is_whitespace()) {
            chars.next();
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next()),
                    '"' => break,
                    c => v.push(c),
                }
            }
            v
        } else {
            let mut v = String::new();
            while chars.peek().is_some_and(|c| *c != ',') {
                v.extend(chars.next());
            }
            v.trim().to_owned()
        };
        out.push((name, value));
    }
    out
}

/// One field of [`json_fields`]'s output.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_json_lines_parse() {
        let f = json_fields(
            r#"{"bench":"node","case":"ycsb_a","load":"50%","ops_per_s":25000.5,"p99_us":812,"setup":"a \"b\""}"#,
        );
        assert_eq!(field(&f, "case"), Some("ycsb_a"));
        assert_eq!(field(&f, "load"), Some("50%"));
        assert_eq!(field(&f, "ops_per_s"), Some("25000.5"));
        assert_eq!(field(&f, "p99_us"), Some("812"));
        assert_eq!(field(&f, "setup"), Some("a \"b\""));
        assert_eq!(field(&f, "none"), None);
    }
}
