//! What the section tests share: the smallest valid file and an empty environment.

pub(super) const MINIMAL: &str = r#"
        [server]
        listen = "127.0.0.1:8080"
        [store]
        path = "./data"
        [amqp]
        url = "amqp://guest:guest@127.0.0.1:5672/%2f"
        exchange = "gate.events"
        [[endpoint]]
        name = "live"
        path = "/webhooks/0gate/live"
        environment = "live"
        secrets = ["whsec_live_0123456789abcdef"]
    "#;

pub(super) fn no_env(_: &str) -> Option<String> {
    None
}
