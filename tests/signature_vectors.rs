//! Our verifier against vectors judged by 0Gate's official Python SDK (`tests/vectors/`).
//! Every header the SDK accepts, the relay must accept too; the relay also accepts what the
//! contract adds (several v1, several secrets, either hex case).

use base64::Engine;
use bytes::Bytes;
use gate_relay::config::Secret;
use gate_relay::signature;

#[test]
fn relay_accepts_exactly_what_the_vectors_say() {
    let text = include_str!("vectors/signatures.json");
    let vectors: serde_json::Value = serde_json::from_str(text).expect("vectors are JSON");
    let cases = vectors["cases"].as_array().expect("cases");
    assert!(cases.len() >= 30, "the vector file lost its cases");
    let mut sdk_accepted = 0;
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let secrets: Vec<Secret> = case["secrets"]
            .as_array()
            .expect("secrets")
            .iter()
            .map(|s| Secret::new(s.as_str().expect("secret").to_owned()))
            .collect();
        let body = base64::engine::general_purpose::STANDARD
            .decode(case["body_b64"].as_str().expect("body_b64"))
            .expect("base64");
        let header = case["header"].as_str().expect("header");
        let now = case["now"].as_i64().expect("now");
        let tolerance =
            u32::try_from(case["tolerance_secs"].as_u64().expect("tolerance")).expect("fits");
        let must_accept = case["relay_must_accept"]
            .as_bool()
            .expect("relay_must_accept");
        let got = signature::verify(&secrets, Some(header), Bytes::from(body), now, tolerance);
        assert_eq!(got.is_ok(), must_accept, "case {name}: {got:?}");
        // The superset rule, checked on the SDK's own verdict on the signature.
        if case["sdk_signature_ok"].as_bool() == Some(true) && header.is_ascii() {
            sdk_accepted += 1;
            assert!(
                got.is_ok(),
                "case {name}: the SDK accepts this signature, so must we"
            );
        }
    }
    assert!(
        sdk_accepted >= 10,
        "too few SDK-accepted cases to prove anything"
    );
}
