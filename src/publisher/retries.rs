//! What the publisher remembers, across connections, about events that did not go through.
//!
//! Owns: per outbox sequence, the failures so far, when the event may be sent again, and
//! whether it is a suspect. Pure (the clock is passed in), so the rules are unit-tested here.
//!
//! The rules:
//! - A refusal (nack, returned) is the broker's verdict on this event alone: it counts, and the
//!   event waits a backoff (100 ms doubling up to a cap) while newer events keep flowing.
//! - An unknown outcome (publish error, confirm timeout, lost connection) says nothing about
//!   which event caused it: every event then in flight becomes a suspect, counted nothing. The
//!   publisher sends suspects one at a time; a suspect that fails again while alone on the
//!   connection is the cause, and that counts: a publish error or the broker closing the
//!   connection, not a confirm timeout (a link that stopped passing bytes) and not on a
//!   connection the broker blocked (a resource alarm); the caller decides.
//! - At the bound an event is parked (out of the outbox, kept for an operator) instead of
//!   holding up the rest: one poisonous event cannot stop publishing.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// First wait after a refusal; doubles with each further refusal, up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    not_before: Instant,
    suspect: bool,
}

/// What a failure means for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Send it again later.
    Retry,
    /// It reached the bound: park it.
    Park { failures: u32 },
}

#[derive(Debug)]
pub(super) struct Retries {
    events: HashMap<u64, Retry>,
    park_after: u32,
    max_backoff: Duration,
}

impl Retries {
    pub(super) fn new(park_after: u32, max_backoff: Duration) -> Self {
        Self {
            events: HashMap::new(),
            park_after: park_after.max(1),
            max_backoff,
        }
    }

    /// True while `seq` waits out its backoff, or is a suspect (those go out one at a time,
    /// through [`Retries::next_suspect`]).
    pub(super) fn holds(&self, seq: u64, now: Instant) -> bool {
        self.events
            .get(&seq)
            .is_some_and(|r| r.suspect || r.not_before > now)
    }

    /// The broker refused `seq` (nack or returned).
    pub(super) fn refused(&mut self, seq: u64, now: Instant) -> Verdict {
        let max_backoff = self.max_backoff;
        let entry = self.entry(seq, now);
        entry.failures += 1;
        entry.suspect = false;
        let doublings = entry.failures.saturating_sub(1).min(16);
        entry.not_before = now + (FIRST_BACKOFF * 2u32.pow(doublings)).min(max_backoff);
        self.verdict(seq)
    }

    /// `seq` was in flight when the outcome became unknown. `counts`: the failure is its own
    /// (it was a suspect sent alone, and the failure points at the message).
    pub(super) fn unknown(&mut self, seq: u64, counts: bool, now: Instant) -> Verdict {
        let entry = self.entry(seq, now);
        entry.suspect = true;
        if counts {
            entry.failures += 1;
            return self.verdict(seq);
        }
        Verdict::Retry
    }

    /// Confirmed, parked or gone: forget it.
    pub(super) fn forget(&mut self, seq: u64) {
        self.events.remove(&seq);
    }

    /// The oldest suspect, to be sent alone.
    pub(super) fn next_suspect(&self) -> Option<u64> {
        self.events
            .iter()
            .filter(|(_, r)| r.suspect)
            .map(|(seq, _)| *seq)
            .min()
    }

    /// When the next backoff ends, after `now`.
    pub(super) fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.events
            .values()
            .filter(|r| !r.suspect && r.not_before > now)
            .map(|r| r.not_before)
            .min()
    }

    /// The lowest sequence whose backoff has ended: the publisher's cursor steps back to it.
    /// Leaves out what `in_flight` says is being published: stepping back to it would only
    /// re-read the outbox past it on every turn until its confirm settles.
    pub(super) fn lowest_due(&self, now: Instant, in_flight: impl Fn(u64) -> bool) -> Option<u64> {
        self.events
            .iter()
            .filter(|(seq, r)| !r.suspect && r.not_before <= now && !in_flight(**seq))
            .map(|(seq, _)| *seq)
            .min()
    }

    fn entry(&mut self, seq: u64, now: Instant) -> &mut Retry {
        self.events.entry(seq).or_insert(Retry {
            failures: 0,
            not_before: now,
            suspect: false,
        })
    }

    fn verdict(&self, seq: u64) -> Verdict {
        match self.events.get(&seq) {
            Some(r) if r.failures >= self.park_after => Verdict::Park {
                failures: r.failures,
            },
            _ => Verdict::Retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(30);

    #[test]
    fn refusals_back_off_doubling_to_the_cap_and_park_at_the_bound() {
        let now = Instant::now();
        let mut r = Retries::new(3, Duration::from_millis(300));
        assert_eq!(r.refused(7, now), Verdict::Retry);
        assert!(r.holds(7, now));
        assert!(!r.holds(7, now + Duration::from_millis(100)));
        assert_eq!(r.next_wake(now), Some(now + Duration::from_millis(100)));
        assert_eq!(r.refused(7, now), Verdict::Retry);
        assert_eq!(r.next_wake(now), Some(now + Duration::from_millis(200)));
        assert_eq!(r.refused(7, now), Verdict::Park { failures: 3 });
        assert_eq!(
            r.next_wake(now),
            Some(now + Duration::from_millis(300)),
            "capped"
        );
    }

    #[test]
    fn other_events_are_not_held_by_a_refused_one() {
        let now = Instant::now();
        let mut r = Retries::new(20, CAP);
        r.refused(1, now);
        assert!(r.holds(1, now));
        assert!(!r.holds(2, now));
    }

    #[test]
    fn an_unknown_outcome_among_several_counts_nothing_but_makes_suspects() {
        let now = Instant::now();
        let mut r = Retries::new(1, CAP);
        assert_eq!(r.unknown(5, false, now), Verdict::Retry);
        assert_eq!(r.unknown(3, false, now), Verdict::Retry);
        assert!(r.holds(5, now) && r.holds(3, now));
        assert_eq!(r.next_suspect(), Some(3));
        assert_eq!(r.next_wake(now), None, "suspects wait for no timer");
        assert_eq!(r.lowest_due(now, |_| false), None);
    }

    #[test]
    fn a_suspect_that_fails_alone_counts_and_parks_at_the_bound() {
        let now = Instant::now();
        let mut r = Retries::new(2, CAP);
        r.unknown(9, false, now);
        assert_eq!(r.unknown(9, true, now), Verdict::Retry);
        assert_eq!(r.unknown(9, true, now), Verdict::Park { failures: 2 });
    }

    #[test]
    fn a_confirmed_suspect_is_forgotten() {
        let now = Instant::now();
        let mut r = Retries::new(2, CAP);
        r.unknown(4, false, now);
        r.forget(4);
        assert_eq!(r.next_suspect(), None);
        assert!(!r.holds(4, now));
    }

    #[test]
    fn the_lowest_due_refusal_is_where_the_cursor_returns() {
        let now = Instant::now();
        let mut r = Retries::new(20, CAP);
        r.refused(10, now);
        r.refused(4, now);
        r.refused(4, now); // 200 ms
        let later = now + Duration::from_millis(150);
        assert_eq!(r.lowest_due(later, |_| false), Some(10));
        assert_eq!(r.next_wake(later), Some(now + Duration::from_millis(200)));
        assert_eq!(
            r.lowest_due(now + Duration::from_millis(200), |_| false),
            Some(4)
        );
        // One being published again is no place to step back to.
        assert_eq!(
            r.lowest_due(now + Duration::from_millis(200), |s| s == 4),
            Some(10)
        );
    }
}
