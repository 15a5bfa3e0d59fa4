//! The crash test: writes under load from several connections, SIGKILL mid-load, restart on
//! the same data directory, and check that every acknowledged write survived and that
//! nothing that was never written appeared. Several rounds, each killing at another point.
//!
//! The load: writer tasks on the async client (pipelined connections to the shared port and
//! to each core's own port), each owning a few keys and writing them one after another,
//! so that each key's writes are ordered. Every value is unique (round, writer, sequence),
//! and about one write in eight is a delete. For every key the test knows the last
//! acknowledged state and, if a write was in flight when the node died, that write's state
//! (sent, outcome unknown). After the restart each key must hold its last acknowledged
//! state, or the in-flight one; anything else is a lost write or a phantom. A scan checks
//! that no key the test never wrote exists. The state read back becomes the known state
//! for the next round.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::proto::{Condition, Consistency, Key, Scan};
use client::{create_table_request, Backoff, Client, ClientConfig};
use common::{temp_data_dir, Node, NodeOptions};
use glommio::{LocalExecutorBuilder, Placement};

const TABLE: &str = "crash";

/// Milliseconds of load, after the first acknowledgements of a round, before the SIGKILL:
/// kills right after the load starts, some later, and two after one and two checkpoint
/// intervals (1 s by default), so that recovery replays the WAL over checkpointed trees and
/// a WAL released below a checkpoint.
const KILL_AFTER_MS: [u64; 5] = [30, 400, 2, 1300, 2600];

/// Writer tasks; each owns `KEYS_PER_WRITER` keys.
const WRITERS: usize = 48;
const KEYS_PER_WRITER: usize = 5;

/// Connections of the load's client (spread over the shared port and the core ports).
const CONNECTIONS: usize = 4;

/// Acknowledgements a round waits for before it starts counting down to the kill, so that
/// the kill lands under load.
const ACKS_BEFORE_COUNTDOWN: usize = 100;

/// What a key holds: a value, or nothing (never written, or deleted).
type State = Option<Vec<u8>>;

/// One key's writes in one round.
#[derive(Debug, Default, Clone)]
struct KeyRound {
    /// The state of the last acknowledged write and its version.
    acked: Option<(State, u64)>,
    /// The state of the write in flight when the node died (sent, never acknowledged).
    in_doubt: Option<State>,
}

fn key(writer: usize, k: usize) -> Key {
    Key::simple(format!("w{writer:02}-k{k}"))
}

/// Runs the load until `stop` (or until the node dies under it); returns each key's round.
fn load(
    addrs: Vec<SocketAddr>,
    round: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> BTreeMap<Key, KeyRound> {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let client = Client::connect(ClientConfig {
                addrs,
                connections: CONNECTIONS,
                request_timeout: Duration::from_secs(10),
                // The client retries only what cannot apply a write twice (server errors
                // that did nothing, requests never sent): a plain put or delete whose
                // outcome is unknown comes back as an error, which this test needs.
                max_attempts: 3,
                backoff: Backoff::default(),
            })
            .await
            .expect("connect the load");
            let tasks: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let (client, stop, acks) = (client.clone(), stop.clone(), acks.clone());
                    glommio::spawn_local(async move {
                        let mut rounds: Vec<KeyRound> = vec![KeyRound::default(); KEYS_PER_WRITER];
                        let mut n = 0usize;
                        while !stop.load(Ordering::Relaxed) {
                            let k = n % KEYS_PER_WRITER;
                            // Unique across rounds, writers and writes: a value seen after the
                            // crash names the write that made it.
                            let value = format!("r{round}-w{w}-n{n}").into_bytes();
                            let delete = (n * 7 + w) % 8 == 3;
                            let state: State = if delete { None } else { Some(value.clone()) };
                            rounds[k].in_doubt = Some(state.clone());
                            let result = if delete {
                                client
                                    .delete(TABLE, key(w, k), Condition::None)
                                    .await
                                    .map(|d| d.version)
                            } else {
                                client.put(TABLE, key(w, k), value).await
                            };
                            match result {
                                Ok(version) => {
                                    rounds[k] = KeyRound {
                                        acked: Some((state, version)),
                                        in_doubt: None,
                                    };
                                    acks.fetch_add(1, Ordering::Relaxed);
                                }
                                // The node died (or refused): this write's outcome is
                                // unknown, and this writer is done for the round.
                                Err(_) => break,
                            }
                            n += 1;
                        }
                        (0..KEYS_PER_WRITER)
                            .map(|k| (key(w, k), rounds[k].clone()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all = BTreeMap::new();
            for t in tasks {
                all.extend(t.await);
            }
            all
        })
        .expect("start the load's executor")
        .join()
        .expect("the load's executor")
}

/// Reads every key the test writes, and scans the table for keys it never wrote.
fn read_back(node: &Node) -> BTreeMap<Key, Option<(Vec<u8>, u64)>> {
    let mut c = node.client();
    let all_keys: Vec<Key> = (0..WRITERS)
        .flat_map(|w| (0..KEYS_PER_WRITER).map(move |k| key(w, k)))
        .collect();
    let mut found = BTreeMap::new();
    for k in &all_keys {
        let item = c
            .get(TABLE, k.clone(), Consistency::Strong)
            .unwrap_or_else(|e| panic!("reading {k:?} after the restart: {e}"));
        found.insert(k.clone(), item.map(|i| (i.value, i.version)));
    }
    let known: BTreeSet<&Key> = all_keys.iter().collect();
    let scanned = c
        .scan_all(Scan {
            table: TABLE.into(),
            limit: 0,
            resume: None,
            consistency: Consistency::Strong,
        })
        .expect("scan after the restart");
    for item in &scanned {
        assert!(
            known.contains(&item.key),
            "a key that was never written appeared: {:?} = {:?}",
            item.key,
            String::from_utf8_lossy(&item.value)
        );
        assert_eq!(
            found.get(&item.key).cloned().flatten(),
            Some((item.value.clone(), item.version)),
            "scan and get disagree on {:?}",
            item.key
        );
    }
    assert_eq!(
        scanned.len(),
        found.values().filter(|v| v.is_some()).count(),
        "the scan and the gets see different numbers of items"
    );
    found
}

fn show(state: &State) -> String {
    match state {
        None => "<absent>".into(),
        Some(v) => String::from_utf8_lossy(v).into_owned(),
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_under_load() {
    let started = Instant::now();
    let (_dir, data) = temp_data_dir();
    let mut node = Node::start(&data, NodeOptions::default());
    node.client()
        .create_table(create_table_request(TABLE, "pk", None, 0))
        .expect("create the table");

    // What each key holds, as far as the test knows (before the first round: nothing).
    let mut known: BTreeMap<Key, (State, Option<u64>)> = BTreeMap::new();
    let mut total_acks = 0;
    let mut total_in_doubt = 0;
    // In-flight writes found applied after the restart (their ack was lost with the node).
    let mut total_in_doubt_applied = 0;
    for (round, &kill_after_ms) in KILL_AFTER_MS.iter().enumerate() {
        let mut addrs = vec![node.addr()];
        addrs.extend((0..node.ports.cores.len()).map(|i| node.core_addr(i)));
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let round_started = Instant::now();
        let loader = {
            let (stop, acks) = (stop.clone(), acks.clone());
            std::thread::spawn(move || load(addrs, round, stop, acks))
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while acks.load(Ordering::Relaxed) < ACKS_BEFORE_COUNTDOWN {
            assert!(
                Instant::now() < deadline && !loader.is_finished(),
                "round {round}: the load made no progress ({} acks)",
                acks.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let loaded = round_started.elapsed();
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        node.kill();
        stop.store(true, Ordering::Relaxed);
        let rounds = loader.join().expect("the load thread");
        let round_acks = acks.load(Ordering::Relaxed);
        total_acks += round_acks;
        let joined = round_started.elapsed();

        node.restart();
        let restarted = round_started.elapsed();
        let found = read_back(&node);
        let verified = round_started.elapsed();

        let mut failures = Vec::new();
        for (k, r) in &rounds {
            let (before, before_version) = known.get(k).cloned().unwrap_or((None, None));
            // The last acknowledged state (this round's, or what the last round left).
            let (acked_state, acked_version) = match &r.acked {
                Some((s, v)) => (s.clone(), Some(*v)),
                None => (before, before_version),
            };
            let got = found[k].clone();
            let got_state: State = got.as_ref().map(|(v, _)| v.clone());
            let allowed_in_doubt = r.in_doubt.as_ref() == Some(&got_state);
            if r.in_doubt.is_some() {
                total_in_doubt += 1;
            }
            if got_state == acked_state {
                // The acknowledged write itself: same version (a delete leaves none).
                if let (Some((_, v)), Some(av)) = (&got, acked_version) {
                    if acked_state.is_some() && *v != av {
                        failures.push(format!(
                            "{k:?}: holds the acknowledged value at version {v}, acknowledged \
                             at {av}"
                        ));
                    }
                }
            } else if allowed_in_doubt {
                total_in_doubt_applied += 1;
                // The write in flight made it; its ack was lost. Later than the acked one.
                if let (Some((_, v)), Some(av)) = (&got, acked_version) {
                    if *v <= av {
                        failures.push(format!(
                            "{k:?}: the in-flight write's version {v} is not above the \
                             acknowledged {av}"
                        ));
                    }
                }
            } else {
                failures.push(format!(
                    "{k:?}: holds {} (version {:?}); acknowledged {}{}",
                    show(&got_state),
                    got.as_ref().map(|(_, v)| *v),
                    show(&acked_state),
                    match &r.in_doubt {
                        Some(s) => format!(", in flight {}", show(s)),
                        None => String::new(),
                    }
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "round {round} (killed {kill_after_ms} ms into the load, {round_acks} acks): {} \
             keys wrong:\n{}",
            failures.len(),
            failures.join("\n")
        );
        // What was read back is now the truth.
        known = found
            .into_iter()
            .map(|(k, v)| match v {
                Some((value, version)) => (k, (Some(value), Some(version))),
                None => (k, (None, None)),
            })
            .collect();
        eprintln!(
            "round {round}: killed {kill_after_ms} ms into the load after {round_acks} acks; \
             every acknowledged write recovered ({:.1} s so far; first acks at {:?}, load \
             stopped at {:?}, ready again at {:?}, verified at {:?})",
            started.elapsed().as_secs_f64(),
            loaded,
            joined,
            restarted,
            verified
        );
    }
    assert!(total_acks >= KILL_AFTER_MS.len() * ACKS_BEFORE_COUNTDOWN);
    eprintln!(
        "{total_acks} acknowledged writes over {} kills; {total_in_doubt} in flight at a kill, \
         {total_in_doubt_applied} of them found applied; in {:.1} s",
        KILL_AFTER_MS.len(),
        started.elapsed().as_secs_f64()
    );
    let status = node.stop().expect("the node stops on SIGTERM");
    assert!(status.success(), "{status}");
}
