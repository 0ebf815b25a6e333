//! One rule for tests that need something this machine may lack (FUSE, loop devices): skip
//! loudly, or, with `GATE_RELAY_REQUIRE_FAULT_TESTS=1` (set in CI, where everything is there),
//! fail with the reason, so a fault test can never pass by not running. Shared by `support`
//! and `powerfs` (which some targets use without `support`).

/// Set to `1` to make every skip of a fault test a failure.
pub const REQUIRE_FAULT_TESTS: &str = "GATE_RELAY_REQUIRE_FAULT_TESTS";

/// Prints that the test is skipped and why; panics instead when fault tests are required.
pub fn skip(reason: &str) {
    if std::env::var(REQUIRE_FAULT_TESTS).is_ok_and(|v| v == "1") {
        panic!("{REQUIRE_FAULT_TESTS}=1 but this fault test cannot run: {reason}");
    }
    eprintln!("SKIPPED: {reason} (set {REQUIRE_FAULT_TESTS}=1 to make this a failure)");
}
