//! `percore-perf`: the load generator's binary. Everything is in the `perf` library
//! (`perf::cli`), so that the command line is tested there.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    perf::cli::main()
}
