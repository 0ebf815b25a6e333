//! Request ids: the sender's `X-Request-Id` when it is sane, otherwise a process-unique one, so
//! a request can be found in the log and, once accepted, on its event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The header a request id is taken from (when sane) and echoed in.
pub const REQUEST_ID: &str = "x-request-id";
/// Longer incoming request ids are replaced rather than stored.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Process-unique request ids: a random per-process prefix and a counter.
#[derive(Debug)]
pub(crate) struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        use std::hash::{BuildHasher, RandomState};
        Self {
            prefix: RandomState::new().hash_one(SystemTime::now()),
            next: AtomicU64::new(0),
        }
    }

    pub(crate) fn take(&self, headers: &http::HeaderMap) -> String {
        let given = headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= MAX_REQUEST_ID_LEN
                    && v.bytes().all(|b| b.is_ascii_graphic())
            });
        match given {
            Some(id) => id.to_owned(),
            None => format!(
                "{:016x}{:08x}",
                self.prefix,
                self.next.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
}
