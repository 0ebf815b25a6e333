//! Matching `basic.return` frames to the events they refuse, whichever confirm lapin attached
//! them to.

use std::collections::{HashSet, VecDeque};

use lapin::types::AMQPValue;

use super::message::ENVIRONMENT_HEADER;
use crate::store::EventKey;

/// How many returned events and recently acked events to remember per connection; far above
/// one window of publishes in flight.
const RETURNS_REMEMBERED: usize = 16_384;

/// `basic.return` frames, matched to events by their full key: the `gate-environment` header
/// and the `message_id` (the dedupe key is both: one id may be returned in `test` and routed
/// in `live` in the same window).
///
/// lapin hands a returned message to whichever confirm it resolves next, and an ack covering
/// several deliveries resolves them in no fixed order, so the confirm that carries a return is
/// not necessarily the returned message's own. An event therefore counts as returned when a
/// return with its key was seen on this connection, whichever confirm carried it; and an event
/// already marked published whose return is settled later is queued again.
#[derive(Debug, Default)]
pub(super) struct Returns {
    /// Returned events not yet matched to their own confirm.
    pub(super) unmatched: HashSet<EventKey>,
    /// Events recently marked published, to take back if their return shows up late.
    recent: VecDeque<(String, EventKey)>,
}

impl Returns {
    pub(super) fn returned(&mut self, key: EventKey) {
        if self.unmatched.len() >= RETURNS_REMEMBERED {
            self.unmatched.clear(); // bounded; a forgotten key is at worst a late re-queue missed
        }
        self.unmatched.insert(key);
    }

    pub(super) fn acked(&mut self, id: String, key: EventKey) {
        if self.recent.len() == RETURNS_REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back((id, key));
    }

    /// A late return whose requeue failed: matched again at the next settle.
    pub(super) fn retry_late(&mut self, id: String, key: EventKey) {
        self.unmatched.insert(key.clone());
        self.recent.push_back((id, key));
    }

    /// Events marked published whose return has since been seen.
    pub(super) fn take_late(&mut self) -> Vec<(String, EventKey)> {
        if self.unmatched.is_empty() {
            return Vec::new();
        }
        let (late, keep): (Vec<_>, Vec<_>) = self
            .recent
            .drain(..)
            .partition(|(_, key)| self.unmatched.contains(key));
        self.recent = keep.into();
        for (_, key) in &late {
            self.unmatched.remove(key);
        }
        late
    }
}

/// The key of a returned message, from the headers the publisher set on it.
pub(super) fn returned_key(ret: &lapin::message::BasicReturnMessage) -> Option<EventKey> {
    let id = ret.properties.message_id().as_ref()?;
    let headers = ret.properties.headers().as_ref()?;
    let environment = match headers.inner().get(ENVIRONMENT_HEADER)? {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => return None,
    };
    Some(EventKey::from_parts(&environment, id.as_str()))
}
