//! The async client against a scripted server on 127.0.0.1: pipelining, out-of-order
//! answers, the in-flight bound, and which failures are retried.
//!
//! The server is a plain std thread per connection. After each read it decodes every whole
//! request, asks the test's script what to do with each, and writes the answers of that
//! read in reverse order, so that answers always come back out of order.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use client::proto::{self, Condition, Consistency, Item, Key, Request, Response};
use client::{Backoff, Client, ClientConfig, Error};
use glommio::{LocalExecutorBuilder, Placement};

/// What the scripted server does with one request.
enum Action {
    Reply(Response),
    /// Close the connection (answers of this read already decided are dropped).
    Close,
    /// Never answer.
    Ignore,
    /// Keep it; answer every kept request (with the given response) once `hold_until` are
    /// kept on this connection.
    Hold(Response),
    /// Answer with a frame whose header's crc32 does not match its (intact) payload.
    ReplyBadChecksum(Response),
}

type Script = dyn Fn(&Request, &Stats) -> Action + Send + Sync;

#[derive(Default)]
struct Stats {
    /// Requests received, by kind.
    received: Mutex<HashMap<&'static str, usize>>,
    connections: AtomicUsize,
    /// The most requests one connection had unanswered at once.
    max_unanswered: AtomicUsize,
}

impl Stats {
    fn count(&self, kind: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .get(kind)
            .copied()
            .unwrap_or(0)
    }
}

fn kind(r: &Request) -> &'static str {
    match r {
        Request::Put(_) => "put",
        Request::Get(_) => "get",
        Request::Delete(_) => "delete",
        _ => "other",
    }
}

struct Server {
    addr: SocketAddr,
    stats: Arc<Stats>,
}

fn serve(script: impl Fn(&Request, &Stats) -> Action + Send + Sync + 'static) -> Server {
    serve_holding(usize::MAX, script)
}

fn serve_holding(
    hold_until: usize,
    script: impl Fn(&Request, &Stats) -> Action + Send + Sync + 'static,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(Stats::default());
    let script: Arc<Script> = Arc::new(script);
    let s = stats.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            s.connections.fetch_add(1, Ordering::SeqCst);
            let (s, script) = (s.clone(), script.clone());
            thread::spawn(move || connection(stream, &s, &*script, hold_until));
        }
    });
    Server { addr, stats }
}

fn connection(mut stream: TcpStream, stats: &Stats, script: &Script, hold_until: usize) {
    let mut frames = proto::FrameReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut held: Vec<(u64, Response, bool)> = Vec::new();
    let mut unanswered = 0usize;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        frames.push(&buf[..n]);
        let mut answers = Vec::new();
        while let Some(frame) = frames.next_frame().unwrap() {
            let id = frame.header.request_id;
            let request = proto::decode_request(&frame).unwrap();
            *stats
                .received
                .lock()
                .unwrap()
                .entry(kind(&request))
                .or_default() += 1;
            unanswered += 1;
            stats.max_unanswered.fetch_max(unanswered, Ordering::SeqCst);
            match script(&request, stats) {
                Action::Reply(r) => answers.push((id, r, false)),
                Action::ReplyBadChecksum(r) => answers.push((id, r, true)),
                Action::Close => return,
                Action::Ignore => {}
                Action::Hold(r) => held.push((id, r, false)),
            }
        }
        if held.len() >= hold_until {
            answers.append(&mut held);
        }
        let mut out = Vec::new();
        for (id, r, bad_checksum) in answers.iter().rev() {
            let at = out.len();
            out.extend_from_slice(&proto::encode_response(*id, r));
            if *bad_checksum {
                out[at + 20] ^= 1; // the header's payload crc32 starts at byte 20
            }
        }
        unanswered -= answers.len();
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move { f().await })
        .unwrap()
        .join()
        .unwrap();
}

fn config(addr: SocketAddr) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_millis(300),
        max_attempts: 3,
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
        ..ClientConfig::new(vec![addr])
    }
}

fn echo(request: &Request) -> Response {
    match request {
        Request::Get(g) => Response::Item(Item {
            key: g.key.clone(),
            value: g.key.partition.clone(),
            version: 1,
        }),
        Request::Put(_) => Response::Written { version: 7 },
        _ => Response::Error(proto::Error::invalid("not scripted")),
    }
}

fn key(i: usize) -> Key {
    Key::simple(format!("k{i}").into_bytes())
}

#[test]
fn many_requests_in_flight_get_their_own_answers_in_any_order() {
    let server = serve(|r, _| Action::Reply(echo(r)));
    let addr = server.addr;
    run(move || async move {
        let client = Client::connect(ClientConfig {
            connections: 2,
            ..config(addr)
        })
        .await
        .unwrap();
        let tasks: Vec<_> = (0..2000)
            .map(|i| {
                let c = client.clone();
                glommio::spawn_local(async move {
                    let item = c.get("t1x", key(i), Consistency::Strong).await.unwrap();
                    assert_eq!(item.unwrap().value, format!("k{i}").into_bytes());
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        assert_eq!(client.in_flight(), 0);
    });
    assert_eq!(server.stats.count("get"), 2000);
    assert_eq!(server.stats.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn callers_wait_for_room_beyond_the_in_flight_bound() {
    let bound = client::limits::REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX;
    // The server answers nothing until a full pipeline's worth is waiting: had the client
    // sent more than the bound, the count would show it.
    let server = serve_holding(bound, |r, _| Action::Hold(echo(r)));
    let addr = server.addr;
    run(move || async move {
        let client = Client::connect(ClientConfig {
            request_timeout: Duration::from_secs(10),
            ..config(addr)
        })
        .await
        .unwrap();
        let tasks: Vec<_> = (0..2 * bound)
            .map(|i| {
                let c = client.clone();
                glommio::spawn_local(async move {
                    c.get("t1x", key(i), Consistency::Strong)
                        .await
                        .unwrap()
                        .unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
    });
    assert_eq!(server.stats.count("get"), 2 * bound);
    assert_eq!(server.stats.max_unanswered.load(Ordering::SeqCst), bound);
}

#[test]
fn a_plain_put_is_not_sent_again_when_the_connection_drops() {
    let server = serve(|r, _| match r {
        Request::Put(_) => Action::Close,
        r => Action::Reply(echo(r)),
    });
    let addr = server.addr;
    run(move || async move {
        let client = Client::connect(config(addr)).await.unwrap();
        let e = client.put("t1x", key(1), b"v".to_vec()).await.unwrap_err();
        assert!(matches!(e, Error::Closed | Error::Io(_)), "{e}");
        // The pool connects again for the next call.
        assert!(client
            .get("t1x", key(1), Consistency::Strong)
            .await
            .unwrap()
            .is_some());
    });
    assert_eq!(server.stats.count("put"), 1);
}

#[test]
fn idempotent_requests_are_sent_again_when_the_connection_drops() {
    // The first get and the first if-absent put of each kind close the connection.
    let server = serve(|r, stats| {
        let first = stats.count(kind(r)) == 1;
        match r {
            _ if first => Action::Close,
            r => Action::Reply(echo(r)),
        }
    });
    let addr = server.addr;
    run(move || async move {
        let client = Client::connect(config(addr)).await.unwrap();
        let item = client
            .get("t1x", key(3), Consistency::Strong)
            .await
            .unwrap();
        assert_eq!(item.unwrap().value, b"k3");
        let v = client
            .put_if("t1x", key(3), b"v".to_vec(), Condition::IfAbsent)
            .await
            .unwrap();
        assert_eq!(v, 7);
    });
    assert_eq!(server.stats.count("get"), 2);
    assert_eq!(server.stats.count("put"), 2);
}

#[test]
fn a_timed_out_plain_put_is_not_sent_again_but_a_get_is() {
    let server = serve(|r, stats| match r {
        Request::Put(_) => Action::Ignore,
        Request::Get(_) if stats.count("get") == 1 => Action::Ignore,
        r => Action::Reply(echo(r)),
    });
    let addr = server.addr;
    run(move || async move {
        let client = Client::connect(config(addr)).await.unwrap();
        let e = client.put("t1x", key(1), b"v".to_vec()).await.unwrap_err();
        assert!(matches!(e, Error::Timeout), "{e}");
        let item = client
            .get("t1x", key(2), Consistency::Strong)
            .await
            .unwrap();
        assert_eq!(item.unwrap().value, b"k2");
        // Two abandoned requests wait for answers that never come; the connection lives.
        assert_eq!(client.in_flight(), 2);
    });
    assert_eq!(server.stats.count("put"), 1);
    assert_eq!(server.stats.count("get"), 2);
}

#[test]
fn a_request_on_a_ready_connection_times_out_after_the_timeout_not_before() {
    // The connection is live with room, so the request is queued at once and only the
    // connection's sweep can end its wait, and not before the timeout.
    let server = serve(|r, _| match r {
        Request::Put(_) => Action::Ignore,
        r => Action::Reply(echo(r)),
    });
    let addr = server.addr;
    run(move || async move {
        let client = Client::connect(config(addr)).await.unwrap();
        // A first answered request proves the connection live before the timed one.
        client
            .get("t1x", key(2), Consistency::Strong)
            .await
            .unwrap();
        let start = std::time::Instant::now();
        let e = client.put("t1x", key(1), b"v".to_vec()).await.unwrap_err();
        let waited = start.elapsed();
        assert!(matches!(e, Error::Timeout), "{e}");
        let timeout = config(addr).request_timeout;
        assert!(
            waited >= timeout,
            "timed out after {waited:?}, before {timeout:?}"
        );
        // The connection lives on: the next request is answered.
        client
            .get("t1x", key(3), Consistency::Strong)
            .await
            .unwrap();
    });
}

/// A request's frame as `Client::try_call_frame_then` takes it: its header and payload.
fn frame_parts(request: &Request) -> ([u8; proto::HEADER_BYTES], Vec<u8>) {
    let frame = proto::encode_request(0, request, 0);
    let (header, payload) = frame.split_at(proto::HEADER_BYTES);
    (header.try_into().expect("a whole header"), payload.to_vec())
}

/// Queues `request` with a callback and waits for what the callback gets: the answer's
/// frame, or the error.
async fn frame_then(client: &Client, request: &Request) -> Result<proto::Frame, Error> {
    let (header, payload) = frame_parts(request);
    let got = std::rc::Rc::new(std::cell::RefCell::new(None));
    let then: client::Then = {
        let got = got.clone();
        Box::new(move |answer| *got.borrow_mut() = Some(answer))
    };
    assert!(
        client.try_call_frame_then(&header, &payload, then).is_ok(),
        "a live connection with room takes the request at once"
    );
    loop {
        if let Some(answer) = got.borrow_mut().take() {
            return answer;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// [`frame_then`], the answer decoded.
async fn call_then(client: &Client, request: &Request) -> Result<Response, Error> {
    let frame = frame_then(client, request).await?;
    Ok(proto::decode_checked_response(&frame).unwrap())
}

fn get_request(k: usize) -> Request {
    Request::Get(proto::Get {
        table: "t1x".into(),
        key: key(k),
        consistency: Consistency::Strong,
    })
}

fn put_request(k: usize, value: &[u8]) -> Request {
    Request::Put(proto::Put {
        table: "t1x".into(),
        key: key(k),
        value: value.to_vec(),
        condition: Condition::None,
    })
}

#[test]
fn a_callback_gets_the_answer_an_error_answer_a_timeout_or_the_closed_connection() {
    let server = serve(|r, stats| match r {
        Request::Put(p) if p.value == b"ignore" => Action::Ignore,
        Request::Put(p) if p.value == b"close" => Action::Close,
        Request::Get(_) if stats.count("get") == 3 => {
            Action::Reply(Response::Error(proto::Error::NotFound))
        }
        r => Action::Reply(echo(r)),
    });
    let addr = server.addr;
    run(move || async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client
            .get("t1x", key(1), Consistency::Strong)
            .await
            .unwrap();
        let (get, put) = (get_request, |v: &[u8]| put_request(1, v));
        // An answer, then an error answer (as `call_frame` reports them).
        let answer = call_then(&client, &get(2)).await.unwrap();
        assert_eq!(answer, echo(&get(2)));
        let e = call_then(&client, &get(3)).await.unwrap_err();
        assert!(matches!(e, Error::Server(proto::Error::NotFound)), "{e}");
        // No answer: the connection's sweep times it out, not before the timeout.
        let start = std::time::Instant::now();
        let e = call_then(&client, &put(b"ignore")).await.unwrap_err();
        assert!(matches!(e, Error::Timeout), "{e}");
        assert!(start.elapsed() >= config(addr).request_timeout);
        // The connection closes under the request: the callback hears of it, never retried.
        let e = call_then(&client, &put(b"close")).await.unwrap_err();
        assert!(!matches!(e, Error::Server(_) | Error::Timeout), "{e}");
    });
    assert_eq!(
        server.stats.count("put"),
        2,
        "callbacks' requests are sent once"
    );
}

#[test]
fn a_relayed_answer_is_checksummed_only_when_it_is_an_error_the_caller_acts_on() {
    // A callback's frame is passed on unchanged by a relay, whose client checks the
    // checksum end to end; an error answer is read and acted on, so it is checked here.
    let server = serve(|r, _| match r {
        Request::Get(_) => Action::ReplyBadChecksum(echo(r)),
        Request::Put(_) => Action::ReplyBadChecksum(Response::Error(proto::Error::NotFound)),
        r => Action::Reply(echo(r)),
    });
    let addr = server.addr;
    run(move || async move {
        let client = Client::connect(config(addr)).await.unwrap();
        // The plain path checks every answer's checksum.
        let e = client
            .get("t1x", key(1), Consistency::Strong)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Protocol(_)), "{e}");
        let frame = frame_then(&client, &get_request(2))
            .await
            .expect("passed on unchecked");
        // Whoever it is passed on to finds the mismatch.
        assert!(proto::frame::check_checksum(&frame).is_err());
        let e = call_then(&client, &put_request(3, b"v")).await.unwrap_err();
        assert!(
            matches!(e, Error::Protocol(_)),
            "an error answer is checked: {e}"
        );
    });
}

#[test]
fn throttled_and_unavailable_writes_are_retried_and_other_errors_are_not() {
    let server = serve(|r, stats| match r {
        Request::Put(p) if p.value == b"throttled" && stats.count("put") == 1 => {
            Action::Reply(Response::Error(proto::Error::Throttled {
                retry_after_ms: 20,
            }))
        }
        Request::Put(p) if p.value == b"unavailable" && stats.count("put") == 3 => {
            Action::Reply(Response::Error(proto::Error::unavailable("starting")))
        }
        Request::Put(p) if p.value == b"condition" => {
            Action::Reply(Response::Error(proto::Error::ConditionFailed {
                current_version: Some(3),
            }))
        }
        Request::Get(_) => Action::Reply(Response::Error(proto::Error::NotFound)),
        r => Action::Reply(echo(r)),
    });
    let addr = server.addr;
    run(move || async move {
        let client = Client::connect(config(addr)).await.unwrap();
        let start = std::time::Instant::now();
        assert_eq!(
            client
                .put("t1x", key(1), b"throttled".to_vec())
                .await
                .unwrap(),
            7
        );
        assert!(
            start.elapsed() >= Duration::from_millis(20),
            "waited the hint"
        );
        assert_eq!(
            client
                .put("t1x", key(1), b"unavailable".to_vec())
                .await
                .unwrap(),
            7
        );
        let e = client
            .put_if(
                "t1x",
                key(1),
                b"condition".to_vec(),
                Condition::IfVersion(2),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Server(proto::Error::ConditionFailed {
                    current_version: Some(3)
                })
            ),
            "{e}"
        );
        assert_eq!(
            client
                .get("t1x", key(1), Consistency::Eventual)
                .await
                .unwrap(),
            None
        );
    });
    assert_eq!(server.stats.count("put"), 5);
    assert_eq!(server.stats.count("get"), 1);
}

#[test]
fn a_frame_over_the_limit_is_refused_before_sending() {
    let server = serve(|r, _| Action::Reply(echo(r)));
    let addr = server.addr;
    run(move || async move {
        let client = Client::connect(config(addr)).await.unwrap();
        let value = vec![7u8; proto::limits::FRAME_PAYLOAD_BYTES_MAX];
        let e = client.put("t1x", key(1), value).await.unwrap_err();
        assert!(matches!(e, Error::FrameTooLarge { .. }), "{e}");
    });
    assert_eq!(server.stats.count("put"), 0);
}

#[test]
fn connect_fails_with_an_io_error_when_nothing_listens() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    run(move || async move {
        let e = Client::connect(config(addr))
            .await
            .err()
            .expect("no server");
        assert!(matches!(e, Error::Io(_)), "{e}");
    });
}

#[test]
fn the_blocking_client_reads_answers_and_errors() {
    let server = serve(|r, _| match r {
        Request::Get(g) if g.key.partition == b"missing" => {
            Action::Reply(Response::Error(proto::Error::NotFound))
        }
        r => Action::Reply(echo(r)),
    });
    let mut c =
        client::blocking::Client::connect(server.addr, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(c.put("t1x", key(1), b"v".to_vec()).unwrap(), 7);
    assert_eq!(
        c.get("t1x", key(4), Consistency::Strong)
            .unwrap()
            .unwrap()
            .value,
        b"k4"
    );
    assert_eq!(
        c.get("t1x", Key::simple("missing"), Consistency::Strong)
            .unwrap(),
        None
    );
    assert!(matches!(
        c.delete("t1x", key(1), Condition::None),
        Err(Error::Server(proto::Error::InvalidRequest { .. }))
    ));
}
