//! Stop signals: the first SIGINT/SIGTERM asks the worker to stop gracefully, a second
//! one to stop now.

use std::sync::Arc;

use tokio::sync::watch;

/// How far a shutdown has gone: 0 running, 1 graceful, 2 immediate.
#[derive(Clone)]
pub struct Shutdown {
    sender: Arc<watch::Sender<u8>>,
    receiver: watch::Receiver<u8>,
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        let (sender, receiver) = watch::channel(0);
        Shutdown {
            sender: Arc::new(sender),
            receiver,
        }
    }
}

impl Shutdown {
    /// Turns SIGINT and SIGTERM into shutdown requests (call inside a tokio runtime).
    pub fn listen_for_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = interrupt.recv() => "SIGINT",
                    _ = terminate.recv() => "SIGTERM",
                };
                if me.level() == 0 {
                    tracing::info!(
                        signal = name,
                        "stopping: no new jobs; the running job may finish within the grace period (signal again to stop now)"
                    );
                } else {
                    tracing::warn!(signal = name, "stopping now: the running job is released");
                }
                me.trigger();
            }
        });
        Ok(())
    }

    /// Asks for the next shutdown level.
    pub fn trigger(&self) {
        self.sender
            .send_modify(|level| *level = (*level + 1).min(2));
    }

    /// The current level.
    pub fn level(&self) -> u8 {
        *self.receiver.borrow()
    }

    /// Waits until a shutdown at `level` or beyond was asked for.
    pub async fn reached(&self, level: u8) {
        let mut receiver = self.receiver.clone();
        let _ = receiver.wait_for(|l| *l >= level).await;
    }
}
