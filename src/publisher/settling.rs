//! Settling publishes: waiting for each confirm on its own task, turning the broker's answers
//! into outcomes, and acting on them (mark published, queue late returns again, park what the
//! broker keeps refusing, drain at shutdown).
//!
//! Owns the store and metric side of a confirm; which outcome a batch of confirms means (acks,
//! nacks, returns before and after their confirm) is decided by the pure `Session::settle`.
//! Guarantee, as for the whole publisher: only an ack without a return marks an event published.

use std::time::Instant;

use lapin::{Confirmation, PublisherConfirm};

use super::link::{Link, unblocked_timeout};
use super::retries::Retries;
use super::returns::returned_key;
use super::session::{Confirmed, PublishResult, Session, Settlement};
use super::{PublishError, Publisher, SHUTDOWN_CONFIRM_WAIT};
use crate::store::EventKey;

/// What the broker's answer to one publish means; `None` is a confirm that did not come in
/// time. The broker acked (or nacked) this delivery; a return attached to it may be another's.
fn confirm_outcome(
    outcome: Option<lapin::Result<Confirmation>>,
) -> (PublishResult, Option<EventKey>) {
    match outcome {
        Some(Ok(Confirmation::Ack(ret))) => {
            (PublishResult::Ack, ret.as_ref().and_then(returned_key))
        }
        Some(Ok(Confirmation::Nack(ret))) => {
            (PublishResult::Nack, ret.as_ref().and_then(returned_key))
        }
        Some(Ok(Confirmation::NotRequested)) => (PublishResult::Nack, None),
        Some(Err(_)) => (PublishResult::Error, None),
        None => (PublishResult::Timeout, None),
    }
}

impl Publisher {
    /// Waits for the confirm of one publish on its own task, bounded (time the broker blocks
    /// the connection does not count), so the window keeps filling meanwhile.
    pub(super) fn spawn_confirm(
        &self,
        session: &mut Session,
        link: &Link<'_>,
        confirm: PublisherConfirm,
        (seq, key, event_id): (u64, EventKey, String),
        started: Instant,
    ) {
        let confirm_timeout = self.config.publish_confirm_timeout;
        let status = link.status.clone();
        session.confirms.spawn(async move {
            let outcome = unblocked_timeout(confirm_timeout, &status, confirm).await;
            let (result, returned) = confirm_outcome(outcome);
            Confirmed {
                seq,
                key,
                event_id,
                result,
                returned,
                elapsed: started.elapsed(),
            }
        });
    }

    /// Records a batch of confirm outcomes; returns whether the connection is suspect (an
    /// error or a timeout: the outcome is unknown, so it is replaced).
    pub(super) async fn settle(
        &self,
        batch: Vec<Confirmed>,
        session: &mut Session,
        retries: &mut Retries,
    ) -> Result<bool, PublishError> {
        let Settlement {
            results,
            acked,
            failed,
            to_park,
            mut broken,
        } = session.settle(batch, retries, tokio::time::Instant::now());
        for (result, elapsed) in results {
            self.metrics
                .publishes
                .with_label_values(&[result.label()])
                .inc();
            if result == PublishResult::Ack {
                self.metrics.publish_confirm.observe(elapsed.as_secs_f64());
            }
        }
        for f in failed {
            tracing::warn!(
                event_id = f.event_id,
                result = f.result.label(),
                refused = f.refused,
                "event not confirmed; will publish again"
            );
            self.status
                .record_error(format!("{} for event {}", f.result.label(), f.event_id));
        }
        for p in to_park {
            if !self.park(p.seq, &p.key, &p.event_id, &p.reason, retries) {
                session.rewind_to(p.seq); // still pending
            }
        }
        crate::failpoint::hit(crate::failpoint::AFTER_CONFIRM);
        let marked = self.store.mark_published(&acked);
        // The broker has them whatever the store said, so their waiters may be told.
        for (_, key) in &acked {
            self.confirmations.confirmed(key);
        }
        if let Err(e) = marked {
            // They stay pending; replacing the connection rewinds the cursor so they are sent
            // again (duplicates with the same message_id) and marked then.
            tracing::error!(error = %e, "marking events published failed; publishing them again");
            return Err(e.into());
        }
        broken |= !self.requeue_late_returns(session).await;
        Ok(broken)
    }

    /// Events marked published whose return has since been seen go back into the outbox.
    /// False when one could not be queued again (kept to try at the next settle).
    async fn requeue_late_returns(&self, session: &mut Session) -> bool {
        let mut all_queued = true;
        for (event_id, key) in session.returns.take_late() {
            tracing::warn!(
                event_id,
                "event returned after it was marked published; queued again"
            );
            self.metrics
                .publishes
                .with_label_values(&[PublishResult::Returned.label()])
                .inc();
            self.status
                .record_error(format!("returned for event {event_id}"));
            if let Err(e) = self.store.requeue(&key).await {
                // Marked published but never delivered: keep it to try again at the next
                // settle rather than forget it.
                tracing::error!(event_id, error = %e, "queueing a returned event again failed");
                session.returns.retry_late(event_id, key);
                all_queued = false;
            }
        }
        all_queued
    }

    /// Takes an event the broker keeps refusing out of the outbox, so it holds up nothing.
    /// False when parking failed: the event stays pending (and in `retries`, at its bound, so
    /// its next failure parks it again).
    pub(super) fn park(
        &self,
        seq: u64,
        key: &EventKey,
        event_id: &str,
        reason: &str,
        retries: &mut Retries,
    ) -> bool {
        match self.store.park(seq, key, reason) {
            Ok(parked) => {
                retries.forget(seq);
                if parked {
                    self.metrics.events_parked_total.inc();
                    tracing::error!(
                        event_id,
                        reason,
                        "event parked: the broker keeps refusing it; replay or drop it through the admin API"
                    );
                }
                true
            }
            Err(e) => {
                tracing::error!(event_id, error = %e, "parking an event failed");
                false
            }
        }
    }

    /// On shutdown: wait (bounded) for confirms already requested.
    pub(super) async fn drain(&self, session: &mut Session, retries: &mut Retries) {
        let waiting = session.confirms.len();
        let deadline = tokio::time::sleep(SHUTDOWN_CONFIRM_WAIT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = session.confirms.join_next() => match next {
                    Some(done) => {
                        let done = vec![done.expect("confirm tasks do not panic")];
                        let _ = self.settle(done, session, retries).await;
                    }
                    None => break,
                },
                () = &mut deadline => {
                    tracing::warn!(abandoned = session.confirms.len(), "confirms abandoned at shutdown; they stay pending");
                    break;
                }
            }
        }
        tracing::info!(waiting, "publisher drained");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_confirm_that_came_and_acked_is_an_ack() {
        let cases = [
            (Some(Ok(Confirmation::Ack(None))), PublishResult::Ack),
            (Some(Ok(Confirmation::Nack(None))), PublishResult::Nack),
            // Confirms are always requested; a publish that was not confirmed is not an ack.
            (Some(Ok(Confirmation::NotRequested)), PublishResult::Nack),
            (None, PublishResult::Timeout),
        ];
        for (outcome, want) in cases {
            assert_eq!(confirm_outcome(outcome), (want, None));
        }
    }
}
