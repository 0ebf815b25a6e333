//! `event::Envelope::parse` never panics on a verified body of any bytes, and an envelope it
//! accepts has a non-empty id and type.
#![no_main]

use bytes::Bytes;
use gate_relay::config::Secret;
use gate_relay::event::Envelope;
use gate_relay::signature::{sign, verify};
use libfuzzer_sys::fuzz_target;

/// Any fixed positive time: the signature only makes the body a `Verified`.
const NOW: i64 = 1_700_000_000;

fuzz_target!(|body: &[u8]| {
    let secret = Secret::new("fuzz-secret".to_owned());
    let header = sign(&secret, NOW, body);
    let verified = verify(
        &[secret],
        Some(&header),
        Bytes::copy_from_slice(body),
        NOW,
        0,
    )
    .expect("a header sign() made verifies");
    if let Ok(envelope) = Envelope::parse(&verified) {
        assert!(!envelope.id.as_str().is_empty(), "accepted an empty id");
        assert!(!envelope.event_type.is_empty(), "accepted an empty type");
    }
});
