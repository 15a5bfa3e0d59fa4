//! The router's Redis port, driven by the tools people already have: redis-cli,
//! redis-benchmark and redis-py (installed by `cargo xtask test`), and by raw RESP bytes for
//! what those tools never send (oversized arguments, broken framing, long pipelines).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use client::blocking;
use cluster_tests::{Cluster, REDIS_TABLES};
use proto::{CapacityMode, Consistency, CreateTable, Key, KeySchema};

fn create_tables(cluster: &Cluster) {
    let mut c = cluster.client();
    for name in REDIS_TABLES {
        c.create_table(CreateTable {
            name: name.into(),
            key_schema: KeySchema {
                partition_key: "pk".into(),
                sort_key: None,
            },
            capacity: CapacityMode::OnDemand,
            partitions: 4,
        })
        .expect("create the table through the router");
    }
}

/// Runs `redis-cli -p PORT args...` and returns its output, trimmed.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is missing: install redis-tools (cargo xtask test does)");
    assert!(out.status.success(), "redis-cli {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// One RESP2 reply, read from the stream, as text close to redis-cli's.
fn read_reply(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read a reply line");
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | "-" | ":" => line.to_string(),
        "$" => {
            let len: i64 = rest.parse().expect("a bulk length");
            if len < 0 {
                return "(nil)".into();
            }
            let mut body = vec![0u8; len as usize + 2];
            r.read_exact(&mut body).expect("read a bulk body");
            body.truncate(len as usize);
            String::from_utf8_lossy(&body).into_owned()
        }
        "*" => {
            let n: usize = rest.parse().expect("an array length");
            let items: Vec<String> = (0..n).map(|_| read_reply(r)).collect();
            format!("[{}]", items.join(", "))
        }
        other => panic!("not a RESP2 reply: {other}{rest}"),
    }
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn connect(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the Redis port");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

#[test]
fn redis_cli_reads_and_writes_items_with_redis_semantics() {
    let cluster = Cluster::start(2);
    create_tables(&cluster);
    let p = cluster.redis_port;
    assert_eq!(cli(p, &["PING"]), "PONG");
    assert_eq!(cli(p, &["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(p, &["GET", "greeting"]), "hello world");
    assert_eq!(cli(p, &["SET", "greeting", "again", "NX"]), "");
    assert_eq!(cli(p, &["SET", "absent", "x", "XX"]), "");
    assert_eq!(cli(p, &["SET", "greeting", "hi", "XX"]), "OK");
    assert_eq!(cli(p, &["MSET", "a", "1", "b", "2", "c", "3"]), "OK");
    assert_eq!(cli(p, &["MGET", "a", "nope", "c"]), "1\n\n3");
    assert_eq!(cli(p, &["EXISTS", "a", "b", "nope", "a"]), "3");
    assert_eq!(cli(p, &["DEL", "a", "nope"]), "1");
    assert_eq!(cli(p, &["INCR", "counter"]), "1");
    assert_eq!(cli(p, &["INCRBY", "counter", "41"]), "42");
    assert_eq!(cli(p, &["DECR", "counter"]), "41");
    assert!(cli(p, &["INCR", "greeting"]).contains("not an integer"));
    assert!(cli(p, &["SET", "k", "v", "EX", "10"]).contains("do not expire"));
    assert!(cli(p, &["NOSUCH", "x"]).starts_with("ERR unknown command 'NOSUCH'"));
    assert!(cli(p, &["GET"]).contains("wrong number of arguments for 'get'"));
    assert_eq!(cli(p, &["CONFIG", "GET", "appendonly"]), "appendonly\nyes");
    // The second table is another keyspace; the item is the native protocol's item.
    assert_eq!(cli(p, &["-n", "1", "GET", "greeting"]), "");
    assert_eq!(cli(p, &["-n", "1", "SET", "greeting", "other"]), "OK");
    assert_eq!(cli(p, &["GET", "greeting"]), "hi");
    let mut c = cluster.client();
    let item = c
        .get(
            REDIS_TABLES[1],
            Key::simple("greeting"),
            Consistency::Strong,
        )
        .expect("a native get")
        .expect("the item SET wrote");
    assert_eq!(item.value, b"other");
    assert!(cli(p, &["SELECT", "2"]).contains("out of range"));
}

#[test]
fn bad_input_gets_errors_and_pipelines_keep_their_order() {
    let cluster = Cluster::start(2);
    create_tables(&cluster);
    let (mut s, mut r) = connect(cluster.redis_port);

    // An argument over the item limit is refused, and the connection goes on.
    let big = vec![b'x'; proto::limits::ITEM_BYTES_MAX + 1];
    s.write_all(&command(&[b"SET", b"big", &big])).unwrap();
    let refused = read_reply(&mut r);
    assert!(refused.starts_with("-ERR argument of"), "{refused}");
    // One at the limit passes the parser and meets the item limit (key + value).
    let at_limit = vec![b'y'; proto::limits::ITEM_BYTES_MAX];
    s.write_all(&command(&[b"SET", b"big", &at_limit])).unwrap();
    assert!(read_reply(&mut r).starts_with("-ERR "));
    s.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_reply(&mut r), "+PONG");

    // A long pipeline: writes and reads of the same keys come back in order, each read
    // seeing the write before it.
    let mut pipeline = Vec::new();
    for i in 0..300 {
        let key = format!("p{}", i % 50);
        pipeline.extend(command(&[b"SET", key.as_bytes(), i.to_string().as_bytes()]));
        pipeline.extend(command(&[b"GET", key.as_bytes()]));
    }
    s.write_all(&pipeline).unwrap();
    for i in 0..300 {
        assert_eq!(read_reply(&mut r), "+OK");
        assert_eq!(
            read_reply(&mut r),
            i.to_string(),
            "GET after SET number {i}"
        );
    }

    // INCR races: concurrent connections lose no increment.
    let port = cluster.redis_port;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut s, mut r) = connect(port);
                for _ in 0..25 {
                    s.write_all(&command(&[b"INCR", b"shared"])).unwrap();
                    assert!(read_reply(&mut r).starts_with(':'));
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    s.write_all(&command(&[b"GET", b"shared"])).unwrap();
    assert_eq!(read_reply(&mut r), "100");

    // Broken framing: answered with Redis's protocol error, then closed.
    s.write_all(b"*1\r\n:5\r\n").unwrap();
    assert!(read_reply(&mut r).starts_with("-ERR Protocol error"));
    let mut rest = Vec::new();
    assert_eq!(
        r.read_to_end(&mut rest).unwrap(),
        0,
        "the connection is closed"
    );
}

#[test]
fn redis_py_and_redis_benchmark_work_and_an_ok_is_durable() {
    let mut cluster = Cluster::start(1);
    create_tables(&cluster);
    let port = cluster.redis_port;

    // redis-py with its defaults (RESP3 since redis-py 8) and with RESP2, pipelined.
    let script = format!(
        r#"
import redis
for proto in (None, 2):
    kw = {{}} if proto is None else {{"protocol": proto}}
    r = redis.Redis(port={port}, **kw)
    assert r.ping()
    assert r.set("py", b"\x00\xffbinary")
    assert r.get("py") == b"\x00\xffbinary"
    assert r.get("missing") is None
    assert r.set("py", "x", nx=True) is None
    assert r.mget(["py", "missing"]) == [b"\x00\xffbinary", None]
    p = r.pipeline(transaction=False)
    for i in range(200):
        p.set(f"k{{i}}", i)
    for i in range(200):
        p.get(f"k{{i}}")
    res = p.execute()
    assert res[:200] == [True] * 200, res[:5]
    assert res[200:] == [str(i).encode() for i in range(200)], res[200:205]
    assert r.config_get("appendonly") == {{"appendonly": "yes"}}
    try:
        r.execute_command("NOSUCH")
        raise SystemExit("an unknown command was accepted")
    except redis.ResponseError as e:
        assert "unknown command" in str(e)
print("redis-py ok")
"#
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "redis-py failed (pip install redis; cargo xtask test does): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // redis-benchmark, with and without pipelining: it stops at the first error reply.
    for pipeline in ["1", "8"] {
        let out = Command::new("redis-benchmark")
            .args(["-p", &port.to_string(), "-t", "set,get", "-n", "3000"])
            .args([
                "-c", "10", "-d", "100", "-r", "1000", "-P", pipeline, "--csv",
            ])
            .output()
            .expect("redis-benchmark is missing: install redis-tools (cargo xtask test does)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "redis-benchmark -P {pipeline}: {text}"
        );
        assert!(
            !text.contains("rror"),
            "redis-benchmark -P {pipeline}: {text}"
        );
        for test in ["\"SET\"", "\"GET\""] {
            assert!(text.contains(test), "no {test} row: {text}");
        }
    }

    // redis-benchmark's INCR test: every client on one counter. None may fail (a lost race
    // is the router's to retry) and none may be lost.
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "incr",
            "-n",
            "3000",
            "-c",
            "30",
            "--csv",
        ])
        .output()
        .expect("redis-benchmark");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !text.contains("rror"),
        "INCR: {text}"
    );
    let (mut s, mut r) = connect(port);
    s.write_all(&command(&[b"GET", b"counter:__rand_int__"]))
        .unwrap();
    assert_eq!(read_reply(&mut r), "3000");
    drop((s, r));

    // Every OK is durable: kill the node with SIGKILL, start it again, read everything.
    let (mut s, mut r) = connect(port);
    let mut pipeline = Vec::new();
    for i in 0..200 {
        pipeline.extend(command(&[
            b"SET",
            format!("durable{i}").as_bytes(),
            format!("v{i}").as_bytes(),
        ]));
    }
    s.write_all(&pipeline).unwrap();
    for _ in 0..200 {
        assert_eq!(read_reply(&mut r), "+OK");
    }
    drop((s, r));
    cluster.nodes[0].daemon.kill();
    cluster.nodes[0].daemon.restart();
    let mut c: blocking::Client = cluster.client();
    for i in 0..200 {
        let item = c
            .get(
                REDIS_TABLES[0],
                Key::simple(format!("durable{i}")),
                Consistency::Strong,
            )
            .expect("a get after the restart")
            .unwrap_or_else(|| panic!("durable{i} was acknowledged and is gone"));
        assert_eq!(item.value, format!("v{i}").into_bytes());
    }
    let (mut s, mut r) = connect(port);
    s.write_all(&command(&[b"GET", b"durable7"])).unwrap();
    assert_eq!(read_reply(&mut r), "v7");
}
