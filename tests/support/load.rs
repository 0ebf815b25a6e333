//! Load for the crash and power-cut tests: senders of distinct signed events against a relay
//! that is about to die, and the ids that got a 2xx with the bodies they were sent with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{PATH, SECRET, event_body, http_client, now, sign, unique};

/// Concurrent senders: enough to keep requests in every stage of the path.
const CLIENTS: usize = 16;

/// An event whose body is about `pad` bytes larger than usual (0: the usual body).
pub fn padded_body(id: &str, pad: usize) -> String {
    let body = event_body(id, "gate_session.completed");
    if pad == 0 {
        return body;
    }
    let open = body.rfind('}').expect("a JSON object");
    format!(r#"{},"pad":"{}"}}"#, &body[..open], "x".repeat(pad))
}

/// Senders of distinct signed events, and the ids that got a 2xx with their bodies.
pub struct Load {
    acked: Arc<Mutex<HashMap<String, Bytes>>>,
    senders: tokio::task::JoinSet<()>,
}

impl Load {
    /// Sends from [`CLIENTS`] tasks until `stop` or until the relay goes away. A request in
    /// hand is never abandoned for `stop`: a 2xx that arrived is always counted as acknowledged.
    pub fn start(addr: SocketAddr, stop: CancellationToken, pad: usize) -> Self {
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let mut senders = tokio::task::JoinSet::new();
        let url = format!("http://{addr}{PATH}");
        for _ in 0..CLIENTS {
            let (acked, url, stop) = (Arc::clone(&acked), url.clone(), stop.clone());
            let client = http_client();
            senders.spawn(async move {
                while !stop.is_cancelled() {
                    let id = unique("evt");
                    let body = Bytes::from(padded_body(&id, pad));
                    let request = http::Request::post(&url)
                        .header("Gate-Signature", sign(SECRET, now(), &body))
                        .body(http_body_util::Full::new(body.clone()))
                        .expect("request");
                    match client.request(request).await {
                        Ok(response) if response.status().is_success() => {
                            acked.lock().expect("lock").insert(id, body);
                        }
                        Ok(_) => {}
                        Err(_) => break, // the relay is gone
                    }
                }
            });
        }
        Self { acked, senders }
    }

    /// Ids acknowledged so far.
    pub fn count(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    /// Once the relay is dead (and `stop` cancelled): waits for every sender to see it, then
    /// returns what was acknowledged.
    pub async fn finish(self) -> HashMap<String, Bytes> {
        tokio::time::timeout(super::WAIT, self.senders.join_all())
            .await
            .expect("every sender saw the relay go");
        self.acked.lock().expect("lock").clone()
    }
}
