//! Admitting a first sighting: the dedupe check and the writes that queue an event.
//!
//! Owns: the order of an admit's writes (outbox entry, body chunks, index, then the record by
//! compare-and-swap from absent) and the stripe locks that serialise admits of one key. See the
//! guarantees in the `store` module documentation.

use std::hash::BuildHasher;
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};

use super::{
    Admission, BODY_CHUNK, EventKey, EventRecord, EventState, MAX_REQUEST_IDS, NewEvent, Store,
    StoreError, chunk_count, chunk_key, decode_record, encode_record, outbox_value,
};

impl Store {
    /// Records a first sighting and queues it, or reports the existing record; returns once the
    /// outcome is durable (a duplicate waits for the flush covering the first record too).
    pub async fn admit(&self, new: NewEvent<'_>) -> Result<Admission, StoreError> {
        if !self.is_writable() {
            return Err(StoreError::Closed);
        }
        let admission = self.admit_in_memory(&new)?;
        crate::failpoint::hit(crate::failpoint::AFTER_ADMIT);
        self.wait_durable().await?;
        Ok(admission)
    }

    pub(super) fn admit_in_memory(&self, new: &NewEvent<'_>) -> Result<Admission, StoreError> {
        let _serialised = self.admit_lock(new.key);
        if let Some(record) = self.count_delivery(new)? {
            if let Some(state) = self.seen_unless_torn(new.key, record)? {
                return Ok(Admission::Seen(state));
            }
            // The torn record is gone: this delivery is admitted in its place.
        }
        let size = new.body.len() as u64;
        // A soft bound: concurrent admits may pass it by a few events, never without limit.
        self.room_for(new.key, size)?;
        let seq = self.db.generate_id()?;
        let record = encode_record(&EventRecord {
            state: EventState::Pending,
            seq,
            environment: new.environment.to_owned(),
            event_id: new.event_id.as_str().to_owned(),
            event_type: new.event_type.to_owned(),
            endpoint: new.endpoint.to_owned(),
            received_at_ms: new.received_at_ms,
            published_at_ms: None,
            body_sha256: hex::encode(Sha256::digest(new.body)),
            size,
            request_id: new.request_id.to_owned(),
            signature: new.signature.to_owned(),
            deliveries: 1,
            request_ids: vec![new.request_id.to_owned()],
            queued_seq: None,
            parked_reason: None,
            dropped_at_ms: None,
        });
        if self.enqueue(
            new.key,
            size,
            seq,
            || self.write_new(seq, new, &record),
            |w| *w,
        )? {
            self.events_stored.fetch_add(1, Ordering::SeqCst);
            return Ok(Admission::New);
        }
        // Unreachable while admits of one key hold its stripe lock; kept as a safe answer.
        match self.count_delivery(new)? {
            Some(record) => Ok(Admission::Seen(record.state)),
            None => Err(StoreError::Corrupt(
                "a record vanished during admit".to_owned(),
            )),
        }
    }

    /// Writes a first sighting without a sled transaction (each one costs sled two synchronous
    /// log writes): outbox entry, body chunks and index first, the record last, by
    /// compare-and-swap from absent. sled recovers a prefix of its log, so a durable record
    /// implies its body and outbox entry are durable; a crash before the record leaves entries
    /// that [`Store::open`] removes. False (and nothing left behind) if the record exists.
    fn write_new(&self, seq: u64, new: &NewEvent<'_>, record: &[u8]) -> Result<bool, StoreError> {
        let size = new.body.len() as u64;
        let written = self.write_new_parts(seq, new, record);
        if written.is_err() {
            // Best effort: an entry left here would be published with a later admit's body.
            // What this misses, the next start removes.
            let _ = self.remove_unrecorded(seq, size, new.key);
        }
        written
    }

    fn write_new_parts(
        &self,
        seq: u64,
        new: &NewEvent<'_>,
        record: &[u8],
    ) -> Result<bool, StoreError> {
        let seq_key = seq.to_be_bytes();
        let size = new.body.len() as u64;
        self.outbox.insert(seq_key, outbox_value(size, new.key))?;
        for (i, chunk) in new.body.chunks(BODY_CHUNK).enumerate() {
            let i = u32::try_from(i).expect("bodies are capped far below 4 billion chunks");
            self.bodies.insert(chunk_key(seq, i), chunk)?;
        }
        self.by_seq.insert(seq_key, new.key.0.as_slice())?;
        let inserted = self
            .events
            .compare_and_swap(&new.key.0, None::<&[u8]>, Some(record))?
            .is_ok();
        if !inserted {
            self.remove_unrecorded(seq, size, new.key)?;
        }
        Ok(inserted)
    }

    /// Removes what [`Store::write_new`] wrote before its record.
    pub(super) fn remove_unrecorded(
        &self,
        seq: u64,
        size: u64,
        key: &EventKey,
    ) -> Result<(), StoreError> {
        self.remove_body_and_index(seq, size, key)?;
        self.outbox.remove(seq.to_be_bytes())?;
        Ok(())
    }

    /// Removes the body chunks stored under `seq` and its index entry (if it names `key`).
    pub(super) fn remove_body_and_index(
        &self,
        seq: u64,
        size: u64,
        key: &EventKey,
    ) -> Result<(), StoreError> {
        let seq_key = seq.to_be_bytes();
        if self.by_seq.get(seq_key)?.is_some_and(|k| k == key.0) {
            self.by_seq.remove(seq_key)?;
        }
        for i in 0..chunk_count(size) {
            self.bodies.remove(chunk_key(seq, i))?;
        }
        Ok(())
    }

    /// The stripe lock serialising admits of one key: the check for an existing record and the
    /// write of a new one must not interleave with another admit of the same key.
    fn admit_lock(&self, key: &EventKey) -> std::sync::MutexGuard<'_, ()> {
        let stripe = self.admit_hasher.hash_one(&key.0) as usize % self.admit_locks.len();
        self.admit_locks[stripe]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// For an id seen before: counts this delivery on its record and returns the record's state.
    fn count_delivery(&self, new: &NewEvent<'_>) -> Result<Option<EventRecord>, StoreError> {
        // update_and_fetch on an absent key still logs a delete: look first.
        if !self.events.contains_key(&new.key.0)? {
            return Ok(None);
        }
        let updated = self.events.update_and_fetch(&new.key.0, |old| {
            let old = old?;
            let Ok(mut record) = decode_record(old) else {
                return Some(old.to_vec()); // leave an unreadable record as it is; decoding reports it
            };
            record.deliveries += 1;
            record.request_ids.push(new.request_id.to_owned());
            if record.request_ids.len() > MAX_REQUEST_IDS {
                record.request_ids.remove(0);
            }
            Some(encode_record(&record))
        })?;
        updated.map(|v| decode_record(&v)).transpose()
    }
}
