//! What one broker connection holds (publishes in flight, their confirms, returns seen, the
//! cursor) and how a batch of confirms settles it. Pure: the clock comes in, and what the store,
//! the metrics and the log must learn comes out as a [`Settlement`], so the rules (acks, nacks,
//! acks covering several deliveries, returns before and after their confirm, suspects) are
//! unit-tested here without a broker.

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::retries::{Retries, Verdict};
use super::returns::Returns;
use crate::store::EventKey;

/// How one publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PublishResult {
    Ack,
    Nack,
    Returned,
    Error,
    Timeout,
}

impl PublishResult {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Nack => "nack",
            Self::Returned => "returned",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

/// One publish's confirm as the confirm task reports it.
pub(super) struct Confirmed {
    pub(super) seq: u64,
    pub(super) key: EventKey,
    pub(super) event_id: String,
    pub(super) result: PublishResult,
    /// The key of a returned message lapin attached to this confirm: not necessarily this
    /// event's (see [`Returns`]).
    pub(super) returned: Option<EventKey>,
    pub(super) elapsed: Duration,
}

/// What one connection holds: publishes in flight, their confirms, returns seen, the cursor.
#[derive(Default)]
pub(super) struct Session {
    /// Outbox sequence → key and event id of every publish awaiting its confirm.
    pub(super) in_flight: HashMap<u64, (EventKey, String)>,
    pub(super) confirms: JoinSet<Confirmed>,
    pub(super) returns: Returns,
    /// Highest sequence handed to the broker in this pass; `None` starts from the oldest.
    pub(super) cursor: Option<u64>,
    /// The suspect sent alone, while its outcome is awaited.
    pub(super) isolated: Option<u64>,
    /// The broker blocked this connection (a resource alarm) at some point: failures on it
    /// say nothing about any event.
    pub(super) blocked: bool,
}

impl Session {
    /// Whether a failure of `seq` is its own: it was the suspect deliberately sent alone, on a
    /// connection the broker never blocked.
    pub(super) fn counts_against(&self, seq: u64) -> bool {
        self.isolated == Some(seq) && !self.blocked
    }
}

/// A publish that did not go through, for the log and the last error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failed {
    pub(super) event_id: String,
    pub(super) result: PublishResult,
    /// The broker's verdict on this event (nack, returned); otherwise the outcome is unknown.
    pub(super) refused: bool,
}

/// An event at its failure bound, to take out of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ToPark {
    pub(super) seq: u64,
    pub(super) key: EventKey,
    pub(super) event_id: String,
    pub(super) reason: String,
}

/// What one batch of confirms means, for the caller to carry out.
#[derive(Debug, Default)]
pub(super) struct Settlement {
    /// Every confirm's result, with its time to confirm: for the metrics.
    pub(super) results: Vec<(PublishResult, Duration)>,
    /// Confirmed by the broker: to mark published, and their waiters told.
    pub(super) acked: Vec<(u64, EventKey)>,
    pub(super) failed: Vec<Failed>,
    pub(super) to_park: Vec<ToPark>,
    /// An unknown outcome (publish error, confirm timeout): the connection is replaced.
    pub(super) broken: bool,
}

impl Session {
    /// Settles a batch of confirms. Returns are taken from the whole batch first: lapin may
    /// attach an event's return to another delivery's confirm (see [`Returns`]).
    pub(super) fn settle(
        &mut self,
        mut batch: Vec<Confirmed>,
        retries: &mut Retries,
        now: Instant,
    ) -> Settlement {
        let mut out = Settlement::default();
        for c in &mut batch {
            if let Some(key) = c.returned.take() {
                self.returns.returned(key);
            }
        }
        for c in batch {
            self.in_flight.remove(&c.seq);
            let result = if c.result == PublishResult::Ack && self.returns.unmatched.remove(&c.key)
            {
                PublishResult::Returned
            } else {
                c.result
            };
            out.results.push((result, c.elapsed));
            if result == PublishResult::Ack {
                retries.forget(c.seq);
                self.returns.acked(c.event_id, c.key.clone());
                out.acked.push((c.seq, c.key));
                continue;
            }
            // A refusal (nack, returned) backs off this event alone; an unknown outcome
            // (error, timeout) replaces the connection and makes the event a suspect.
            let refused = matches!(result, PublishResult::Nack | PublishResult::Returned);
            let verdict = if refused {
                retries.refused(c.seq, now)
            } else {
                out.broken = true;
                // A publish error on a suspect sent alone is its own; a timeout is not.
                let counts = result == PublishResult::Error && self.counts_against(c.seq);
                retries.unknown(c.seq, counts, now)
            };
            if self.isolated == Some(c.seq) {
                self.isolated = None;
            }
            if let Verdict::Park { failures } = verdict {
                out.to_park.push(ToPark {
                    seq: c.seq,
                    key: c.key,
                    event_id: c.event_id.clone(),
                    reason: format!("{} {failures} times", result.label()),
                });
            }
            out.failed.push(Failed {
                event_id: c.event_id,
                result,
                refused,
            });
        }
        out
    }

    /// Reads the outbox again from `seq` on, if the cursor is already past it.
    pub(super) fn rewind_to(&mut self, seq: u64) {
        if self.cursor.is_some_and(|cursor| seq <= cursor) {
            self.cursor = seq.checked_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARK_AFTER: u32 = 3;

    fn key(n: u64) -> EventKey {
        EventKey::from_parts("live", &format!("evt_{n}"))
    }

    fn confirmed(seq: u64, result: PublishResult, returned: Option<u64>) -> Confirmed {
        Confirmed {
            seq,
            key: key(seq),
            event_id: format!("evt_{seq}"),
            result,
            returned: returned.map(key),
            elapsed: Duration::from_millis(1),
        }
    }

    fn session_with(in_flight: &[u64]) -> Session {
        let mut session = Session::default();
        for &seq in in_flight {
            session
                .in_flight
                .insert(seq, (key(seq), format!("evt_{seq}")));
        }
        session
    }

    fn retries() -> Retries {
        Retries::new(PARK_AFTER, Duration::from_secs(1))
    }

    fn acked(s: &Settlement) -> Vec<u64> {
        s.acked.iter().map(|(seq, _)| *seq).collect()
    }

    fn failed(s: &Settlement) -> Vec<(String, PublishResult, bool)> {
        s.failed
            .iter()
            .map(|f| (f.event_id.clone(), f.result, f.refused))
            .collect()
    }

    use PublishResult::{Ack, Error, Nack, Returned, Timeout};

    /// One batch each: (confirms as (seq, result, return attached), acked, failed, broken).
    #[test]
    fn one_batch_of_confirms() {
        type Batch = &'static [(u64, PublishResult, Option<u64>)];
        type Failures = &'static [(u64, PublishResult, bool)];
        type Case = (&'static str, Batch, &'static [u64], Failures, bool);
        let cases: &[Case] = &[
            ("an ack", &[(1, Ack, None)], &[1], &[], false),
            (
                "a nack is a refusal",
                &[(1, Nack, None)],
                &[],
                &[(1, Nack, true)],
                false,
            ),
            (
                "an ack carrying its own return",
                &[(1, Ack, Some(1))],
                &[],
                &[(1, Returned, true)],
                false,
            ),
            (
                "a multiple ack: 2's return attached to 1's confirm",
                &[(1, Ack, Some(2)), (2, Ack, None)],
                &[1],
                &[(2, Returned, true)],
                false,
            ),
            (
                "the same, settled in the other order",
                &[(2, Ack, None), (1, Ack, Some(2))],
                &[1],
                &[(2, Returned, true)],
                false,
            ),
            (
                "a publish error: unknown, the connection is replaced",
                &[(1, Error, None), (2, Ack, None)],
                &[2],
                &[(1, Error, false)],
                true,
            ),
            (
                "a confirm timeout",
                &[(1, Timeout, None)],
                &[],
                &[(1, Timeout, false)],
                true,
            ),
        ];
        for (name, batch, want_acked, want_failed, want_broken) in cases {
            let seqs: Vec<u64> = batch.iter().map(|c| c.0).collect();
            let mut session = session_with(&seqs);
            let batch = batch
                .iter()
                .map(|&(seq, result, returned)| confirmed(seq, result, returned))
                .collect();
            let s = session.settle(batch, &mut retries(), Instant::now());
            let want_failed: Vec<_> = want_failed
                .iter()
                .map(|&(seq, r, refused)| (format!("evt_{seq}"), r, refused))
                .collect();
            assert_eq!(acked(&s), *want_acked, "{name}: acked");
            assert_eq!(failed(&s), want_failed, "{name}: failed");
            assert_eq!(s.broken, *want_broken, "{name}: broken");
            assert_eq!(s.results.len(), seqs.len(), "{name}: one result each");
            assert!(
                session.in_flight.is_empty(),
                "{name}: nothing left in flight"
            );
            assert!(
                s.to_park.is_empty(),
                "{name}: nothing parked on a first failure"
            );
        }
    }

    #[test]
    fn a_return_that_arrives_before_its_confirm_makes_that_ack_a_return() {
        let (mut session, mut retries) = (session_with(&[1, 2]), retries());
        let first = session.settle(
            vec![confirmed(1, Ack, Some(2))],
            &mut retries,
            Instant::now(),
        );
        assert_eq!(acked(&first), [1]);
        let second = session.settle(vec![confirmed(2, Ack, None)], &mut retries, Instant::now());
        assert_eq!(acked(&second), Vec::<u64>::new());
        assert_eq!(failed(&second), [("evt_2".to_owned(), Returned, true)]);
        assert!(session.returns.take_late().is_empty());
    }

    #[test]
    fn a_return_that_arrives_after_its_confirm_takes_the_event_back() {
        let (mut session, mut retries) = (session_with(&[1, 2]), retries());
        let first = session.settle(vec![confirmed(1, Ack, None)], &mut retries, Instant::now());
        assert_eq!(acked(&first), [1]);
        let second = session.settle(
            vec![confirmed(2, Ack, Some(1))],
            &mut retries,
            Instant::now(),
        );
        assert_eq!(acked(&second), [2]);
        assert_eq!(session.returns.take_late(), [("evt_1".to_owned(), key(1))]);
        assert!(session.returns.take_late().is_empty(), "taken once");
    }

    #[test]
    fn refusals_park_an_event_at_the_bound() {
        let (mut session, mut retries) = (Session::default(), retries());
        for n in 1..=PARK_AFTER {
            let s = session.settle(vec![confirmed(1, Nack, None)], &mut retries, Instant::now());
            let parked: Vec<_> = s.to_park.iter().map(|p| p.reason.clone()).collect();
            if n < PARK_AFTER {
                assert!(parked.is_empty(), "refusal {n}");
            } else {
                assert_eq!(parked, [format!("nack {PARK_AFTER} times")]);
            }
        }
    }

    #[test]
    fn an_error_counts_against_a_suspect_alone_on_an_unblocked_connection_only() {
        for (blocked, want_park) in [(false, true), (true, false)] {
            let mut retries = Retries::new(1, Duration::from_secs(1));
            let mut session = session_with(&[1]);
            session.isolated = Some(1);
            session.blocked = blocked;
            let s = session.settle(
                vec![confirmed(1, Error, None)],
                &mut retries,
                Instant::now(),
            );
            assert_eq!(!s.to_park.is_empty(), want_park, "blocked = {blocked}");
            assert_eq!(session.isolated, None);
        }
    }

    #[test]
    fn rewinding_moves_the_cursor_back_only() {
        let mut session = Session {
            cursor: Some(10),
            ..Session::default()
        };
        session.rewind_to(12);
        assert_eq!(session.cursor, Some(10));
        session.rewind_to(5);
        assert_eq!(session.cursor, Some(4));
        session.rewind_to(0);
        assert_eq!(session.cursor, None);
    }
}
