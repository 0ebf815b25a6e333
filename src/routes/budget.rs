//! The two bounds on what deliveries in flight may hold, as guards that give back what they took
//! when dropped (also when a handler is cancelled because its client went away).

use tokio::sync::Semaphore;

/// A delivery slot, counted in the in-flight gauge until dropped (also when the client goes away
/// mid-request and the handler is cancelled).
pub(crate) struct InFlight<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    gauge: &'a prometheus::IntGauge,
}

impl<'a> InFlight<'a> {
    pub(crate) fn new(
        permit: tokio::sync::SemaphorePermit<'a>,
        gauge: &'a prometheus::IntGauge,
    ) -> Self {
        gauge.inc();
        Self {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Body bytes taken from the shared budget, on the gauge until dropped (also when the handler is
/// cancelled because the client went away).
pub(crate) struct Reserved<'a> {
    budget: &'a Semaphore,
    gauge: &'a prometheus::IntGauge,
    pub(crate) bytes: usize,
}

impl<'a> Reserved<'a> {
    pub(crate) fn new(budget: &'a Semaphore, gauge: &'a prometheus::IntGauge) -> Self {
        Self {
            budget,
            gauge,
            bytes: 0,
        }
    }

    /// Takes `n` more bytes if the budget has them now; never waits, so a full budget is a 503.
    pub(crate) fn grow(&mut self, n: usize) -> bool {
        let Ok(permits) = u32::try_from(n) else {
            return false;
        };
        match self.budget.try_acquire_many(permits) {
            Ok(permit) => {
                // Given back by count in Drop, however many times this grew.
                permit.forget();
                self.bytes += n;
                self.gauge.add(n as i64);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.budget.add_permits(self.bytes);
        self.gauge.sub(self.bytes as i64);
    }
}
