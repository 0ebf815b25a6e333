//! `admin::inspection` never panics, and an id it extracts is one non-empty path segment that,
//! put back into the route's template (show, replay or drop), gives the exact path it came from.
#![no_main]

use arbitrary::Arbitrary;
use gate_relay::admin::{Inspection, inspection};
use http::Method;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Mostly the methods that matter; sometimes any token.
    method: u8,
    other_method: String,
    path: String,
}

fuzz_target!(|input: Input| {
    let method = match input.method % 5 {
        0 => Method::GET,
        1 => Method::POST,
        2 => Method::DELETE,
        3 => Method::PUT,
        _ => match Method::from_bytes(input.other_method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return,
        },
    };
    let path = input.path.as_str();
    match inspection(&method, path) {
        Inspection::Show(id) => {
            assert_eq!(method, Method::GET);
            assert!(!id.is_empty() && !id.contains('/'), "{path:?} -> {id:?}");
            assert_eq!(format!("/events/{id}"), path);
        }
        Inspection::Replay(id) => {
            assert_eq!(method, Method::POST);
            assert!(!id.is_empty() && !id.contains('/'), "{path:?} -> {id:?}");
            assert_eq!(format!("/events/{id}/replay"), path);
        }
        Inspection::Drop(id) => {
            assert_eq!(method, Method::POST);
            assert!(!id.is_empty() && !id.contains('/'), "{path:?} -> {id:?}");
            assert_eq!(format!("/events/{id}/drop"), path);
        }
        Inspection::Outbox => assert_eq!((method, path), (Method::GET, "/outbox")),
        Inspection::List => assert_eq!((method, path), (Method::GET, "/events")),
        Inspection::MethodNotAllowed => assert!(path == "/outbox" || path == "/events"),
        Inspection::NotFound => {}
    }
});
