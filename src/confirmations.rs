//! Who is waiting for the broker to confirm which event.
//!
//! Owns: a map from event key to the requests waiting on it. `ingest` registers interest *before*
//! the event can be published; the publisher calls [`Confirmations::confirmed`] after it has
//! marked the event published in the store. Together these make a missed wake-up impossible: a
//! confirm either finds the waiter registered or happened before the waiter read the record.
//!
//! Bounded: one entry per waiting request, removed when the request stops waiting (confirm,
//! timeout or a dropped connection); requests are bounded by `server.max_connections`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::store::EventKey;

#[derive(Debug, Default)]
pub struct Confirmations {
    waiters: Mutex<HashMap<EventKey, Vec<oneshot::Sender<()>>>>,
}

/// A registered interest; resolves when the event is confirmed. Unregisters on drop.
#[derive(Debug)]
pub struct ConfirmWatch {
    registry: Arc<Confirmations>,
    key: EventKey,
    rx: oneshot::Receiver<()>,
}

impl Confirmations {
    pub fn watch(self: &Arc<Self>, key: &EventKey) -> ConfirmWatch {
        let (tx, rx) = oneshot::channel();
        self.lock().entry(key.clone()).or_default().push(tx);
        ConfirmWatch {
            registry: Arc::clone(self),
            key: key.clone(),
            rx,
        }
    }

    /// Wakes everyone waiting for `key`.
    pub fn confirmed(&self, key: &EventKey) {
        if let Some(waiters) = self.lock().remove(key) {
            for waiter in waiters {
                // The receiver may have given up already; nothing to do then.
                let _ = waiter.send(());
            }
        }
    }

    /// Requests currently waiting, for tests.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EventKey, Vec<oneshot::Sender<()>>>> {
        self.waiters
            .lock()
            .expect("no panics while holding the lock")
    }
}

impl ConfirmWatch {
    /// True when the confirm has already arrived.
    pub fn is_confirmed(&mut self) -> bool {
        self.rx.try_recv().is_ok()
    }

    /// Resolves once the event is confirmed.
    pub async fn confirmed(&mut self) {
        // The sender is only dropped by `confirmed()` after sending, or by our own Drop.
        let _ = (&mut self.rx).await;
    }
}

impl Drop for ConfirmWatch {
    fn drop(&mut self) {
        // Close our end first so our own sender counts as closed below.
        self.rx.close();
        let mut waiters = self.registry.lock();
        if let Some(list) = waiters.get_mut(&self.key) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                waiters.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventId;

    #[tokio::test]
    async fn a_confirm_wakes_every_waiter_and_drops_clean_up() {
        let registry = Arc::new(Confirmations::default());
        let key = EventKey::new("live", &EventId::parse("e").expect("id"));
        let mut a = registry.watch(&key);
        let mut b = registry.watch(&key);
        let c = registry.watch(&key);
        drop(c);
        assert_eq!(registry.waiting(), 2);
        registry.confirmed(&key);
        a.confirmed().await;
        b.confirmed().await;
        drop((a, b));
        assert_eq!(registry.waiting(), 0);
    }
}
