//! `cargo xtask bench wal`: not written yet.
fn main() {
    eprintln!("bench wal: not written yet");
    std::process::exit(1);
}
