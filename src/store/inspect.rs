//! Inspection, replay and retention over the store.
//!
//! Owns: reading records newest first (the `by_seq` index), queueing a stored event again, and
//! pruning settled bodies and old records through the `settled` index (by settling time).
//! Guarantees: a replay and a prune of the same event are serialised by sled transactions (a
//! replay never queues an event whose body is gone); only settled (published or dropped) events
//! are pruned; every walk is bounded per call, so the admin API and the pruner stay responsive
//! at millions of records.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use tokio_util::sync::CancellationToken;

use super::{
    EventKey, EventRecord, EventState, Store, StoreError, chunk_count, chunk_key, committed,
    decode_record, encode_record, now_ms, outbox_value, parse_settled_key, settled_key,
};

/// At most this many records are read for one listing, matching or not, so a filter that
/// matches nothing cannot walk millions of records; the caller continues from `next_before`.
const MAX_SCANNED_PER_LIST: usize = 50_000;
/// Index entries read at once by the pruner; it loops until caught up.
const PRUNE_BATCH: usize = 1_000;
/// Bounds one pass (a few seconds of work), so shutdown never waits long; at one pass a minute
/// that is over 16,000 events a second, far above what the relay accepts.
const PRUNE_MAX_PER_PASS: usize = 1_000_000;
/// `meta` key: the `settled` index was built for the records written before it existed.
const SETTLED_INDEXED: &[u8] = b"settled_indexed";
/// How far behind the wall clock the body pass's saved cursor stays (see `prune`).
const PRUNE_CURSOR_MARGIN: Duration = Duration::from_secs(60);
/// `meta` key: where the body pass resumes.
const PRUNE_CURSOR: &[u8] = b"prune_cursor";

/// True when `record` is the settled event stored under `seq`, settled at or before `cutoff`
/// (a replayed event settled again later is judged by its latest settling).
fn settled_before(record: &EventRecord, seq: u64, cutoff: u64) -> bool {
    let settled_at = match record.state {
        EventState::Published => record.published_at_ms,
        EventState::Dropped => record.dropped_at_ms,
        EventState::Pending | EventState::Parked => return false,
    };
    record.seq == seq && settled_at.is_none_or(|at| at <= cutoff)
}

/// The key after `key` in byte order.
fn next_key(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// Which records a listing wants.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<EventState>,
    pub event_type: Option<String>,
    /// Only records received at or after this (unix ms).
    pub since_ms: Option<u64>,
}

/// One page of records, newest first.
#[derive(Debug)]
pub struct Listing {
    pub events: Vec<EventRecord>,
    /// Pass as `before` to read the next page; `None` at the end.
    pub next_before: Option<u64>,
}

/// What a replay request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Queued again; the publisher sends it with the same `message_id`.
    Queued,
    /// Still pending: it will be published anyway.
    AlreadyPending,
    NotFound,
    /// Its body was pruned after `retain_bodies`.
    BodyPruned,
    /// The record cannot be read; an operator must look (it is not "not found").
    Corrupt,
}

/// How long things are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub bodies: Duration,
    /// `None` keeps records (the dedupe memory) forever.
    pub events: Option<Duration>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub bodies: u64,
    pub events: u64,
}

/// How much one pruning pass may do; [`Store::prune`] uses the defaults.
#[derive(Debug, Clone, Copy)]
pub struct PruneLimits {
    /// Index entries read at once.
    pub batch: usize,
    /// The body half stops after this many entries, the record half after twice as many.
    pub max_per_pass: usize,
}

impl Default for PruneLimits {
    fn default() -> Self {
        Self {
            batch: PRUNE_BATCH,
            max_per_pass: PRUNE_MAX_PER_PASS,
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrunePass {
    pub pruned: Pruned,
    /// Index entries read, both halves.
    pub looked: usize,
    /// The body half stopped at `max_per_pass` with more due: the next pass continues.
    pub stopped_at_limit: bool,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Store {
    pub fn events_stored(&self) -> u64 {
        self.events_stored.load(Ordering::SeqCst)
    }

    /// Records newest first, before sequence `before` (exclusive), matching `filter`.
    pub fn list(
        &self,
        filter: &ListFilter,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Listing, StoreError> {
        let end = before.unwrap_or(u64::MAX);
        let mut listing = Listing {
            events: Vec::new(),
            next_before: None,
        };
        for (scanned, entry) in self.by_seq.range(..end.to_be_bytes()).rev().enumerate() {
            let (k, key) = entry?;
            let seq = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("index key".to_owned()))?,
            );
            if listing.events.len() == limit || scanned == MAX_SCANNED_PER_LIST {
                listing.next_before = Some(seq + 1);
                break;
            }
            let Some(raw) = self.events.get(&key)? else {
                continue;
            };
            let record = decode_record(&raw)?;
            if record.seq != seq {
                continue; // an index entry left by a record pruned and admitted again
            }
            if filter
                .since_ms
                .is_some_and(|since| record.received_at_ms < since)
            {
                break; // arrival order: everything further is older still
            }
            let state_ok = filter.state.is_none_or(|s| s == record.state);
            let type_ok = filter
                .event_type
                .as_deref()
                .is_none_or(|t| t == record.event_type);
            if state_ok && type_ok {
                listing.events.push(record);
            }
        }
        Ok(listing)
    }

    /// Queues a stored event for publishing again, bypassing dedupe on purpose; durable when
    /// it returns. An operator's replay is a new entry like any admit: `OutboxFull` past the
    /// outbox bounds.
    pub async fn replay(&self, key: &EventKey) -> Result<Replay, StoreError> {
        self.queue_again(key, true).await
    }

    /// [`Store::replay`] for the publisher, when a return shows that an event it marked
    /// published never arrived: beyond the bounds if need be, since refusing would lose it.
    pub async fn requeue(&self, key: &EventKey) -> Result<Replay, StoreError> {
        self.queue_again(key, false).await
    }

    async fn queue_again(&self, key: &EventKey, bounded: bool) -> Result<Replay, StoreError> {
        let outbox_seq = self.db.generate_id()?;
        // A record's size never changes, so it can be read before the transaction and counted
        // first (see admit): once committed, a confirm may subtract it at once.
        let Some(size) = self.record(key)?.map(|r| r.size) else {
            return Ok(Replay::NotFound);
        };
        if bounded {
            self.room_for(key, size)?;
        }
        let queue = || {
            committed(
                (&self.events, &self.outbox, &self.bodies, &self.parked).transaction(
                    |(events, outbox, bodies, parked)| {
                        let Some(raw) = events.get(&key.0)? else {
                            return Ok(Replay::NotFound);
                        };
                        let Ok(mut record) = decode_record(&raw) else {
                            return Ok(Replay::Corrupt);
                        };
                        if record.state == EventState::Pending {
                            return Ok(Replay::AlreadyPending);
                        }
                        if record.size > 0 && bodies.get(chunk_key(record.seq, 0))?.is_none() {
                            return Ok(Replay::BodyPruned);
                        }
                        record.state = EventState::Pending;
                        record.published_at_ms = None;
                        record.queued_seq = Some(outbox_seq);
                        record.parked_reason = None;
                        events.insert(key.0.as_slice(), encode_record(&record))?;
                        outbox.insert(&outbox_seq.to_be_bytes(), outbox_value(record.size, key))?;
                        parked.remove(key.0.as_slice())?;
                        Ok::<_, ConflictableTransactionError<()>>(Replay::Queued)
                    },
                ),
            )
        };
        let replay = self.enqueue(key, size, outbox_seq, queue, |r| *r == Replay::Queued)?;
        if replay == Replay::Queued {
            self.wait_durable().await?;
        }
        Ok(replay)
    }

    /// One pruning pass, until it has caught up: bodies of events settled (published or
    /// dropped) longer ago than `retention.bodies`, then (when set) records settled longer ago
    /// than `retention.events`. Walks the `settled` index, oldest first, so pending events
    /// never stand in its way and each entry is looked at about once: the pass keeps up with
    /// any rate the relay accepts. Bounded per batch; a pass stops after [`PRUNE_MAX_PER_PASS`]
    /// and the next one continues.
    pub fn prune(&self, now: u64, retention: Retention) -> Result<Pruned, StoreError> {
        Ok(self
            .prune_pass(now, retention, PruneLimits::default())?
            .pruned)
    }

    /// [`Store::prune`] with its bounds given, reporting how much of the index it read: what
    /// a test needs to show that passes resume where the last one stopped.
    pub fn prune_pass(
        &self,
        now: u64,
        retention: Retention,
        limits: PruneLimits,
    ) -> Result<PrunePass, StoreError> {
        // An empty batch would read nothing and never reach the per-pass bound.
        let limits = PruneLimits {
            batch: limits.batch.max(1),
            ..limits
        };
        let mut pass = PrunePass::default();
        let body_cutoff = now.saturating_sub(ms(retention.bodies));
        let record_cutoff = retention.events.map(|keep| now.saturating_sub(ms(keep)));
        // Records go with their bodies when their own retention is shorter.
        let body_cutoff = record_cutoff.map_or(body_cutoff, |r| body_cutoff.max(r));
        self.prune_bodies(now, body_cutoff, limits, &mut pass)?;
        if let Some(cutoff) = record_cutoff {
            loop {
                let batch: Vec<_> = self
                    .settled
                    .range(..=settled_key(cutoff, u64::MAX))
                    .take(limits.batch)
                    .collect::<Result<_, _>>()?;
                for (index_key, key) in &batch {
                    let (_, seq) = parse_settled_key(index_key)?;
                    if self.prune_record(key, seq, cutoff)? {
                        pass.pruned.events += 1;
                    }
                    self.settled.remove(index_key)?;
                }
                pass.looked += batch.len();
                if batch.len() < limits.batch || pass.looked >= 2 * limits.max_per_pass {
                    break;
                }
            }
        }
        Ok(pass)
    }

    /// The body half of a pass. Entries stay after it (the record pass needs them, and
    /// `retain_events` may be set at a later start), so it resumes from a saved cursor. The
    /// cursor stays [`PRUNE_CURSOR_MARGIN`] behind `now`: an entry written in the same
    /// millisecond as one already visited, or under a clock that stepped back by less than the
    /// margin, sorts below what was visited and must still be seen. With `retain_bodies` at
    /// least the margin the cursor is never held back; with a shorter one each pass reads the
    /// last margin's entries again.
    fn prune_bodies(
        &self,
        now: u64,
        body_cutoff: u64,
        limits: PruneLimits,
        pass: &mut PrunePass,
    ) -> Result<(), StoreError> {
        let mut from = self.prune_cursor()?;
        let cursor_limit = settled_key(now.saturating_sub(ms(PRUNE_CURSOR_MARGIN)), 0).to_vec();
        loop {
            let batch: Vec<_> = self
                .settled
                .range(from.clone()..=settled_key(body_cutoff, u64::MAX).to_vec())
                .take(limits.batch)
                .collect::<Result<_, _>>()?;
            for (index_key, key) in &batch {
                let (_, seq) = parse_settled_key(index_key)?;
                if self.prune_body(key, seq, body_cutoff)? {
                    pass.pruned.bodies += 1;
                }
                from = next_key(index_key);
            }
            pass.looked += batch.len();
            if !batch.is_empty() {
                let keep = from.as_slice().min(cursor_limit.as_slice());
                self.meta.insert(PRUNE_CURSOR, keep)?;
            }
            if batch.len() < limits.batch || pass.looked >= limits.max_per_pass {
                pass.stopped_at_limit = batch.len() == limits.batch;
                return Ok(());
            }
        }
    }

    /// Builds the `settled` index for a store written before it existed (one pass, once): the
    /// pruner finds settled events only there.
    pub(super) fn index_settled_once(&self) -> Result<(), StoreError> {
        if !self.settled.is_empty() || self.meta.contains_key(SETTLED_INDEXED)? {
            return Ok(());
        }
        for entry in self.events.iter() {
            let (key, raw) = entry?;
            let Ok(record) = decode_record(&raw) else {
                continue;
            };
            let settled_at = match record.state {
                EventState::Published => record.published_at_ms,
                EventState::Dropped => record.dropped_at_ms,
                EventState::Pending | EventState::Parked => None,
            };
            if let Some(at) = settled_at {
                self.settled.insert(settled_key(at, record.seq), key)?;
            }
        }
        self.meta.insert(SETTLED_INDEXED, &[])?;
        Ok(())
    }

    /// Where the body pass resumes: entries before it had their bodies pruned already (they
    /// stay for the record pass when records are pruned too).
    fn prune_cursor(&self) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .meta
            .get(PRUNE_CURSOR)?
            .map_or_else(|| settled_key(0, 0).to_vec(), |v| v.to_vec()))
    }

    /// Removes the body of a settled (published or dropped) event settled at or before `cutoff`;
    /// false when it is pending or parked (a replay won the race) or settled again since.
    fn prune_body(&self, key: &[u8], seq: u64, cutoff: u64) -> Result<bool, StoreError> {
        let outcome = (&self.events, &self.bodies).transaction(|(events, bodies)| {
            let Some(raw) = events.get(key)? else {
                return Ok(false);
            };
            let Ok(record) = decode_record(&raw) else {
                return Ok(false);
            };
            if !settled_before(&record, seq, cutoff) {
                return Ok(false);
            }
            // Pruned already (an event settled twice has two index entries).
            if record.size > 0 && bodies.get(chunk_key(seq, 0))?.is_none() {
                return Ok(false);
            }
            for i in 0..chunk_count(record.size) {
                bodies.remove(&chunk_key(seq, i))?;
            }
            Ok::<_, ConflictableTransactionError<()>>(true)
        });
        committed(outcome)
    }

    /// Forgets a settled event entirely: a later delivery of its id is new again.
    fn prune_record(&self, key: &[u8], seq: u64, cutoff: u64) -> Result<bool, StoreError> {
        let outcome =
            (&self.events, &self.bodies, &self.by_seq).transaction(|(events, bodies, by_seq)| {
                let Some(raw) = events.get(key)? else {
                    return Ok(false);
                };
                let Ok(record) = decode_record(&raw) else {
                    return Ok(false);
                };
                if !settled_before(&record, seq, cutoff) {
                    return Ok(false);
                }
                events.remove(key)?;
                by_seq.remove(&seq.to_be_bytes())?;
                for i in 0..chunk_count(record.size) {
                    bodies.remove(&chunk_key(seq, i))?;
                }
                Ok::<_, ConflictableTransactionError<()>>(true)
            });
        let removed = committed(outcome)?;
        if removed {
            self.events_stored.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(removed)
    }

    /// Prunes every `every` until `shutdown`. Pruning needs no flush: a prune lost in a crash is
    /// simply done again.
    pub async fn run_pruner(
        self: Arc<Self>,
        shutdown: CancellationToken,
        every: Duration,
        retention: Retention,
    ) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => break,
            }
            let store = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || store.prune(now_ms(), retention)).await {
                Ok(Ok(p)) if p != Pruned::default() => {
                    tracing::info!(bodies = p.bodies, events = p.events, "pruned");
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "pruning failed"),
                Err(e) => tracing::error!(error = %e, "pruning task failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::event::EventId;
    use crate::store::{Admission, NewEvent};
    use bytes::Bytes;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(&StoreConfig {
            path: dir.to_path_buf(),
            max_outbox_events: 100,
            max_outbox_bytes: 1 << 20,
            retain_bodies: Duration::from_secs(60),
            retain_events: None,
            cache_capacity_bytes: crate::config::DEFAULT_CACHE_CAPACITY_BYTES,
        })
        .expect("open")
    }

    fn admit(store: &Store, id: &str, event_type: &str, received_at_ms: u64) -> EventKey {
        let event_id = EventId::parse(id).expect("id");
        let key = EventKey::new("live", &event_id);
        let body = Bytes::from(format!(r#"{{"id":"{id}"}}"#));
        let admitted = store
            .admit_in_memory(&NewEvent {
                key: &key,
                environment: "live",
                event_id: &event_id,
                event_type,
                endpoint: "ep",
                received_at_ms,
                request_id: "r",
                signature: "s",
                body: &body,
            })
            .expect("admit");
        assert_eq!(admitted, Admission::New);
        key
    }

    fn publish_all(store: &Store) {
        let pending = store
            .pending_after(None, 100, |_| false)
            .expect("read")
            .events;
        let acked: Vec<_> = pending.into_iter().map(|p| (p.seq, p.key)).collect();
        store.mark_published(&acked).expect("mark");
    }

    #[tokio::test]
    async fn a_replay_respects_the_outbox_bound_and_a_requeue_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(store(dir.path()));
        let flusher = tokio::spawn(Arc::clone(&store).run_flusher(
            CancellationToken::new(),
            crate::metrics::Metrics::new().store_flush,
        ));
        let first = admit(&store, "first", "a", 1);
        publish_all(&store);
        for i in 0..100 {
            admit(&store, &format!("fill{i}"), "a", 2);
        }
        assert!(matches!(
            store.replay(&first).await,
            Err(StoreError::OutboxFull { .. })
        ));
        assert_eq!(
            store.requeue(&first).await.expect("requeue"),
            Replay::Queued
        );
        assert_eq!(store.outbox_depth().events, 101);
        flusher.abort();
    }

    #[test]
    fn listing_is_newest_first_filtered_and_paged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        for (i, t) in ["a", "b", "a", "a"].iter().enumerate() {
            admit(&store, &format!("e{i}"), t, 1_000 + i as u64);
        }
        let filter = ListFilter {
            event_type: Some("a".to_owned()),
            ..ListFilter::default()
        };
        let page = store.list(&filter, None, 2).expect("list");
        let ids: Vec<&str> = page.events.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids, ["e3", "e2"]);
        let rest = store.list(&filter, page.next_before, 2).expect("list");
        let ids: Vec<&str> = rest.events.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids, ["e0"]);
        assert_eq!(rest.next_before, None);
        let since = ListFilter {
            since_ms: Some(1_002),
            ..ListFilter::default()
        };
        assert_eq!(store.list(&since, None, 10).expect("list").events.len(), 2);
    }

    #[tokio::test]
    async fn replay_queues_a_published_event_until_its_body_is_pruned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(store(dir.path()));
        let shutdown = CancellationToken::new();
        let flusher = tokio::spawn(
            Arc::clone(&store)
                .run_flusher(shutdown.clone(), crate::metrics::Metrics::new().store_flush),
        );
        let key = admit(&store, "e1", "a", 1_000);
        assert_eq!(
            store.replay(&key).await.expect("replay"),
            Replay::AlreadyPending
        );
        publish_all(&store);
        assert_eq!(store.replay(&key).await.expect("replay"), Replay::Queued);
        let again = store
            .pending_after(None, 10, |_| false)
            .expect("read")
            .events;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].body.as_ref(), br#"{"id":"e1"}"#);
        publish_all(&store);

        let retention = Retention {
            bodies: Duration::from_millis(10),
            events: None,
        };
        assert_eq!(
            store.prune(now_ms() + 1_000, retention).expect("prune"),
            Pruned {
                bodies: 1,
                events: 0
            }
        );
        assert_eq!(
            store.replay(&key).await.expect("replay"),
            Replay::BodyPruned
        );
        let missing = EventKey::new("live", &EventId::parse("nope").expect("id"));
        assert_eq!(
            store.replay(&missing).await.expect("replay"),
            Replay::NotFound
        );
        shutdown.cancel();
        flusher.await.expect("flusher");
    }

    #[test]
    fn pending_events_at_the_head_do_not_stop_pruning_and_a_pass_catches_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&StoreConfig {
            path: dir.path().to_path_buf(),
            max_outbox_events: 100_000,
            max_outbox_bytes: 1 << 30,
            retain_bodies: Duration::from_secs(60),
            retain_events: None,
            cache_capacity_bytes: crate::config::DEFAULT_CACHE_CAPACITY_BYTES,
        })
        .expect("open");
        // More old pending events than a pass used to look at, then published ones behind them.
        for i in 0..10_050 {
            admit(&store, &format!("pending{i}"), "a", 1);
        }
        let pending = store.outbox_depth().events;
        let published: Vec<EventKey> = (0..3_000)
            .map(|i| admit(&store, &format!("done{i}"), "a", 2))
            .collect();
        let mut after = None;
        loop {
            let batch = store.pending_after(after, 1_000, |_| false).expect("read");
            after = batch.last_seq;
            let done: Vec<_> = batch
                .events
                .into_iter()
                .filter(|p| published.contains(&p.key))
                .map(|p| (p.seq, p.key))
                .collect();
            store.mark_published(&done).expect("mark");
            if batch.exhausted {
                break;
            }
        }
        assert_eq!(store.outbox_depth().events, pending);
        let retention = Retention {
            bodies: Duration::from_millis(1),
            events: None,
        };
        let pruned = store.prune(now_ms() + 1_000, retention).expect("prune");
        assert_eq!(pruned.bodies, 3_000, "one pass prunes every due body");
        assert_eq!(
            store.prune(now_ms() + 1_000, retention).expect("prune"),
            Pruned::default(),
            "and leaves nothing for the next"
        );
        assert_eq!(store.outbox_depth().events, pending, "pending bodies stay");
    }

    #[test]
    fn pruning_keeps_pending_and_young_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        admit(&store, "old", "a", 1_000);
        publish_all(&store);
        admit(&store, "old-pending", "a", 1_001);
        admit(&store, "young", "a", 9_000);
        let retention = Retention {
            bodies: Duration::from_millis(100),
            events: Some(Duration::from_millis(100)),
        };
        let pruned = store.prune(now_ms() + 1_000, retention).expect("prune");
        assert_eq!(
            pruned,
            Pruned {
                bodies: 1,
                events: 1
            }
        );
        assert_eq!(store.events_stored(), 2);
        let left: Vec<String> = store
            .list(&ListFilter::default(), None, 10)
            .expect("list")
            .events
            .into_iter()
            .map(|r| r.event_id)
            .collect();
        assert_eq!(left, ["young", "old-pending"]);
    }

    #[test]
    fn a_pass_with_a_batch_of_zero_still_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = std::sync::Arc::new(store(dir.path()));
        admit(&store, "old", "a", 1_000);
        publish_all(&store);
        let retention = Retention {
            bodies: Duration::from_millis(100),
            events: Some(Duration::from_millis(100)),
        };
        let limits = PruneLimits {
            batch: 0,
            max_per_pass: 10,
        };
        // On a thread, so that a pass that never ends fails the test instead of hanging it.
        let (done, finished) = std::sync::mpsc::channel();
        let pruning = std::sync::Arc::clone(&store);
        std::thread::spawn(move || {
            let _ = done.send(
                pruning
                    .prune_pass(now_ms() + 1_000, retention, limits)
                    .is_ok(),
            );
        });
        let ended = finished.recv_timeout(Duration::from_secs(10));
        assert_eq!(ended, Ok(true), "the pass ended, without an error");
    }
}
