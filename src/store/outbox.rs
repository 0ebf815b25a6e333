//! The outbox's bounds and its depth, kept in memory (in total and per environment) and rebuilt
//! on open: what admit and replay check before queueing, what readiness and `/outbox` show.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{EventKey, Store, StoreError, now_ms, parse_outbox_entry};

/// Outbox entries [`Store::oldest_pending_age`] looks through for one with a record.
const OLDEST_LOOKAHEAD: usize = 64;

/// Outbox depth, kept in memory and rebuilt on open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxDepth {
    pub events: u64,
    pub bytes: u64,
}

impl Store {
    pub fn outbox_depth(&self) -> OutboxDepth {
        OutboxDepth {
            events: self.outbox_events.load(Ordering::SeqCst),
            bytes: self.outbox_bytes.load(Ordering::SeqCst),
        }
    }

    /// `OutboxFull` unless one more entry of `size` bytes for `key`'s environment fits the
    /// outbox bounds, which apply to each environment alone.
    pub(super) fn room_for(&self, key: &EventKey, size: u64) -> Result<(), StoreError> {
        let depth = self.depth_of(key.environment());
        if depth.events >= self.max_outbox_events
            || depth.bytes.saturating_add(size) > self.max_outbox_bytes
        {
            return Err(StoreError::OutboxFull {
                events: depth.events,
                bytes: depth.bytes,
            });
        }
        Ok(())
    }

    /// True when a new event of `environment` would be refused.
    pub(crate) fn outbox_full(&self, environment: &str) -> bool {
        let depth = self.depth_of(environment.as_bytes());
        depth.events >= self.max_outbox_events || depth.bytes >= self.max_outbox_bytes
    }

    pub(crate) fn outbox_depth_of(&self, environment: &str) -> OutboxDepth {
        self.depth_of(environment.as_bytes())
    }

    /// Counts an outbox entry of `size` bytes in, in total and for its environment. Counted
    /// before its commit (see `admit`), taken back with [`Store::count_out`] if nothing was
    /// written.
    pub(super) fn count_in(&self, key: &EventKey, size: u64) {
        self.count(key, size, true);
    }

    /// Takes an outbox entry of `size` bytes off the counters, in total and for its environment.
    pub(super) fn count_out(&self, key: &EventKey, size: u64) {
        self.count(key, size, false);
    }

    fn count(&self, key: &EventKey, size: u64, entering: bool) {
        if entering {
            self.outbox_events.fetch_add(1, Ordering::SeqCst);
            self.outbox_bytes.fetch_add(size, Ordering::SeqCst);
        } else {
            self.outbox_events.fetch_sub(1, Ordering::SeqCst);
            self.outbox_bytes.fetch_sub(size, Ordering::SeqCst);
        }
        let mut by_env = self
            .depth_by_env
            .lock()
            .expect("no panics while holding the lock");
        let depth = by_env
            .entry(key.environment().to_vec())
            .or_insert(OutboxDepth {
                events: 0,
                bytes: 0,
            });
        if entering {
            depth.events += 1;
            depth.bytes += size;
        } else {
            // An environment's share never goes below zero, whatever order counts arrive in.
            depth.events = depth.events.saturating_sub(1);
            depth.bytes = depth.bytes.saturating_sub(size);
        }
    }

    /// How long the oldest outbox event has waited; `None` when the outbox is empty.
    pub(crate) fn oldest_pending_age(&self) -> Option<Duration> {
        // The first entries may belong to admits still writing their record: look a little
        // further rather than report an empty outbox.
        let oldest = self
            .outbox
            .iter()
            .take(OLDEST_LOOKAHEAD)
            .find_map(|entry| {
                let (k, v) = entry.ok()?;
                let (_, _, key) = parse_outbox_entry(&k, &v).ok()?;
                self.record(&key).ok()?
            })?;
        Some(Duration::from_millis(
            now_ms().saturating_sub(oldest.received_at_ms),
        ))
    }

    /// Runs `write`, which puts `key` into the outbox under `seq` when `queued` says so, with
    /// the accounting around it: counted in first (once committed, a confirm may subtract it
    /// at once, and the counters must never go below zero), taken back when nothing was
    /// queued, and the publisher woken (and pulled back to `seq`, which may be behind its
    /// cursor: sequences are drawn before commit) when it was.
    pub(super) fn enqueue<T>(
        &self,
        key: &EventKey,
        size: u64,
        seq: u64,
        write: impl FnOnce() -> Result<T, StoreError>,
        queued: impl Fn(&T) -> bool,
    ) -> Result<T, StoreError> {
        self.count_in(key, size);
        let written = write();
        if written.as_ref().is_ok_and(&queued) {
            self.lowest_admitted.fetch_min(seq, Ordering::SeqCst);
            self.outbox_grew.notify_one();
        } else {
            self.count_out(key, size);
        }
        written
    }
}
