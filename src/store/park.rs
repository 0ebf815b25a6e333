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
    pub fn park(&self, seq: u64, key: &EventKey, reason: &str) -> Result<bool, StoreError> {
        if !self.outbox.contains_key(seq.to_be_bytes())? {
            return Ok(false);
        }
        let mut parked = false;
        // The record first, as in `mark_published`: a crash between the two leaves a parked
        // record with its outbox entry, which the next start removes.
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
        if parked {
            self.parked.insert(&key.0, &[])?;
        }
        self.dequeue(seq)?;
        Ok(parked)
    }

    /// An operator's decision not to deliver a parked event: state `dropped`, body left to the
    /// pruner. Durable when it returns.
    pub async fn drop_parked(&self, key: &EventKey) -> Result<DropOutcome, StoreError> {
        let Some(raw) = self.events.get(&key.0)? else {
            return Ok(DropOutcome::NotFound);
        };
        let mut record = decode_record(&raw)?;
        if record.state != EventState::Parked {
            return Ok(DropOutcome::NotParked);
        }
        record.state = EventState::Dropped;
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
            .insert(settled_key(now_ms(), record.seq), key.0.as_slice())?;
        self.wait_durable().await?;
        Ok(DropOutcome::Dropped)
    }

    /// Events parked now.
    pub fn parked_count(&self) -> u64 {
        self.parked.len() as u64
    }
}
