//! `percore-node`: see the `shard_node` crate and `shard-node/DESIGN.md`.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    std::process::exit(shard_node::node::run(std::env::args_os().collect()));
}
