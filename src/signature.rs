//! Verification of 0Gate's `Gate-Signature` header over the raw request body.
//!
//! Owns: parsing the header, computing HMAC-SHA256 over `t` + `.` + body, the timestamp tolerance
//! and the constant-time comparison. Does not own: where secrets come from (config) or what the body
//! means (`event`). Pure: no I/O, the clock is passed in.
//!
//! Guarantee: a [`Verified`] body can only be built here, and only when some configured secret's MAC
//! equals some `v1` value of the header and `|now - t| <= tolerance`. What is accepted is a strict
//! superset of the official Python SDK (`zerobit.gate.webhooks`): any of several `v1` values may
//! match (the SDK checks the last), any of several secrets (rotation), hex in either case.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The header 0Gate signs with.
pub const HEADER: &str = "Gate-Signature";

/// A MAC is 32 bytes, 64 hex characters.
const MAC_LEN: usize = 32;

/// The longest `Gate-Signature` value accepted. It is stored with the event and sent on as an
/// AMQP header, so an unbounded one can exceed RabbitMQ's frame_max and make the broker close the
/// connection on every publish. `t=` plus eight `v1=` values of 64 hex characters (key rotation)
/// is under 600 bytes; 2 KiB leaves room for separators, spaces and future schemes.
pub const MAX_HEADER_LEN: usize = 2048;

/// More `v1` values than this in one header is not a rotation, it is an attempt to make us work.
const MAX_V1_VALUES: usize = 8;

/// A body whose signature checked out. Only [`verify`] constructs it.
#[derive(Debug, Clone)]
pub struct Verified {
    body: Bytes,
    header: String,
    timestamp: i64,
    secret_index: usize,
}

impl Verified {
    /// The raw bytes exactly as received.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The `Gate-Signature` value that verified, forwarded so consumers can verify again.
    pub fn signature_header(&self) -> &str {
        &self.header
    }

    /// The signed `t` value (unix seconds).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// Which configured secret matched (its position, never its value).
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }
}

/// Why a delivery was not verified; every variant is the sender's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Gate-Signature header is missing")]
    MissingHeader,
    #[error("the Gate-Signature header is {len} bytes, over the limit")]
    TooLarge { len: usize },
    #[error("the Gate-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the signature timestamp is {skew_secs} s away from now, over the tolerance")]
    StaleTimestamp { skew_secs: i64 },
    #[error("no v1 signature matches any configured secret")]
    Mismatch,
}

/// The parts of a header value that matter: `t` and every `v1`.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    timestamp: i64,
    v1: Vec<[u8; MAC_LEN]>,
}

/// Parses a header value the way the SDK does: split on `,`, split each part at its first `=`,
/// trim spaces, skip parts without `=`, ignore unknown keys; `t` must be a positive integer.
/// Like the SDK, when `t` repeats the last one wins.
fn parse(header: &str) -> Result<Parsed, SignatureError> {
    // HTTP header values are ASCII; anything else cannot have come from 0Gate intact.
    if !header.is_ascii() {
        return Err(SignatureError::Malformed("not ASCII"));
    }
    let mut timestamp: Option<i64> = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim_ascii(), value.trim_ascii());
        match key {
            "t" => timestamp = Some(parse_timestamp(value)?),
            "v1" => {
                if v1.len() == MAX_V1_VALUES {
                    return Err(SignatureError::Malformed("too many v1 values"));
                }
                // A v1 that is not 64 hex characters can never match; skipping it keeps
                // a header with one good value among odd ones valid, as the SDK would not.
                if let Some(mac) = decode_mac(value) {
                    v1.push(mac);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("missing t"))?;
    if v1.is_empty() {
        return Err(SignatureError::Malformed("missing v1"));
    }
    Ok(Parsed { timestamp, v1 })
}

/// Accepts what the SDK's Python `int()` accepts in ASCII: an optional sign, digits with single
/// underscores between them, leading zeros. The MAC is then computed over the canonical decimal,
/// as the SDK does (`f"{int(t)}."`).
fn parse_timestamp(value: &str) -> Result<i64, SignatureError> {
    const NOT_POSITIVE: SignatureError = SignatureError::Malformed("t is not a positive integer");
    let digits = value.strip_prefix('+').unwrap_or(value);
    let well_formed = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__");
    if !well_formed {
        return Err(NOT_POSITIVE);
    }
    match digits.replace('_', "").parse::<i64>() {
        Ok(t) if t > 0 => Ok(t),
        _ => Err(NOT_POSITIVE),
    }
}

fn decode_mac(value: &str) -> Option<[u8; MAC_LEN]> {
    let mut mac = [0u8; MAC_LEN];
    hex::decode_to_slice(value, &mut mac).ok()?;
    Some(mac)
}

/// What can be checked without the body: the header is present, within [`MAX_HEADER_LEN`],
/// well formed, and its `t` within the tolerance of `now` (unix seconds). The transport calls it
/// before reading a body, so a sender without a plausible header makes us buffer nothing;
/// [`verify`] checks all of it again.
pub fn precheck(header: Option<&str>, now: i64, tolerance_secs: u32) -> Result<(), SignatureError> {
    parse_fresh(header, now, tolerance_secs).map(|_| ())
}

fn parse_fresh(
    header: Option<&str>,
    now: i64,
    tolerance_secs: u32,
) -> Result<(&str, Parsed), SignatureError> {
    let header = header.ok_or(SignatureError::MissingHeader)?;
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::TooLarge { len: header.len() });
    }
    let parsed = parse(header)?;
    let skew_secs = now.saturating_sub(parsed.timestamp);
    if skew_secs.unsigned_abs() > u64::from(tolerance_secs) {
        return Err(SignatureError::StaleTimestamp { skew_secs });
    }
    Ok((header, parsed))
}

/// Verifies `header` over `body` against every secret; `now` is unix seconds.
pub fn verify(
    secrets: &[Secret],
    header: Option<&str>,
    body: Bytes,
    now: i64,
    tolerance_secs: u32,
) -> Result<Verified, SignatureError> {
    let (header, parsed) = parse_fresh(header, now, tolerance_secs)?;
    let timestamp = parsed.timestamp.to_string();
    for (secret_index, secret) in secrets.iter().enumerate() {
        // Config refuses short secrets; an empty key would make forging trivial, so never use one.
        if secret.expose().is_empty() {
            continue;
        }
        let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(&body);
        // Try every candidate so the time taken does not reveal which one matched.
        let matched = parsed.v1.iter().fold(false, |found, candidate| {
            mac.clone().verify_slice(candidate).is_ok() | found
        });
        if matched {
            return Ok(Verified {
                body,
                header: header.to_owned(),
                timestamp: parsed.timestamp,
                secret_index,
            });
        }
    }
    Err(SignatureError::Mismatch)
}

/// Computes a header value for `body`; used by the CLI, the benchmark and tests.
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_782_475_200;
    const BODY: &[u8] =
        br#"{"id":"evt_1","type":"webhook.test","created_at":1782475200,"data":{}}"#;

    fn secret(s: &str) -> Secret {
        Secret::new(s.to_owned())
    }

    fn mac_hex(key: &str, t: i64, body: &[u8]) -> String {
        let header = sign(&secret(key), t, body);
        header
            .split_once("v1=")
            .expect("sign writes v1")
            .1
            .to_owned()
    }

    #[test]
    fn verification_table() {
        let good = mac_hex("whsec_a", NOW, BODY);
        let other = mac_hex("whsec_b", NOW, BODY);
        type Case<'a> = (&'a str, String, Vec<&'a str>, Result<usize, SignatureError>);
        let cases: Vec<Case<'_>> = vec![
            (
                "valid",
                format!("t={NOW},v1={good}"),
                vec!["whsec_a"],
                Ok(0),
            ),
            (
                "wrong key",
                format!("t={NOW},v1={good}"),
                vec!["whsec_b"],
                Err(SignatureError::Mismatch),
            ),
            (
                "rotation, second secret",
                format!("t={NOW},v1={good}"),
                vec!["whsec_b", "whsec_a"],
                Ok(1),
            ),
            (
                "several v1, good last",
                format!("t={NOW},v1={other},v1={good}"),
                vec!["whsec_a"],
                Ok(0),
            ),
            (
                "several v1, good first",
                format!("t={NOW},v1={good},v1={other}"),
                vec!["whsec_a"],
                Ok(0),
            ),
            (
                "upper-case hex",
                format!("t={NOW},v1={}", good.to_uppercase()),
                vec!["whsec_a"],
                Ok(0),
            ),
            (
                "spaces around parts",
                format!(" t = {NOW} , v1 = {good} "),
                vec!["whsec_a"],
                Ok(0),
            ),
            (
                "unknown v0 ignored",
                format!("t={NOW},v0=abc,v1={good}"),
                vec!["whsec_a"],
                Ok(0),
            ),
            (
                "part without = skipped",
                format!("t={NOW},junk,v1={good}"),
                vec!["whsec_a"],
                Ok(0),
            ),
            (
                "same t twice",
                format!("t={NOW},t={NOW},v1={good}"),
                vec!["whsec_a"],
                Ok(0),
            ),
            (
                "last t wins",
                format!("t=5,t={NOW},v1={good}"),
                vec!["whsec_a"],
                Ok(0),
            ),
            (
                "t with plus, zeros, underscores",
                format!("t=+0{}_{},v1={good}", NOW / 1000, NOW % 1000),
                vec!["whsec_a"],
                Ok(0),
            ),
            (
                "t with double underscore",
                format!("t=1__2,v1={good}"),
                vec!["whsec_a"],
                Err(SignatureError::Malformed("t is not a positive integer")),
            ),
            (
                "edge of tolerance",
                format!("t={},v1={}", NOW - 300, mac_hex("whsec_a", NOW - 300, BODY)),
                vec!["whsec_a"],
                Ok(0),
            ),
            (
                "stale",
                format!("t={},v1={}", NOW - 301, mac_hex("whsec_a", NOW - 301, BODY)),
                vec!["whsec_a"],
                Err(SignatureError::StaleTimestamp { skew_secs: 301 }),
            ),
            (
                "future",
                format!("t={},v1={}", NOW + 301, mac_hex("whsec_a", NOW + 301, BODY)),
                vec!["whsec_a"],
                Err(SignatureError::StaleTimestamp { skew_secs: -301 }),
            ),
            (
                "missing t",
                format!("v1={good}"),
                vec!["whsec_a"],
                Err(SignatureError::Malformed("missing t")),
            ),
            (
                "missing v1",
                format!("t={NOW}"),
                vec!["whsec_a"],
                Err(SignatureError::Malformed("missing v1")),
            ),
            (
                "only a bad-length v1",
                format!("t={NOW},v1=abcd"),
                vec!["whsec_a"],
                Err(SignatureError::Malformed("missing v1")),
            ),
            (
                "empty",
                String::new(),
                vec!["whsec_a"],
                Err(SignatureError::Malformed("missing t")),
            ),
            (
                "t not a number",
                format!("t=abc,v1={good}"),
                vec!["whsec_a"],
                Err(SignatureError::Malformed("t is not a positive integer")),
            ),
            (
                "t negative",
                format!("t=-5,v1={good}"),
                vec!["whsec_a"],
                Err(SignatureError::Malformed("t is not a positive integer")),
            ),
            (
                "t zero",
                format!("t=0,v1={good}"),
                vec!["whsec_a"],
                Err(SignatureError::Malformed("t is not a positive integer")),
            ),
            (
                "prefix is part of the key",
                format!("t={NOW},v1={}", mac_hex("a", NOW, BODY)),
                vec!["whsec_a"],
                Err(SignatureError::Mismatch),
            ),
        ];
        for (name, header, keys, expected) in cases {
            let secrets: Vec<Secret> = keys.into_iter().map(secret).collect();
            let got = verify(&secrets, Some(&header), Bytes::from_static(BODY), NOW, 300)
                .map(|v| v.secret_index());
            assert_eq!(got, expected, "case {name}: header {header:?}");
        }
    }

    #[test]
    fn tampered_body_is_rejected() {
        let header = sign(&secret("whsec_a"), NOW, BODY);
        let mut tampered = BODY.to_vec();
        tampered[10] ^= 1;
        let got = verify(
            &[secret("whsec_a")],
            Some(&header),
            Bytes::from(tampered),
            NOW,
            300,
        );
        assert_eq!(got.map(|_| ()), Err(SignatureError::Mismatch));
    }

    #[test]
    fn missing_header_is_its_own_error() {
        let got = verify(
            &[secret("whsec_a")],
            None,
            Bytes::from_static(BODY),
            NOW,
            300,
        );
        assert_eq!(got.map(|_| ()), Err(SignatureError::MissingHeader));
    }

    #[test]
    fn verified_keeps_the_bytes_and_timestamp() {
        let header = sign(&secret("whsec_a"), NOW - 7, BODY);
        let v = verify(
            &[secret("whsec_a")],
            Some(&header),
            Bytes::from_static(BODY),
            NOW,
            300,
        )
        .expect("valid");
        assert_eq!(v.body().as_ref(), BODY);
        assert_eq!(v.timestamp(), NOW - 7);
    }

    #[test]
    fn too_many_v1_values_are_refused() {
        let good = mac_hex("whsec_a", NOW, BODY);
        let header = format!("t={NOW}{}", format!(",v1={good}").repeat(MAX_V1_VALUES + 1));
        let got = verify(
            &[secret("whsec_a")],
            Some(&header),
            Bytes::from_static(BODY),
            NOW,
            300,
        );
        assert_eq!(
            got.map(|_| ()),
            Err(SignatureError::Malformed("too many v1 values"))
        );
    }

    #[test]
    fn the_most_v1_values_allowed_fit_within_the_length_cap() {
        let good = mac_hex("whsec_a", NOW, BODY);
        let header = format!("t={NOW}{}", format!(", v1={good}").repeat(MAX_V1_VALUES));
        assert!(header.len() <= MAX_HEADER_LEN, "{} bytes", header.len());
        let got = verify(
            &[secret("whsec_a")],
            Some(&header),
            Bytes::from_static(BODY),
            NOW,
            300,
        );
        assert_eq!(got.map(|v| v.secret_index()), Ok(0));
    }

    #[test]
    fn a_header_over_the_length_cap_is_refused_even_when_it_would_verify() {
        let header = format!(
            "{},pad={}",
            sign(&secret("whsec_a"), NOW, BODY),
            "a".repeat(MAX_HEADER_LEN)
        );
        let len = header.len();
        let got = verify(
            &[secret("whsec_a")],
            Some(&header),
            Bytes::from_static(BODY),
            NOW,
            300,
        );
        assert_eq!(got.map(|_| ()), Err(SignatureError::TooLarge { len }));
    }

    #[test]
    fn precheck_table() {
        let good = mac_hex("whsec_a", NOW, BODY);
        let long = format!("t={NOW},v1={good},x={}", "a".repeat(MAX_HEADER_LEN));
        let cases: Vec<(&str, Option<String>, Result<(), SignatureError>)> = vec![
            (
                "plausible (the MAC is not checked)",
                Some(format!("t={NOW},v1={}", "0".repeat(64))),
                Ok(()),
            ),
            ("missing", None, Err(SignatureError::MissingHeader)),
            (
                "no t",
                Some(format!("v1={good}")),
                Err(SignatureError::Malformed("missing t")),
            ),
            (
                "no v1",
                Some(format!("t={NOW}")),
                Err(SignatureError::Malformed("missing v1")),
            ),
            (
                "stale",
                Some(format!("t={},v1={good}", NOW - 301)),
                Err(SignatureError::StaleTimestamp { skew_secs: 301 }),
            ),
            (
                "future",
                Some(format!("t={},v1={good}", NOW + 301)),
                Err(SignatureError::StaleTimestamp { skew_secs: -301 }),
            ),
            (
                "too long",
                Some(long.clone()),
                Err(SignatureError::TooLarge { len: long.len() }),
            ),
        ];
        for (name, header, want) in cases {
            assert_eq!(precheck(header.as_deref(), NOW, 300), want, "{name}");
        }
    }
}
