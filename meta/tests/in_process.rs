//! `meta::start`: the service on a thread of the test process (what other crates' tests
//! use), and one service per data directory.

use std::time::Duration;

#[test]
fn started_in_process_it_serves_stops_and_keeps_its_data_dir_to_itself() {
    let dir = tempfile::Builder::new()
        .prefix("percore-meta-")
        .tempdir()
        .unwrap();
    let config = meta::config::Config {
        data_dir: dir.path().join("meta"),
        listen: "127.0.0.1:0".parse().unwrap(),
        node_timeout_ms: 3000,
        cpu: None,
        log_level: "info".into(),
        log_file: None,
    };
    let running = meta::start(config.clone()).expect("starts");
    assert_ne!(running.addr().port(), 0);
    let mut c =
        client::blocking::Client::connect(running.addr(), Some(Duration::from_secs(10))).unwrap();
    assert!(c.list_tables(None, 0).unwrap().names.is_empty());

    // A second service on the same data directory is refused, naming the lock.
    let e = meta::start(config.clone()).err().expect("refused");
    assert!(e.contains("locked"), "{e}");

    drop(c);
    running.stop().expect("a clean stop");
    // Once stopped, the directory is free again.
    meta::start(config).expect("starts again").stop().unwrap();
}
