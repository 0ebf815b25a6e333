//! `signature::verify` on arbitrary header, body and clock never panics, and a header that
//! `sign` produced verifies, while the same header over a body with one byte flipped does not.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use gate_relay::config::Secret;
use gate_relay::signature::{sign, verify};
use libfuzzer_sys::fuzz_target;

/// The relay's default tolerance; the fuzzer varies it too.
const TOLERANCE_SECS: u32 = 300;

#[derive(Debug, Arbitrary)]
struct Input {
    header: Option<String>,
    body: Vec<u8>,
    now: i64,
    tolerance_secs: u32,
    secrets: Vec<String>,
    timestamp: i64,
    flip_at: usize,
    flip_bits: u8,
}

fuzz_target!(|input: Input| {
    let secrets: Vec<Secret> = input.secrets.into_iter().map(Secret::new).collect();
    let body = Bytes::from(input.body);
    // Arbitrary header: any result but a panic.
    let _ = verify(
        &secrets,
        input.header.as_deref(),
        body.clone(),
        input.now,
        input.tolerance_secs,
    );

    // Round trip: a fresh timestamp (verify accepts only positive ones) and a non-empty key.
    let timestamp = input.timestamp.checked_abs().unwrap_or(i64::MAX).max(1);
    let secret = Secret::new(format!("k{}", secrets.first().map_or("", |s| s.expose())));
    let header = sign(&secret, timestamp, &body);
    let keys = [secret];
    let verified = verify(
        &keys,
        Some(&header),
        body.clone(),
        timestamp,
        TOLERANCE_SECS,
    )
    .expect("a header sign() made verifies at its own timestamp");
    assert_eq!(verified.body(), &body);
    assert_eq!(verified.timestamp(), timestamp);

    if !body.is_empty() {
        let mut tampered = body.to_vec();
        let at = input.flip_at % tampered.len();
        tampered[at] ^= input.flip_bits.max(1);
        let rejected = verify(
            &keys,
            Some(&header),
            tampered.into(),
            timestamp,
            TOLERANCE_SECS,
        );
        assert!(rejected.is_err(), "a flipped body byte must not verify");
    }
});
