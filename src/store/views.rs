//! Each client's view of the store: a handle over the one shared [`Store`] that offers only what
//! that client does (the shape of mini-redis's `Db`, a cheap clone over shared state).
//!
//! Owns nothing but the narrowing: every method forwards to the store, whose guarantees (see the
//! module header of `store`) hold unchanged. What a view leaves out, its client cannot reach:
//! ingest cannot publish, the publisher cannot prune, the admin API cannot admit. The wiring
//! (`app`) builds the views from one `Arc<Store>` and keeps the store itself for the flusher,
//! the pruner and shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{
    Admission, DropOutcome, EventKey, EventRecord, ListFilter, Listing, NewEvent, OutboxDepth,
    PendingBatch, Replay, Store, StoreError,
};

/// Every view method answers in the store's error.
type StoreResult<T> = Result<T, StoreError>;

/// What ingest needs: admit an event, returning once the admission is durable.
#[derive(Debug, Clone)]
pub struct IngestView(Arc<Store>);

impl IngestView {
    pub fn new(store: Arc<Store>) -> Self {
        Self(store)
    }

    /// Records a first sight or finds the existing record; durable when it returns.
    pub async fn admit(&self, new: NewEvent<'_>) -> StoreResult<Admission> {
        self.0.admit(new).await
    }
}

/// What the publisher needs: the outbox in order after a cursor, the lowest sequence admitted
/// behind it, a wake-up when it grows, and settling events (published, queued again, parked).
#[derive(Debug, Clone)]
pub struct PublisherView(Arc<Store>);

impl PublisherView {
    pub fn new(store: Arc<Store>) -> Self {
        Self(store)
    }

    /// Up to `limit` outbox events after `after`, in arrival order, leaving out those `skip`
    /// names.
    pub fn pending_after(
        &self,
        after: Option<u64>,
        limit: usize,
        skip: impl Fn(u64) -> bool,
    ) -> StoreResult<PendingBatch> {
        self.0.pending_after(after, limit, skip)
    }

    /// The lowest sequence admitted since the last call: a cursor past it must step back.
    pub fn take_lowest_admitted(&self) -> Option<u64> {
        self.0.take_lowest_admitted()
    }

    /// Resolves when the outbox may have gained events since the last call.
    pub async fn outbox_grew(&self) {
        self.0.outbox_grew().await;
    }

    /// Marks events the broker confirmed published (not waited on for durability).
    pub fn mark_published(&self, confirmed: &[(u64, EventKey)]) -> StoreResult<()> {
        self.0.mark_published(confirmed)
    }

    /// Queues an event marked published again (its return came late), beyond the bounds.
    pub async fn requeue(&self, key: &EventKey) -> StoreResult<Replay> {
        self.0.requeue(key).await
    }

    /// Takes an event the broker keeps refusing out of the outbox.
    pub fn park(&self, seq: u64, key: &EventKey, reason: &str) -> StoreResult<bool> {
        self.0.park(seq, key, reason)
    }
}

/// What the admin API needs: records and bodies, listing, an operator's replay and drop, and
/// the depths and sizes behind `/outbox`, readiness and the read gauges.
#[derive(Debug, Clone)]
pub struct AdminView(Arc<Store>);

impl AdminView {
    pub fn new(store: Arc<Store>) -> Self {
        Self(store)
    }

    pub fn record(&self, key: &EventKey) -> StoreResult<Option<EventRecord>> {
        self.0.record(key)
    }

    pub fn body(&self, seq: u64, size: u64) -> StoreResult<Option<Bytes>> {
        self.0.body(seq, size)
    }

    pub fn list(
        &self,
        filter: &ListFilter,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Listing> {
        self.0.list(filter, before, limit)
    }

    /// An operator's replay: bounded by the outbox like any admit; durable when it returns.
    pub async fn replay(&self, key: &EventKey) -> StoreResult<Replay> {
        self.0.replay(key).await
    }

    pub async fn drop_parked(&self, key: &EventKey) -> StoreResult<DropOutcome> {
        self.0.drop_parked(key).await
    }

    pub fn outbox_depth(&self) -> OutboxDepth {
        self.0.outbox_depth()
    }

    pub fn outbox_depth_of(&self, environment: &str) -> OutboxDepth {
        self.0.outbox_depth_of(environment)
    }

    pub fn outbox_full(&self, environment: &str) -> bool {
        self.0.outbox_full(environment)
    }

    pub fn oldest_pending_age(&self) -> Option<Duration> {
        self.0.oldest_pending_age()
    }

    pub fn is_writable(&self) -> bool {
        self.0.is_writable()
    }

    pub fn parked_count(&self) -> u64 {
        self.0.parked_count()
    }

    pub fn events_stored(&self) -> u64 {
        self.0.events_stored()
    }

    pub fn size_on_disk(&self) -> StoreResult<u64> {
        self.0.size_on_disk()
    }
}
