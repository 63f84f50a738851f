//! One shutdown signal for a service and every task it starts.
//!
//! [`Shutdown`] is the sending side, kept by whoever decides to stop (a `run` function, a handle's
//! `shutdown`); [`ShutdownSignal`] is the receiving side, cloned into each task. A signal is
//! level-triggered: a task that subscribes or checks after the trigger still sees it. Dropping the
//! [`Shutdown`] counts as a trigger too, so a task can never wait for a sender that is gone.

use tokio::sync::watch;

/// The sending side of a shutdown signal.
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

/// The receiving side: cheap to clone, one per task.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Self { tx: watch::Sender::new(false) }
    }

    /// A receiver for one task.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal { rx: self.tx.subscribe() }
    }

    /// Tell every task to stop. Idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownSignal {
    /// Resolve once shutdown is triggered (or its [`Shutdown`] dropped). Owned and `'static`, so it
    /// can be handed to a task or to `with_graceful_shutdown` as its shutdown future.
    pub async fn wait(mut self) {
        let _ = self.rx.wait_for(|stopped| *stopped).await;
    }

    /// Like [`ShutdownSignal::wait`] without giving up the signal: for a `select!` in a loop.
    pub async fn stopped(&self) {
        self.clone().wait().await;
    }

    /// Whether shutdown was triggered (or its [`Shutdown`] dropped), without waiting.
    pub fn is_stopped(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_signal_sees_the_trigger_even_when_late() {
        let shutdown = Shutdown::new();
        let early = shutdown.signal();
        assert!(!early.is_stopped());
        let task = tokio::spawn(early.clone().wait());
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        assert!(early.is_stopped() && shutdown.is_triggered());
        let late = shutdown.signal();
        tokio::time::timeout(Duration::from_secs(5), late.stopped()).await.unwrap();
    }

    #[tokio::test]
    async fn dropping_the_sender_stops_too() {
        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        drop(shutdown);
        assert!(signal.is_stopped());
        tokio::time::timeout(Duration::from_secs(5), signal.wait()).await.unwrap();
    }
}
