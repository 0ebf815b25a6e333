//! What the rest of the relay may know about the broker connection: up or not, since when it
//! has been away (confirmed mode fails fast past a bound), and the latest failure.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// What the rest of the relay may know about the broker connection.
#[derive(Debug)]
pub struct BrokerStatus {
    connected: AtomicBool,
    /// Index in `amqp.urls` of the node connected to, or of the last one tried.
    node: AtomicUsize,
    /// Since when the broker has been away; the relay's start counts as the first such instant.
    down_since: std::sync::Mutex<Option<Instant>>,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Default for BrokerStatus {
    fn default() -> Self {
        Self {
            connected: AtomicBool::new(false),
            node: AtomicUsize::new(0),
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

    /// The index in `amqp.urls` of the node the relay is connected to; `None` while not.
    pub fn node(&self) -> Option<usize> {
        self.is_connected()
            .then(|| self.node.load(Ordering::SeqCst))
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

    /// The node last connected to (or tried), connected or not.
    pub(super) fn last_node(&self) -> usize {
        self.node.load(Ordering::SeqCst)
    }

    pub(super) fn set(&self, connected: bool, node: usize, metrics: &Metrics) {
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
        self.node.store(node, Ordering::SeqCst);
        self.connected.store(connected, Ordering::SeqCst);
        metrics.amqp_connected.set(i64::from(connected));
        metrics
            .amqp_node_connected
            .with_label_values(&[&node.to_string()])
            .set(i64::from(connected));
    }
}
