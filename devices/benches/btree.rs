//! `cargo xtask bench btree`: not written yet.
fn main() {
    eprintln!("bench btree: not written yet");
    std::process::exit(1);
}
