//! The real binary's subcommands, run from a test without blocking the runtime that serves
//! the relay under test, and assertions on how they ended.

use std::process::Output;

use super::WAIT;

/// Runs `gate-relay args…` with extra environment variables, bounded by [`WAIT`].
pub async fn cli(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_gate-relay"));
    command
        .args(args)
        .envs(envs.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(WAIT, command.output())
        .await
        .expect("the command finished in time")
        .expect("the command ran")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code, showing both streams when it is wrong.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The exit code, and a phrase the error output must contain.
#[track_caller]
pub fn assert_exit_with(out: &Output, code: i32, phrase: &str) {
    assert_exit(out, code);
    assert!(text(&out.stderr).contains(phrase), "{}", text(&out.stderr));
}
