//! `config::Config::parse` never panics, on any text and any environment lookup.
#![no_main]

use arbitrary::Arbitrary;
use gate_relay::config::Config;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    text: String,
    /// Answers for `${VAR}` lookups, by name; an absent name is unset.
    env: Vec<(String, String)>,
}

fuzz_target!(|input: Input| {
    let lookup = |name: &str| {
        input
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let _ = Config::parse(&input.text, &lookup);
});
