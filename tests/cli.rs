//! The real binary's command line: config checking, exit codes, no secrets in output.

use std::process::Command;

fn relay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gate-relay"))
}

#[test]
fn check_config_accepts_the_example() {
    let out = relay()
        .args([
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example"),
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(!stdout.contains("whsec_"), "secret in output: {stdout}");
    assert!(
        !stdout.contains("guest:guest"),
        "broker password in output: {stdout}"
    );
}

#[test]
fn check_config_lists_every_problem_and_exits_64_without_leaking_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example"))
            .expect("example");
    let bad = example
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"not an address\"")
        .replace("confirm_timeout_ms = 5000", "confirm_timeout_ms = 0")
        .replace("whsec_live_example_0123456789", "whsec_tiny");
    std::fs::write(&path, bad).expect("write");
    let out = relay()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["server.listen", "endpoint[0].secrets[0]"] {
        assert!(stderr.contains(key), "{key} missing: {stderr}");
    }
    assert!(!stderr.contains("whsec_tiny"), "secret leaked: {stderr}");
}

#[test]
fn unknown_keys_and_missing_files_exit_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("typo.toml");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example"))
            .expect("example");
    std::fs::write(&path, example.replace("[store]", "[store]\npaht = \"x\"")).expect("write");
    let out = relay()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("paht"));
    let out = relay()
        .args(["serve", "--config", "/nonexistent/gate-relay.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn bad_usage_exits_64_and_help_exits_0() {
    assert_eq!(
        relay()
            .arg("frobnicate")
            .output()
            .expect("run")
            .status
            .code(),
        Some(64)
    );
    let help = relay().arg("--help").output().expect("run");
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("check-config"));
}
