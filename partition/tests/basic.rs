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
    assert!(!existed);
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
