//! What a crash can leave half-done, and how the store puts it right.
//!
//! Owns: the outbox entries a crash leaves stale (removed at open) and pending records left
//! without their outbox entry or body (replaced by the next delivery of their id). Guarantees:
//! nothing removed here was ever acknowledged or is still needed; see each function.
//!
//! Why a pending record can be incomplete at all: an admit writes its record last, and sled
//! recovers its log up to the first tear, so after a process crash a record implies its body
//! and outbox entry. After a power cut, writes made since the last fsync may reach the disk in
//! any order, and sled (which counts a write stable after `sync_file_range`) can then recover a
//! later record without an earlier outbox entry or chunk. Such an admit was never acknowledged
//! (answers wait for the fsync that covers the record), so 0Gate delivers it again; that
//! delivery must not be answered "duplicate" for an event that will never be published.

use std::sync::atomic::Ordering;

use super::{
    EventKey, EventRecord, EventState, Store, StoreError, chunk_count, chunk_key, decode_record,
    parse_outbox_entry,
};

/// Why an outbox entry is not worth keeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stale {
    /// No record: an admit cut short before its record was written.
    Unrecorded,
    /// The record is queued under another sequence (replayed since, or an admit that failed
    /// midway and was admitted again).
    Superseded,
    /// The broker confirmed it: the crash came between marking the record and removing this.
    Published,
}

impl Store {
    /// Removes outbox entries that would publish nothing or publish again what the broker
    /// already confirmed, and counts what stays into the outbox depths. Runs in `open`, before
    /// any reader or writer.
    pub(super) fn remove_stale_outbox_entries(&self) -> Result<(), StoreError> {
        let mut stale = Vec::new();
        for entry in self.outbox.iter() {
            let (k, v) = entry?;
            let (seq, size, key) = parse_outbox_entry(&k, &v)?;
            let (why, owns_body) = match self.record(&key) {
                Ok(None) => (Stale::Unrecorded, true),
                // Chunks under `seq` belong to nobody unless it is the record's own sequence.
                Ok(Some(record)) if record.queued_seq() != seq => {
                    (Stale::Superseded, record.seq != seq)
                }
                // The body stays for replay until the pruner takes it. A parked (or dropped)
                // event left its outbox entry behind the same way.
                Ok(Some(record)) if record.state != EventState::Pending => {
                    (Stale::Published, false)
                }
                // Whole, or unreadable (left for an operator to see in /outbox).
                Ok(Some(_)) | Err(_) => {
                    self.count_in(&key, size);
                    continue;
                }
            };
            stale.push((seq, size, key, why, owns_body));
        }
        for (seq, size, key, why, owns_body) in &stale {
            if *owns_body {
                self.remove_unrecorded(*seq, *size, key)?;
            } else {
                self.outbox.remove(seq.to_be_bytes())?;
            }
            tracing::warn!(seq, reason = ?why, "removed a stale outbox entry left by a crash");
        }
        Ok(())
    }

    /// For a delivery of an id already recorded: the record's state, or `None` when the record
    /// was a torn admit and has been removed (the caller then admits the delivery as new).
    /// Caller holds the key's admit lock.
    ///
    /// The publisher marks records and replays re-queue them without that lock, so a record
    /// that looks incomplete is read again: `mark_published` writes the record before it removes
    /// the outbox entry, so an entry missing while the record is still pending under the same
    /// sequence was not removed by a confirm.
    pub(super) fn seen_unless_torn(
        &self,
        key: &EventKey,
        mut record: EventRecord,
    ) -> Result<Option<EventState>, StoreError> {
        loop {
            // Only a pending record belongs in the outbox; published, parked and dropped ones
            // are out of it on purpose.
            if record.state != EventState::Pending || self.is_queued_whole(&record)? {
                return Ok(Some(record.state));
            }
            let Some(raw) = self.events.get(&key.0)? else {
                return Ok(None); // removed meanwhile (pruned): this delivery is new
            };
            let current = decode_record(&raw)?;
            if current.state != record.state || current.queued_seq() != record.queued_seq() {
                record = current; // confirmed or re-queued meanwhile: judge it afresh
                continue;
            }
            // Answering "seen" here would acknowledge an event that will never be published.
            tracing::warn!(
                event_id = current.event_id,
                "a pending record without its outbox entry or whole body (a power cut between \
                 flushes); replaced by this delivery"
            );
            return match self.discard_torn(key, &current, &raw)? {
                true => Ok(None),
                false => {
                    // Changed between our read and the removal: judge it afresh.
                    let Some(raw) = self.events.get(&key.0)? else {
                        return Ok(None);
                    };
                    record = decode_record(&raw)?;
                    continue;
                }
            };
        }
    }

    /// True when a pending record's outbox entry and every body chunk are present.
    fn is_queued_whole(&self, record: &EventRecord) -> Result<bool, StoreError> {
        if !self
            .outbox
            .contains_key(record.queued_seq().to_be_bytes())?
        {
            return Ok(false);
        }
        for i in 0..chunk_count(record.size) {
            if !self.bodies.contains_key(chunk_key(record.seq, i))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Forgets an incomplete pending record and everything stored for it; false (nothing
    /// removed) when the record is no longer exactly `raw`.
    fn discard_torn(
        &self,
        key: &EventKey,
        record: &EventRecord,
        raw: &[u8],
    ) -> Result<bool, StoreError> {
        // The record first, and only as it was judged. A crash after this leaves an outbox
        // entry without a record, which the next start removes.
        if self
            .events
            .compare_and_swap(&key.0, Some(raw), None::<&[u8]>)?
            .is_err()
        {
            return Ok(false);
        }
        self.events_stored.fetch_sub(1, Ordering::SeqCst);
        for seq in [record.queued_seq(), record.seq] {
            self.dequeue(seq)?;
        }
        self.remove_body_and_index(record.seq, record.size, key)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::tests::{admit_sync, assert_only_queued, open};
    use super::super::{Admission, BODY_CHUNK, OutboxDepth, Store};
    use super::*;
    use crate::event::EventId;

    fn key(id: &str) -> EventKey {
        EventKey::new("live", &EventId::parse(id).expect("valid id"))
    }

    fn record(store: &Store, id: &str) -> EventRecord {
        store.record(&key(id)).expect("read").expect("present")
    }

    #[test]
    fn a_retry_replaces_a_pending_record_whose_outbox_entry_was_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 10);
        let body = Bytes::from_static(br#"{"id":"e1"}"#);
        admit_sync(&store, "e1", &body).expect("admit");
        let torn = record(&store, "e1");
        // What a power cut can leave: the record without its outbox entry.
        store.outbox.remove(torn.seq.to_be_bytes()).expect("remove");
        store.outbox_events.store(0, Ordering::SeqCst);
        store.outbox_bytes.store(0, Ordering::SeqCst);

        assert_eq!(
            admit_sync(&store, "e1", &body).expect("retry"),
            Admission::New,
            "a duplicate answer would acknowledge an event that is never published"
        );
        let fresh = record(&store, "e1");
        assert_ne!(fresh.seq, torn.seq);
        assert_only_queued(&store, &body);
        assert_eq!(store.bodies.len(), 1, "the torn admit's body is gone");
        assert_eq!(store.by_seq.len(), 1);
        assert_eq!(store.events_stored.load(Ordering::SeqCst), 1);
        assert_eq!(
            store.outbox_depth(),
            OutboxDepth {
                events: 1,
                bytes: body.len() as u64
            }
        );
    }

    #[test]
    fn a_retry_replaces_a_pending_record_missing_a_body_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 10);
        let body = Bytes::from(vec![b'x'; BODY_CHUNK * 2]);
        admit_sync(&store, "e1", &body).expect("admit");
        let torn = record(&store, "e1");
        store.bodies.remove(chunk_key(torn.seq, 1)).expect("remove");
        assert_eq!(
            admit_sync(&store, "e1", &body).expect("retry"),
            Admission::New
        );
        assert_only_queued(&store, &body);
        assert_eq!(
            store.outbox_depth(),
            OutboxDepth {
                events: 1,
                bytes: body.len() as u64
            },
            "the torn entry's count was given back"
        );
        // A whole pending record is a plain duplicate.
        assert_eq!(
            admit_sync(&store, "e1", &body).expect("dup"),
            Admission::Seen(EventState::Pending)
        );
    }

    #[test]
    fn open_removes_entries_already_confirmed_or_superseded_and_keeps_their_bodies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = Bytes::from_static(b"{}");
        {
            let store = open(dir.path(), 10);
            for id in ["confirmed", "superseded", "queued"] {
                admit_sync(&store, id, &body).expect("admit");
            }
            // A crash after marking the record published, before removing its entry.
            let confirmed = record(&store, "confirmed");
            let mut published = confirmed.clone();
            published.state = EventState::Published;
            store
                .events
                .insert(&key("confirmed").0, super::super::encode_record(&published))
                .expect("mark");
            // A record queued under a later sequence than its entry says.
            let mut moved = record(&store, "superseded");
            moved.queued_seq = Some(moved.seq + 1_000_000);
            store
                .events
                .insert(&key("superseded").0, super::super::encode_record(&moved))
                .expect("move");
            store.sync_all().expect("flush");
        }
        let store = open(dir.path(), 10);
        let left: Vec<String> = store
            .pending_after(None, 10, |_| false)
            .expect("read")
            .events
            .into_iter()
            .map(|p| p.record.event_id)
            .collect();
        assert_eq!(left, ["queued"]);
        assert_eq!(store.outbox.len(), 1);
        assert_eq!(store.outbox_depth().events, 1);
        assert_eq!(store.bodies.len(), 3, "bodies stay for replay");
    }

    #[test]
    fn a_confirm_for_a_superseded_entry_does_not_mark_the_record_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 10);
        admit_sync(&store, "e1", &Bytes::from_static(b"{}")).expect("admit");
        let mut moved = record(&store, "e1");
        let stale_seq = moved.seq;
        moved.queued_seq = Some(stale_seq + 1_000_000);
        store
            .events
            .insert(&key("e1").0, super::super::encode_record(&moved))
            .expect("move");
        store
            .mark_published(&[(stale_seq, key("e1"))])
            .expect("mark");
        assert_eq!(record(&store, "e1").state, EventState::Pending);
        assert_eq!(
            store.outbox_depth().events,
            0,
            "the stale entry itself is gone"
        );
    }

    #[test]
    fn retries_racing_the_publisher_are_never_taken_for_torn_records() {
        // A retry that reads its record just before the publisher marks it and removes its
        // outbox entry must answer "duplicate", not replace the record (a second publish).
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 100_000);
        let body = Bytes::from_static(b"{}");
        for round in 0..30 {
            let ids: Vec<String> = (0..300).map(|i| format!("r{round}_{i}")).collect();
            for id in &ids {
                admit_sync(&store, id, &body).expect("admit");
            }
            let published = std::sync::atomic::AtomicBool::new(false);
            let readmitted = std::thread::scope(|scope| {
                let retry = || {
                    let mut new = Vec::new();
                    while !published.load(Ordering::SeqCst) {
                        for id in &ids {
                            if admit_sync(&store, id, &body).expect("retry") == Admission::New {
                                new.push(id.clone());
                            }
                        }
                    }
                    new
                };
                let retries = [scope.spawn(retry), scope.spawn(retry)];
                loop {
                    let batch = store.pending_after(None, 1000, |_| false).expect("read");
                    if batch.events.is_empty() {
                        break;
                    }
                    for p in batch.events {
                        store.mark_published(&[(p.seq, p.key)]).expect("mark");
                    }
                }
                published.store(true, Ordering::SeqCst);
                retries
                    .into_iter()
                    .flat_map(|r| r.join().expect("retries"))
                    .collect::<Vec<_>>()
            });
            assert!(
                readmitted.is_empty(),
                "retries admitted as new while being published: {readmitted:?}"
            );
        }
        assert_eq!(store.outbox_depth().events, 0);
    }
}
