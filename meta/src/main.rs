//! `percore-meta`: the metadata service; see the `meta` crate.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    std::process::exit(meta::run(std::env::args_os().collect()));
}
