//! What the real-disk tests share.

use glommio::{LocalExecutorBuilder, Placement};

/// Runs `f` to completion on a fresh glommio executor with a small I/O memory pool (tests
/// run side by side; a large pool would exhaust locked memory for non-root users).
pub fn on_executor<T: Send + 'static>(f: impl AsyncFnOnce() -> T + Send + 'static) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move { f().await })
        .expect("executor starts")
        .join()
        .expect("executor finishes")
}
