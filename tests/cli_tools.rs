//! The operator tools of the real binary: `sign` (cross-checked with 0Gate's official Python SDK),
//! `send-test` against a relay in this process, and the admin API clients `events` and `outbox`.

mod support;

use support::cli::{assert_exit, assert_exit_with, cli, text};

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use clap::CommandFactory;
use gate_relay::cli::Cli;
use support::{Options, PATH, SECRET, TestApp, WAIT, event_body, unique};

/// A value no output may ever contain.
const CANARY: &str = "whsec_canary_do_not_print_0123456789";
/// The SDK release the vectors in `tests/vectors/` were judged by.
const SDK: &str = "0bit-gate==0.1.4";

fn relay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gate-relay"))
}

fn admin_base(app: &TestApp) -> String {
    app.admin_url("")
}

/// python3 with the SDK importable; installs the SDK when it is missing, fails loudly otherwise.
fn python_with_sdk() -> &'static str {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let importable = || {
            Command::new("python3")
                .args(["-c", "import zerobit.gate.webhooks"])
                .output()
        };
        match importable() {
            Err(e) => panic!(
                "python3 is needed to cross-check signatures with 0Gate's SDK and cannot run ({e}); \
                 install it (`apt-get install -y python3 python3-pip`)"
            ),
            Ok(out) if out.status.success() => return,
            Ok(_) => {}
        }
        let install = |extra: &[&str]| {
            Command::new("python3")
                .args(["-m", "pip", "install", "-q", SDK])
                .args(extra)
                .output()
                .expect("pip runs")
        };
        let first = install(&[]);
        // Debian's own python3 refuses user installs into the system (PEP 668) unless told.
        if !first.status.success() {
            let second = install(&["--break-system-packages"]);
            assert!(
                second.status.success(),
                "cannot install {SDK}: {}\n{}",
                text(&first.stderr),
                text(&second.stderr)
            );
        }
        let out = importable().expect("python3 runs");
        assert!(
            out.status.success(),
            "{SDK} installed but not importable: {}",
            text(&out.stderr)
        );
    });
    "python3"
}

/// Verifies with the SDK exactly as a partner's app would, and checks that a tampered body fails,
/// so a pass cannot come from an SDK that accepts anything.
const SDK_VERIFY: &str = r#"
import os, sys
from zerobit.gate.errors import WebhookSignatureError
from zerobit.gate.webhooks import WebhooksResource
body = open(sys.argv[1], "rb").read()
header, secret = sys.argv[2], os.environ["SDK_SECRET"]
event = WebhooksResource().construct_event(body, header, secret, tolerance=300)
assert event["id"] == sys.argv[3], event
try:
    WebhooksResource().construct_event(body + b" ", header, secret, tolerance=300)
except WebhookSignatureError:
    print("verified")
else:
    sys.exit("a tampered body verified")
"#;

fn sdk_verifies(body: &Path, header: &str, event_id: &str) -> Output {
    Command::new(python_with_sdk())
        .args(["-c", SDK_VERIFY])
        .arg(body)
        .args([header, event_id])
        .env("SDK_SECRET", SECRET)
        .output()
        .expect("python3 runs")
}

#[test]
fn sign_output_verifies_with_the_official_python_sdk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body_path = dir.path().join("event.json");
    // Non-ASCII text and odd whitespace: the signature must cover the raw bytes, not a re-encoding.
    let body = "{\"id\":\"evt_sdk_é\", \"type\":\"gate_session.completed\",\n\t\"data\":{\"note\":\"😀\"}}\n";
    std::fs::write(&body_path, body).expect("write body");
    let out = relay()
        .args(["sign", "--secret-env", "GATE_WEBHOOK_SECRET"])
        .arg(&body_path)
        .env("GATE_WEBHOOK_SECRET", SECRET)
        .output()
        .expect("run");
    assert_exit(&out, 0);
    let header = text(&out.stdout);
    let header = header.trim_end();
    assert!(
        header.starts_with("t=") && header.contains(",v1="),
        "{header}"
    );

    let verdict = sdk_verifies(&body_path, header, "evt_sdk_é");
    assert!(
        verdict.status.success() && text(&verdict.stdout).contains("verified"),
        "the SDK rejected `{header}`: {}{}",
        text(&verdict.stdout),
        text(&verdict.stderr)
    );
}

#[test]
fn sign_reads_the_body_from_a_file_or_stdin_and_the_secret_from_env_or_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body_path = dir.path().join("body.bin");
    let body = b"{\"id\":\"evt_1\"}\r\n\x00\xff";
    std::fs::write(&body_path, body).expect("write body");
    let secret_path = dir.path().join("secret");
    std::fs::write(&secret_path, format!("{SECRET}\n")).expect("write secret");
    let t = 1_782_475_200;
    let want = format!("{}\n", support::sign(SECRET, t, body));

    let stdin_run = |args: &[&str]| {
        use std::io::Write;
        let mut child = relay()
            .args(args)
            .env("GATE_WEBHOOK_SECRET", SECRET)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body)
            .expect("write stdin");
        child.wait_with_output().expect("run")
    };
    let ts = t.to_string();
    let outputs = [
        relay()
            .args([
                "sign",
                "--secret-env",
                "GATE_WEBHOOK_SECRET",
                "--timestamp",
                &ts,
            ])
            .arg(&body_path)
            .env("GATE_WEBHOOK_SECRET", SECRET)
            .output()
            .expect("run"),
        relay()
            .args(["sign", "--timestamp", &ts, "--secret-file"])
            .arg(&secret_path)
            .arg(&body_path)
            .output()
            .expect("run"),
        stdin_run(&[
            "sign",
            "--secret-env",
            "GATE_WEBHOOK_SECRET",
            "--timestamp",
            &ts,
            "-",
        ]),
        stdin_run(&[
            "sign",
            "--secret-env",
            "GATE_WEBHOOK_SECRET",
            "--timestamp",
            &ts,
        ]),
    ];
    for out in &outputs {
        assert_exit(out, 0);
        assert_eq!(text(&out.stdout), want);
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
}

#[test]
fn a_secret_given_as_an_argument_is_refused_without_being_echoed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body_path = dir.path().join("body.json");
    std::fs::write(&body_path, "{}").expect("write body");
    let body = body_path.to_str().expect("utf-8 path");
    let cases: [&[&str]; 8] = [
        &["sign", "--secret", CANARY, body],
        &["sign", &format!("--secret={CANARY}"), body],
        &["sign", "--secret-env", CANARY, body],
        &["sign", "--secret-file", CANARY, body],
        &["sign", "--secret-env", "GATE_WEBHOOK_SECRET", CANARY],
        &[
            "send-test",
            "--url",
            "http://127.0.0.1:1/",
            "--secret",
            CANARY,
        ],
        &[
            "send-test",
            "--url",
            "http://127.0.0.1:1/",
            "--secret-env",
            CANARY,
        ],
        &["events", "list", "--token-env", CANARY],
    ];
    for args in cases {
        let out = relay()
            .args(args)
            .env("GATE_WEBHOOK_SECRET", SECRET)
            .output()
            .expect("run");
        assert_exit(&out, 64);
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        let stderr = text(&out.stderr);
        assert!(
            !stderr.contains(CANARY),
            "{args:?} echoed the secret: {stderr}"
        );
        assert!(!stderr.contains(SECRET), "{args:?} leaked: {stderr}");
    }
}

#[test]
fn sign_without_a_usable_secret_or_body_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let body = dir.path().join("body.json");
    std::fs::write(&body, "{}").expect("write");
    let missing = dir.path().join("missing.json");
    let cases: Vec<(Vec<&std::ffi::OsStr>, &str)> = vec![
        (vec!["sign".as_ref(), body.as_os_str()], "required"),
        (
            vec![
                "sign".as_ref(),
                "--secret-env".as_ref(),
                "UNSET_VAR".as_ref(),
            ],
            "UNSET_VAR is not set",
        ),
        (
            vec![
                "sign".as_ref(),
                "--secret-env".as_ref(),
                "EMPTY_VAR".as_ref(),
            ],
            "EMPTY_VAR is empty",
        ),
        (
            vec!["sign".as_ref(), "--secret-file".as_ref(), empty.as_os_str()],
            "empty",
        ),
        (
            vec![
                "sign".as_ref(),
                "--secret-env".as_ref(),
                "GATE_WEBHOOK_SECRET".as_ref(),
                missing.as_os_str(),
            ],
            "missing.json",
        ),
        (
            vec![
                "sign".as_ref(),
                "--secret-env".as_ref(),
                "GATE_WEBHOOK_SECRET".as_ref(),
                "--timestamp".as_ref(),
                "0".as_ref(),
                body.as_os_str(),
            ],
            "--timestamp",
        ),
    ];
    for (args, want) in cases {
        let out = relay()
            .args(&args)
            .env_remove("UNSET_VAR")
            .env("EMPTY_VAR", "")
            .env("GATE_WEBHOOK_SECRET", SECRET)
            .output()
            .expect("run");
        assert_exit(&out, 64);
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(want), "{args:?}: {want:?} not in {stderr}");
    }
}

/// Every command path of the CLI, e.g. `["events", "list"]`, the root included.
fn command_paths(command: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
    out.push(prefix.to_vec());
    for sub in command.get_subcommands() {
        let mut path = prefix.to_vec();
        path.push(sub.get_name().to_owned());
        command_paths(sub, &path, out);
    }
}

#[test]
fn every_help_has_examples_and_no_secret_value() {
    let root = Cli::command();
    let mut paths = Vec::new();
    command_paths(&root, &[], &mut paths);
    assert!(paths.len() >= 10, "the walk missed commands: {paths:?}");
    // A clap `env = …` attribute would print its variable's value in --help; set every one.
    let mut env_names: Vec<String> = ["GATE_WEBHOOK_SECRET", "GATE_ADMIN_TOKEN", "ADMIN_TOKEN"]
        .map(str::to_owned)
        .to_vec();
    let mut stack = vec![&root];
    while let Some(command) = stack.pop() {
        env_names.extend(
            command
                .get_arguments()
                .filter_map(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned()),
        );
        stack.extend(command.get_subcommands());
    }
    for path in paths
        .iter()
        .filter(|p| p.last().is_none_or(|n| n != "help"))
    {
        for flag in ["--help", "-h"] {
            let out = relay()
                .args(path)
                .arg(flag)
                .envs(env_names.iter().map(|n| (n, CANARY)))
                .output()
                .expect("run");
            assert_exit(&out, 0);
            let help = text(&out.stdout);
            assert!(!help.contains(CANARY), "{path:?} {flag} shows a secret");
            assert!(
                !help.contains("whsec_"),
                "{path:?} {flag} shows a secret-like value"
            );
            if flag == "--help" {
                assert!(
                    help.contains("Examples:"),
                    "{path:?} --help has no examples"
                );
            }
        }
    }
}

#[tokio::test]
async fn send_test_delivers_a_signed_test_event_that_the_relay_publishes() {
    let mut app = TestApp::spawn("cli.send_test", Options::default()).await;
    let url = app.url(PATH);
    let out = cli(
        &[
            "send-test",
            "--url",
            &url,
            "--secret-env",
            "GATE_WEBHOOK_SECRET",
        ],
        &[("GATE_WEBHOOK_SECRET", SECRET)],
    )
    .await;
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    for want in [
        "status      200 OK",
        "outcome     accepted",
        " ms\n",
        "event_id    evt_test_",
    ] {
        assert!(stdout.contains(want), "{want:?} not in:\n{stdout}");
    }
    assert!(!stdout.contains(SECRET));
    let event_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("event_id"))
        .expect("event_id line")
        .trim()
        .to_owned();

    let published = app.topology.collect(1, WAIT).await;
    assert_eq!(published.len(), 1);
    let event: serde_json::Value = serde_json::from_slice(&published[0].data).expect("JSON");
    assert_eq!(event["id"], event_id.as_str());
    assert_eq!(event["type"], "webhook.test");
    assert_eq!(event["data"]["object"], "webhook_test");
    assert_eq!(event["data"]["livemode"], false);

    // Every send is a new event, as with 0Gate's button; `--type` and live mode shape it.
    let out = cli(
        &[
            "send-test",
            "--url",
            &url,
            "--secret-env",
            "GATE_WEBHOOK_SECRET",
            "--type",
            "gate_session.completed",
            "--environment-mode",
            "live",
        ],
        &[("GATE_WEBHOOK_SECRET", SECRET)],
    )
    .await;
    assert_exit(&out, 0);
    assert!(text(&out.stdout).contains("accepted"));
    let published = app.topology.collect(1, WAIT).await;
    assert_eq!(published.len(), 1);
    let event: serde_json::Value = serde_json::from_slice(&published[0].data).expect("JSON");
    assert_ne!(event["id"], event_id.as_str());
    assert_eq!(event["type"], "gate_session.completed");
    assert_eq!(event["data"]["livemode"], true);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn send_test_sends_a_given_body_byte_for_byte_and_reports_duplicates() {
    let mut app = TestApp::spawn("cli.send_body", Options::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write");
    let body_file = dir.path().join("event.json");
    let id = unique("evt");
    let body = event_body(&id, "rail.pay_out.settled");
    std::fs::write(&body_file, &body).expect("write");
    let url = app.url(PATH);
    let args = [
        "send-test",
        "--url",
        &url,
        "--secret-file",
        secret_file.to_str().expect("utf-8"),
        "--body",
        body_file.to_str().expect("utf-8"),
    ];
    let first = cli(&args, &[]).await;
    assert_exit(&first, 0);
    assert!(text(&first.stdout).contains(&format!("event_id    {id}\n")));
    assert!(text(&first.stdout).contains("outcome     accepted"));
    let second = cli(&args, &[]).await;
    assert_exit(&second, 0);
    assert!(
        text(&second.stdout).contains("outcome     duplicate"),
        "{}",
        text(&second.stdout)
    );

    app.outbox_drained().await;
    assert_eq!(app.topology.queue_len().await, 1, "published once");
    let published = app.topology.collect(1, WAIT).await;
    assert_eq!(published[0].data, body.as_bytes());
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn send_test_reports_a_refusal_or_an_unreachable_url_with_exit_1() {
    let mut app = TestApp::spawn("cli.send_refused", Options::default()).await;
    let url = app.url(PATH);
    let wrong = cli(
        &["send-test", "--url", &url, "--secret-env", "WRONG"],
        &[("WRONG", "whsec_test_not_the_configured_one")],
    )
    .await;
    assert_exit(&wrong, 1);
    let stdout = text(&wrong.stdout);
    assert!(stdout.contains("401 Unauthorized"), "{stdout}");
    assert!(stdout.contains("invalid_signature"), "{stdout}");
    assert!(!stdout.contains("whsec_"), "{stdout}");

    let unknown_path = cli(
        &[
            "send-test",
            "--url",
            &app.url("/webhooks/0gate/nope"),
            "--secret-env",
            "S",
        ],
        &[("S", SECRET)],
    )
    .await;
    assert_exit(&unknown_path, 1);
    assert!(text(&unknown_path.stdout).contains("404"));

    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("addr")
    };
    let unreachable = cli(
        &[
            "send-test",
            "--url",
            &format!("http://{closed}{PATH}"),
            "--secret-env",
            "S",
        ],
        &[("S", SECRET)],
    )
    .await;
    assert_exit_with(&unreachable, 1, "cannot reach");

    let https = cli(
        &[
            "send-test",
            "--url",
            "https://example.invalid/",
            "--secret-env",
            "S",
        ],
        &[("S", SECRET)],
    )
    .await;
    assert_exit_with(&https, 64, "https is not supported");
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn events_can_be_shown_listed_and_replayed_from_the_command_line() {
    let mut app = TestApp::spawn("cli.events", Options::default()).await;
    let admin = admin_base(&app);
    // `/`, space, `?`, `#`, `&`, `+` and `%` must survive the path and the query.
    let id = format!("{}/a b?c#d&e+f%", unique("evt"));
    let body = event_body(&id, "rail.pay_in.settled");
    assert_eq!(app.post_event(&body).await.status, 200);
    assert_eq!(app.post_event(&body).await.body["status"], "duplicate");
    let other = unique("evt");
    assert_eq!(
        app.post_event(&event_body(&other, "kyc.required"))
            .await
            .status,
        200
    );
    app.outbox_drained().await;
    assert_eq!(app.topology.collect(2, WAIT).await.len(), 2);

    let show = cli(&["events", "show", &id, "--admin", &admin], &[]).await;
    assert_exit(&show, 0);
    let stdout = text(&show.stdout);
    for want in [
        format!("event_id     {id}\n"),
        "environment  test\n".to_owned(),
        "type         rail.pay_in.settled\n".to_owned(),
        "state        published\n".to_owned(),
        "deliveries   2\n".to_owned(),
        format!("size         {} bytes\n", body.len()),
    ] {
        assert!(stdout.contains(&want), "{want:?} not in:\n{stdout}");
    }
    assert!(
        stdout.ends_with(" bytes\n"),
        "the body only with --body:\n{stdout}"
    );

    let with_body = cli(
        &[
            "events",
            "show",
            &id,
            "--environment",
            "test",
            "--body",
            "--admin",
            &admin,
        ],
        &[],
    )
    .await;
    assert_exit(&with_body, 0);
    assert!(text(&with_body.stdout).ends_with(&format!("body\n{body}\n")));

    let json = cli(&["events", "show", &id, "--json", "--admin", &admin], &[]).await;
    assert_exit(&json, 0);
    let record: serde_json::Value = serde_json::from_slice(&json.stdout).expect("raw JSON");
    assert_eq!(record["event_id"], id.as_str());
    assert_eq!(record["request_ids"].as_array().expect("ids").len(), 2);

    let missing = cli(&["events", "show", "evt_nope", "--admin", &admin], &[]).await;
    assert_exit_with(&missing, 1, "HTTP 404: not_found");
    let unknown_env = cli(
        &[
            "events",
            "show",
            &id,
            "--environment",
            "live",
            "--admin",
            &admin,
        ],
        &[],
    )
    .await;
    assert_exit(&unknown_env, 1);

    // Newest first, one page at a time.
    let list = cli(&["events", "list", "--admin", &admin], &[]).await;
    assert_exit(&list, 0);
    let stdout = text(&list.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("SEQ  RECEIVED (UTC)"), "{stdout}");
    assert!(
        lines[1].contains(&other) && lines[2].contains(&id),
        "{stdout}"
    );
    let first_page = cli(&["events", "list", "--limit", "1", "--admin", &admin], &[]).await;
    assert_exit(&first_page, 0);
    let stdout = text(&first_page.stdout);
    let before = stdout
        .lines()
        .find_map(|l| l.strip_prefix("more: --before "))
        .unwrap_or_else(|| panic!("no next page in:\n{stdout}"));
    let second_page = cli(
        &[
            "events", "list", "--limit", "1", "--before", before, "--json", "--admin", &admin,
        ],
        &[],
    )
    .await;
    assert_exit(&second_page, 0);
    let page: serde_json::Value = serde_json::from_slice(&second_page.stdout).expect("JSON");
    assert_eq!(page["events"][0]["event_id"], id.as_str());
    let filtered = cli(
        &[
            "events",
            "list",
            "--type",
            "kyc.required",
            "--state",
            "published",
            "--since",
            "0",
            "--json",
            "--admin",
            &admin,
        ],
        &[],
    )
    .await;
    assert_exit(&filtered, 0);
    let page: serde_json::Value = serde_json::from_slice(&filtered.stdout).expect("JSON");
    assert_eq!(page["events"].as_array().expect("events").len(), 1);
    assert_eq!(page["events"][0]["event_id"], other.as_str());
    let none = cli(
        &["events", "list", "--state", "pending", "--admin", &admin],
        &[],
    )
    .await;
    assert_exit(&none, 0);
    assert_eq!(text(&none.stdout), "no events\n");
    let bad_state = cli(
        &["events", "list", "--state", "bogus", "--admin", &admin],
        &[],
    )
    .await;
    assert_exit(&bad_state, 64);

    // Replay: the same message, same id, arrives again.
    let replay = cli(&["events", "replay", &id, "--admin", &admin], &[]).await;
    assert_exit(&replay, 0);
    assert_eq!(text(&replay.stdout), format!("queued {id}\n"));
    app.outbox_drained().await;
    let again = app.topology.collect(1, WAIT).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].data, body.as_bytes());
    let replay_missing = cli(&["events", "replay", "evt_nope", "--admin", &admin], &[]).await;
    assert_exit_with(&replay_missing, 1, "not_found");

    let outbox = cli(&["outbox", "--admin", &admin], &[]).await;
    assert_exit(&outbox, 0);
    let stdout = text(&outbox.stdout);
    for want in ["events              0\n", "broker              connected\n"] {
        assert!(stdout.contains(want), "{want:?} not in:\n{stdout}");
    }
    let outbox = cli(&["outbox", "--json", "--admin", &admin], &[]).await;
    assert_exit(&outbox, 0);
    let value: serde_json::Value = serde_json::from_slice(&outbox.stdout).expect("JSON");
    assert_eq!(value["broker_connected"], true);
    app.stop().await;
    app.topology.delete().await;
}

#[tokio::test]
async fn admin_commands_send_the_token_from_the_environment() {
    let token = "an-admin-token-long-enough";
    let options = Options {
        admin_token: Some(token.to_owned()),
        ..Options::default()
    };
    let mut app = TestApp::spawn("cli.token", options).await;
    let admin = admin_base(&app);

    let without = cli(&["outbox", "--admin", &admin], &[]).await;
    assert_exit_with(&without, 1, "HTTP 401: unauthorized");
    let wrong = cli(
        &[
            "events",
            "list",
            "--admin",
            &admin,
            "--token-env",
            "GATE_ADMIN_TOKEN",
        ],
        &[("GATE_ADMIN_TOKEN", "wrong-token-of-some-length")],
    )
    .await;
    assert_exit_with(&wrong, 1, "unauthorized");

    let with = cli(
        &[
            "outbox",
            "--admin",
            &admin,
            "--token-env",
            "GATE_ADMIN_TOKEN",
        ],
        &[("GATE_ADMIN_TOKEN", token)],
    )
    .await;
    assert_exit(&with, 0);
    assert!(!text(&with.stdout).contains(token) && !text(&with.stderr).contains(token));

    let unset = cli(
        &[
            "outbox",
            "--admin",
            &admin,
            "--token-env",
            "NOT_SET_ANYWHERE",
        ],
        &[],
    )
    .await;
    assert_exit(&unset, 64);
    app.stop().await;
    app.topology.delete().await;
}

#[test]
fn admin_commands_exit_1_when_unreachable_and_64_on_a_bad_url() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let out = relay()
        .args(["outbox", "--admin", &format!("http://{closed}")])
        .output()
        .expect("run");
    assert_exit_with(&out, 1, "cannot reach");
    for url in [
        "ftp://127.0.0.1:9090",
        "not a url",
        "https://127.0.0.1:9090",
    ] {
        let out = relay()
            .args(["events", "list", "--admin", url])
            .output()
            .expect("run");
        assert_exit(&out, 64);
    }
}
