//! The exit code tells the truth about the final flush.

mod support;

use support::{Options, RelayProcess, Topology};

#[tokio::test]
async fn a_final_flush_that_fails_exits_non_zero() {
    let topology = Topology::declare("shutdown.flush", &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        ack: "durable",
        ..Options::default()
    };
    let config = support::write_config(&options, &topology.exchange, dir.path());
    let mut relay = RelayProcess::start(&config);
    // The flush ends with an fsync of the data file, which it opens by name: without the name,
    // the flush fails as it would on a failing disk.
    std::fs::remove_file(dir.path().join("data").join("db")).expect("remove the data file");
    relay.signal("TERM");
    relay.wait_for_line("final store flush failed");
    let status = relay.child.0.wait().expect("exit");
    assert_eq!(status.code(), Some(1), "{status:?}");
    topology.delete().await;
}
