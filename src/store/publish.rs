//! The publisher's view of the store: the outbox read in order after a cursor, the lowest
//! sequence admitted behind it, a wake-up when the outbox grows, and marking confirmed events
//! published.

use std::sync::atomic::Ordering;

use super::{
    EventKey, EventState, Pending, PendingBatch, Store, StoreError, decode_record, encode_record,
    now_ms, parse_outbox_entry, settled_key,
};

impl Store {
    /// Up to `limit` outbox events with a sequence above `after`, in arrival order, leaving out
    /// (without loading) those `skip` names.
    pub fn pending_after(
        &self,
        after: Option<u64>,
        limit: usize,
        skip: impl Fn(u64) -> bool,
    ) -> Result<PendingBatch, StoreError> {
        let start = after.map_or(0, |seq| seq.saturating_add(1));
        let mut batch = PendingBatch {
            events: Vec::new(),
            last_seq: after,
            exhausted: true,
        };
        for entry in self.outbox.range(start.to_be_bytes()..) {
            if batch.events.len() == limit {
                batch.exhausted = false;
                break;
            }
            let (k, v) = entry?;
            let (seq, size, key) = parse_outbox_entry(&k, &v)?;
            batch.last_seq = Some(seq);
            if skip(seq) {
                continue;
            }
            // A broken entry must not stop the publisher for everyone else: report and skip it
            // (it stays in the outbox, visible in /outbox and the outbox metrics).
            let record = match self.record(&key) {
                Ok(Some(record)) => record,
                // An admit still writing (its record comes last); it lowers the rewind mark
                // once its record is in, so the reader comes back for it.
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(seq, error = %e, "outbox entry has an unreadable record; skipped");
                    continue;
                }
            };
            if record.queued_seq() != seq {
                // Left by a sled error midway through an admit; the next start removes it.
                tracing::warn!(
                    seq,
                    event_id = record.event_id,
                    "stale outbox entry; skipped"
                );
                continue;
            }
            // A replay queues the event under a new sequence; its body stays under the first.
            let body = match self.body(record.seq, size) {
                Ok(Some(body)) => body,
                Ok(None) => {
                    tracing::error!(
                        seq,
                        event_id = record.event_id,
                        "outbox entry has no body; skipped"
                    );
                    continue;
                }
                Err(e) => {
                    tracing::error!(seq, event_id = record.event_id, error = %e, "outbox entry has an unreadable body; skipped");
                    continue;
                }
            };
            batch.events.push(Pending {
                seq,
                key,
                record,
                body,
            });
        }
        Ok(batch)
    }

    /// The lowest sequence admitted since the last call, if any: a reader whose cursor is past
    /// it must step back to it.
    pub(crate) fn take_lowest_admitted(&self) -> Option<u64> {
        let lowest = self.lowest_admitted.swap(u64::MAX, Ordering::SeqCst);
        (lowest != u64::MAX).then_some(lowest)
    }

    /// Resolves when the outbox may have gained events since the last call.
    pub(crate) async fn outbox_grew(&self) {
        self.outbox_grew.notified().await;
    }

    /// Marks events confirmed by the broker: record `published`, outbox entry removed. The body
    /// stays for replay until the retention task prunes it. Not waited on for durability (see
    /// the module guarantee).
    pub fn mark_published(&self, confirmed: &[(u64, EventKey)]) -> Result<(), StoreError> {
        if confirmed.is_empty() {
            return Ok(());
        }
        let published_at = now_ms();
        // Plain writes, not a transaction (see `write_new`). The record first: a crash between
        // the two leaves a published record with its outbox entry, which the next start removes.
        for (seq, key) in confirmed {
            let seq_key = seq.to_be_bytes();
            if !self.outbox.contains_key(seq_key)? {
                continue; // already marked (a republish confirmed twice)
            }
            let mut body_seq = None;
            self.events.update_and_fetch(&key.0, |old| {
                let old = old?;
                let Ok(mut record) = decode_record(old) else {
                    return Some(old.to_vec());
                };
                // A stale entry's confirm says nothing about the queueing that superseded it.
                if record.queued_seq() == *seq {
                    record.state = EventState::Published;
                    record.published_at_ms = Some(published_at);
                    body_seq = Some(record.seq);
                }
                Some(encode_record(&record))
            })?;
            // For the pruner; written after the record, so a crash between leaves a published
            // record it never prunes (kept, not lost).
            if let Some(body_seq) = body_seq.take() {
                self.settled
                    .insert(settled_key(published_at, body_seq), key.0.as_slice())?;
            }
            // Counted per entry, so an error on a later one leaves the counters right.
            self.dequeue(*seq)?;
        }
        Ok(())
    }
}
