//! The write and read paths end to end on one simulated core.

mod common;

use common::Node;
use partition::{Command, WriteOutcome};
use proto::{Condition, Key};

fn put(pk: &str, sk: &str, v: &str, condition: Condition) -> Command {
    Command::Put {
        key: Key::new(pk, sk),
        value: v.as_bytes().to_vec(),
        condition,
    }
}

#[test]
fn write_then_read_then_restart() {
    let node = Node::new(1, 1);
    let r = node.replica(0);
    let out = node.block_on({
        let r = r.clone();
        async move { r.write(&put("a", "1", "x", Condition::None)).await }
    });
    let WriteOutcome { version, existed } = out.expect("write applies");
    assert_eq!(existed, None, "an unconditional put does not look");
    let item = node.block_on({
        let r = r.clone();
        async move { r.get(&Key::new("a", "1")).await }
    });
    let item = item.unwrap().expect("present");
    assert_eq!(item.value, b"x");
    assert_eq!(item.version, version);
    drop(r);
    let node = node.restart();
    let r = node.replica(0);
    let item = node.block_on(async move { r.get(&Key::new("a", "1")).await });
    assert_eq!(item.unwrap().unwrap().version, version);
}

#[test]
fn a_single_voter_stays_leader_across_ticks() {
    let node = Node::new(2, 1);
    let r = node.replica(0);
    for _ in 0..(partition::limits::ELECTION_TICKS * 5) {
        r.tick();
        node.advance(usize::MAX);
    }
    assert!(r.is_ready());
    let out = node.block_on({
        let r = r.clone();
        async move { r.write(&put("a", "", "x", Condition::None)).await }
    });
    assert!(out.is_ok());
    assert!(r.take_messages().is_empty(), "a single voter sends nothing");
}

#[test]
fn shutdown_drains_and_refuses_new_writes() {
    let node = Node::new(3, 1);
    let r = node.replica(0);
    let done = std::rc::Rc::new(std::cell::Cell::new(false));
    {
        let (r, done) = (r.clone(), done.clone());
        node.spawn(async move {
            r.write(&put("a", "", "x", Condition::None)).await.unwrap();
            done.set(true);
        });
    }
    node.exec.run_until_stalled();
    r.shutdown();
    node.advance(usize::MAX);
    assert!(done.get(), "the write in flight was answered");
    let refused = node.block_on({
        let r = r.clone();
        async move { r.write(&put("b", "", "y", Condition::None)).await }
    });
    assert!(matches!(refused, Err(proto::Error::Unavailable { .. })));
}
