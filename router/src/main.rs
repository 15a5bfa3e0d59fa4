//! `percore-router`: see the `router` crate.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    std::process::exit(router::process::run(std::env::args_os().collect()));
}
