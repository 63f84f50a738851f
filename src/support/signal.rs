//! The signals that stop a long-running command.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Take over SIGTERM and SIGINT (Ctrl-C) now, and resolve on the first to arrive. Call it first
/// thing, before anything is served: until the handlers are installed a SIGTERM kills the process
/// outright, skipping the clean stop (a health check could pass and the stop still find no
/// handler), and a signal that arrives between this call and the first poll of the future is kept.
/// Needs a tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        let signal = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal, "stopping");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A SIGTERM sent after the call and before the future is awaited neither kills the test
    /// process (the handler is already installed) nor is lost.
    #[tokio::test]
    async fn a_signal_before_the_first_poll_is_kept() {
        let stop = shutdown_signal();
        let pid = std::process::id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        tokio::time::timeout(Duration::from_secs(10), stop).await.expect("the SIGTERM is seen");
    }
}
