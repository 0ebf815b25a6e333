//! Parking: events the broker refuses past the publisher's attempt bound leave the outbox, so
//! they cannot hold up the others, and wait for an operator to replay or drop them.
//!
//! Owns: the `parked` state and tree. A parked event keeps its body (the pruner leaves it) and
//! its record; a duplicate delivery of it is "seen", never admitted again. Not waited on for
//! durability, like marking published: a park lost in a crash only means the event is
//! published (and refused) again before it is parked again.

use super::{
    EventKey, EventState, Store, StoreError, decode_record, encode_record, now_ms, settled_key,
};

/// What [`Store::drop_parked`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropOutcome {
    Dropped,
    /// Only a parked event can be dropped.
    NotParked,
    NotFound,
}

impl Store {
    /// Parks the event queued under `seq`: record `parked` with `reason`, outbox entry removed.
    /// Does nothing when `seq` is no longer the event's current queueing (a replay superseded
    /// it, or it was confirmed meanwhile).
    pub(crate) fn park(&self, seq: u64, key: &EventKey, reason: &str) -> Result<bool, StoreError> {
        if !self.outbox.contains_key(seq.to_be_bytes())? {
            return Ok(false);
        }
        // The index entry first, then the record: a crash between them leaves an entry for a
        // pending record, which `reconcile_parked` removes at open; the reverse order could
        // leave a parked event no gauge counts. The outbox entry last, as in `mark_published`:
        // a crash before it leaves a parked record with its entry, which open removes.
        self.parked.insert(&key.0, &[])?;
        let mut parked = false;
        self.events.update_and_fetch(&key.0, |old| {
            let old = old?;
            let Ok(mut record) = decode_record(old) else {
                return Some(old.to_vec());
            };
            parked = record.queued_seq() == seq && record.state == EventState::Pending;
            if parked {
                record.state = EventState::Parked;
                record.parked_reason = Some(reason.to_owned());
            }
            Some(encode_record(&record))
        })?;
        if !parked {
            self.parked.remove(&key.0)?;
        }
        self.dequeue(seq)?;
        Ok(parked)
    }

    /// An operator's decision not to deliver a parked event: state `dropped`, body left to the
    /// pruner. Durable when it returns.
    pub(crate) async fn drop_parked(&self, key: &EventKey) -> Result<DropOutcome, StoreError> {
        let Some(raw) = self.events.get(&key.0)? else {
            return Ok(DropOutcome::NotFound);
        };
        let mut record = decode_record(&raw)?;
        if record.state != EventState::Parked {
            return Ok(DropOutcome::NotParked);
        }
        record.state = EventState::Dropped;
        let dropped_at = now_ms();
        record.dropped_at_ms = Some(dropped_at);
        let swapped =
            self.events
                .compare_and_swap(&key.0, Some(raw), Some(encode_record(&record)))?;
        if swapped.is_err() {
            // Replayed meanwhile: it is no longer parked.
            return Ok(DropOutcome::NotParked);
        }
        self.parked.remove(&key.0)?;
        // The pruner takes its body after the retention, as for a published event.
        self.settled
            .insert(settled_key(dropped_at, record.seq), key.0.as_slice())?;
        self.wait_durable().await?;
        Ok(DropOutcome::Dropped)
    }

    /// Makes the `parked` index agree with the records after a crash between their writes
    /// (see `park` and `drop_parked`). The index is small: an operator clears it.
    pub(super) fn reconcile_parked(&self) -> Result<(), StoreError> {
        for entry in self.parked.iter() {
            let (key, _) = entry?;
            let state = self
                .events
                .get(&key)?
                .map(|raw| decode_record(&raw))
                .transpose();
            if !matches!(state, Ok(Some(ref r)) if r.state == EventState::Parked) {
                self.parked.remove(&key)?;
            }
        }
        Ok(())
    }

    /// Events parked now.
    pub fn parked_count(&self) -> u64 {
        self.parked.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::tests::{admit_sync, open};
    use super::super::{Retention, now_ms};
    use super::*;

    fn only_pending(store: &Store) -> (u64, EventKey) {
        let batch = store.pending_after(None, 10, |_| false).expect("read");
        assert_eq!(batch.events.len(), 1);
        (batch.events[0].seq, batch.events[0].key.clone())
    }

    #[test]
    fn a_parked_event_leaves_the_outbox_keeps_its_body_and_is_seen_on_redelivery() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 10);
        let body = Bytes::from_static(br#"{"id":"e1"}"#);
        admit_sync(&store, "e1", &body).expect("admit");
        let (seq, key) = only_pending(&store);
        assert!(store.park(seq, &key, "nack 20 times").expect("park"));
        assert_eq!(store.outbox_depth().events, 0);
        assert_eq!(store.parked_count(), 1);
        let record = store.record(&key).expect("read").expect("kept");
        assert_eq!(record.state, EventState::Parked);
        assert_eq!(
            store.body(record.seq, record.size).expect("read"),
            Some(body.clone())
        );
        assert_eq!(
            admit_sync(&store, "e1", &body).expect("again"),
            super::super::Admission::Seen(EventState::Parked)
        );
        // Pruning leaves a parked body alone, however old.
        let retention = Retention {
            bodies: std::time::Duration::from_millis(1),
            events: Some(std::time::Duration::from_millis(1)),
        };
        store.prune(now_ms() + 60_000, retention).expect("prune");
        assert!(store.record(&key).expect("read").is_some());
    }

    #[test]
    fn open_removes_parked_index_entries_a_crash_left_without_a_parked_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 10);
        admit_sync(&store, "e1", &Bytes::from_static(b"{}")).expect("admit");
        let (_, key) = only_pending(&store);
        // What a crash between the index write and the record write leaves.
        store.parked.insert(&key.0, &[]).expect("insert");
        assert_eq!(store.parked_count(), 1);
        store.db.flush().expect("flush");
        drop(store);
        let store = open(dir.path(), 10);
        assert_eq!(store.parked_count(), 0);
    }

    #[test]
    fn open_indexes_settled_events_of_a_store_written_before_the_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 10);
        admit_sync(&store, "e1", &Bytes::from_static(b"{}")).expect("admit");
        let (seq, key) = only_pending(&store);
        store.mark_published(&[(seq, key)]).expect("mark");
        // As an older store looks: no index, no note that it was built.
        store.settled.clear().expect("clear");
        store.meta.clear().expect("clear");
        store.db.flush().expect("flush");
        drop(store);
        let store = open(dir.path(), 10);
        let retention = Retention {
            bodies: std::time::Duration::from_millis(1),
            events: None,
        };
        let pruned = store.prune(now_ms() + 60_000, retention).expect("prune");
        assert_eq!(pruned.bodies, 1);
    }
}
