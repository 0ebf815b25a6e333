//! What the rest of the relay may know about the broker connection: up or not, since when it
//! has been away (confirmed mode fails fast past a bound), and the latest failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// What the rest of the relay may know about the broker connection.
#[derive(Debug)]
pub struct BrokerStatus {
    connected: AtomicBool,
    /// Since when the broker has been away; the relay's start counts as the first such instant.
    down_since: std::sync::Mutex<Option<Instant>>,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Default for BrokerStatus {
    fn default() -> Self {
        Self {
            connected: AtomicBool::new(false),
            down_since: std::sync::Mutex::new(Some(Instant::now())),
            last_error: std::sync::Mutex::new(None),
        }
    }
}

impl BrokerStatus {
    /// True when the connection and the confirm channel are up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// How long the broker has been away; `None` while connected.
    pub fn down_for(&self) -> Option<Duration> {
        self.down_since
            .lock()
            .expect("no panics while holding the lock")
            .map(|since| since.elapsed())
    }

    /// The latest publish or connection failure, for `/outbox`; cleared by nothing, so an
    /// operator sees the last thing that went wrong even after recovery.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .expect("no panics while holding the lock")
            .clone()
    }

    pub(super) fn record_error(&self, error: String) {
        *self
            .last_error
            .lock()
            .expect("no panics while holding the lock") = Some(error);
    }

    pub(super) fn set(&self, connected: bool, metrics: &Metrics) {
        {
            let mut since = self
                .down_since
                .lock()
                .expect("no panics while holding the lock");
            match (connected, *since) {
                (true, _) => *since = None,
                // Only the transition starts the clock: failed reconnects do not reset it.
                (false, None) => *since = Some(Instant::now()),
                (false, Some(_)) => {}
            }
        }
        self.connected.store(connected, Ordering::SeqCst);
        metrics.amqp_connected.set(i64::from(connected));
    }
}
