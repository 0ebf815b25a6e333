//! A private RabbitMQ node per test, for faults that must not touch the shared broker on
//! 127.0.0.1:5672 (other tests use it concurrently): restarting its application, setting a
//! resource alarm.
//!
//! `RabbitNode::start()` runs Debian's `rabbitmq-server` in the foreground as a child process
//! (as the `rabbitmq` user, in its own process group), with its own node name, AMQP port,
//! distribution port and directory, and returns once the node accepts AMQP connections. Drop
//! stops it (`rabbitmqctl -n NODE stop`, then SIGKILL to its process group and to the VM's pid
//! if either is still alive) and removes its directory, also when the test panics. A test
//! process killed with SIGKILL leaves its node behind: `rabbitmqctl -n NODE stop` removes it
//! (its name is `grtest-<test pid>-<n>@localhost`).
//!
//! Needs root (or the `rabbitmq` user): the node runs as `rabbitmq`, and `rabbitmqctl` shares
//! the Erlang cookie in /var/lib/rabbitmq.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};

use super::{Topology, unique};

/// A node starts in about 5 s on an idle machine; several at once on 2 shared cores take
/// longer. Only reached when something is wrong.
const START_DEADLINE: Duration = Duration::from_secs(90);
/// One `rabbitmqctl` call takes 0.6–2 s (the CLI is an Elixir escript); `start_app` waits for
/// the application to boot.
const CTL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful `stop` may take before the process group is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Polling interval while waiting for a node to come up or go down.
const POLL: Duration = Duration::from_millis(200);
/// RabbitMQ's default `vm_memory_high_watermark`, restored when an alarm is cleared.
const DEFAULT_MEMORY_WATERMARK: &str = "0.4";
const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const RABBITMQ_HOME: &str = "/var/lib/rabbitmq";

/// A RabbitMQ node of its own: a name, an AMQP port, a distribution port, a directory.
pub struct RabbitNode {
    name: String,
    amqp_port: u16,
    dist_port: u16,
    dir: Option<tempfile::TempDir>,
    /// The `rabbitmq-server` script; the Erlang VM is its child, in the same process group.
    server: std::sync::Mutex<Child>,
}

impl std::fmt::Debug for RabbitNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitNode")
            .field("name", &self.name)
            .field("amqp_port", &self.amqp_port)
            .field("dist_port", &self.dist_port)
            .finish_non_exhaustive()
    }
}

/// A port free now (bound to port 0, then released). Another process may take it before the
/// node binds it; the node then fails to start and `start` says so.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The uid and gid of the `rabbitmq` user.
fn rabbitmq_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "rabbitmq"])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "no `rabbitmq` user: install RabbitMQ with `apt-get install -y rabbitmq-server`"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

/// Runs `command` to its end or until `timeout`, killing it then; returns status and output.
fn run_bounded(mut command: Command, timeout: Duration) -> Result<String, String> {
    let what = format!("{command:?}");
    let out_file = tempfile::tempfile().expect("temp file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().expect("clone file"))
        .stderr(out_file.try_clone().expect("clone file"))
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    {
        use std::io::{Read, Seek};
        let mut file = out_file;
        file.rewind().expect("rewind");
        file.read_to_string(&mut output).expect("read output");
    }
    match status {
        Some(s) if s.success() => Ok(output),
        Some(s) => Err(format!("{what} failed ({s}): {output}")),
        None => Err(format!(
            "{what} did not finish within {timeout:?}: {output}"
        )),
    }
}

impl RabbitNode {
    /// Starts a private node and returns once it accepts AMQP connections. Panics, with the
    /// end of the node's log, if it does not within [`START_DEADLINE`].
    pub async fn start() -> Self {
        let node = tokio::task::spawn_blocking(Self::spawn)
            .await
            .expect("spawning the node does not panic");
        let deadline = Instant::now() + START_DEADLINE;
        node.await_startup(deadline).await;
        node.await_amqp(deadline).await;
        node
    }

    /// Writes the node's configuration and starts `rabbitmq-server`; does not wait.
    fn spawn() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "grtest-{}-{}@localhost",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (amqp_port, dist_port) = (free_port(), free_port());
        let dir = tempfile::Builder::new()
            .prefix("rabbit-node.")
            .tempdir()
            .expect("tempdir");
        let path = dir.path();
        std::fs::write(
            path.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{amqp_port}\nloopback_users = none\n"),
        )
        .expect("write rabbitmq.conf");
        std::fs::write(path.join("enabled_plugins"), "[].\n").expect("write enabled_plugins");
        // The node runs as `rabbitmq` and dies silently if it cannot write its directory.
        let (uid, gid) = rabbitmq_ids();
        for entry in [
            path.to_path_buf(),
            path.join("rabbitmq.conf"),
            path.join("enabled_plugins"),
        ] {
            std::os::unix::fs::chown(&entry, Some(uid), Some(gid)).unwrap_or_else(|e| {
                panic!(
                    "chown {} to rabbitmq ({e}): private nodes need root",
                    entry.display()
                )
            });
        }
        let log = std::fs::File::create(path.join("server.out")).expect("create server.out");
        let env = |file: &str| path.join(file).into_os_string();
        let mut command = Command::new(RABBITMQ_SERVER);
        command
            .current_dir(path) // an erl_crash.dump lands here, not in /var/lib/rabbitmq
            .env("HOME", RABBITMQ_HOME) // where the shared Erlang cookie is
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_NODE_PORT", amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", env("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", env("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", env("mnesia"))
            .env("RABBITMQ_LOG_BASE", env("log"))
            .env("RABBITMQ_PID_FILE", env("pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        {
            use std::os::unix::process::CommandExt;
            // Its own process group, so Drop can kill the script and the VM together.
            command.uid(uid).gid(gid).process_group(0);
        }
        let server = command.spawn().unwrap_or_else(|e| {
            panic!("start {RABBITMQ_SERVER} ({e}): is rabbitmq-server installed?")
        });
        Self {
            name,
            amqp_port,
            dist_port,
            dir: Some(dir),
            server: std::sync::Mutex::new(server),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    pub fn dist_port(&self) -> u16 {
        self.dist_port
    }

    /// The node's directory (its config, `mnesia/`, `log/`, `server.out`).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// `host:port` of the AMQP listener (for a [`super::BrokerProxy`] in front of it).
    pub fn amqp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.amqp_port)
    }

    /// `rabbitmqctl -n NODE args…`, bounded by [`CTL_TIMEOUT`]; its output, or what failed.
    pub async fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new("rabbitmqctl");
        command.arg("-n").arg(&self.name).args(args);
        tokio::task::spawn_blocking(move || run_bounded(command, CTL_TIMEOUT))
            .await
            .expect("rabbitmqctl runner does not panic")
    }

    /// As [`RabbitNode::try_ctl`]; panics if the command fails.
    pub async fn ctl(&self, args: &[&str]) -> String {
        self.try_ctl(args)
            .await
            .unwrap_or_else(|e| panic!("on node {}: {e}", self.name))
    }

    /// Stops the RabbitMQ application (the Erlang node stays up): every connection closes and
    /// the AMQP port refuses new ones. Durable queues and persistent messages survive.
    pub async fn stop_app(&self) {
        self.ctl(&["stop_app"]).await;
    }

    /// Starts the application again; returns once it accepts AMQP connections.
    pub async fn start_app(&self) {
        self.ctl(&["start_app"]).await;
        self.await_amqp(Instant::now() + START_DEADLINE).await;
    }

    /// Raises (`true`: memory high watermark 0) or clears (`true`: RabbitMQ's default
    /// watermark) a memory alarm; returns once the node reports the alarm as set or cleared.
    /// While it is set the broker blocks every connection that publishes
    /// (`connection.blocked`).
    pub async fn set_memory_alarm(&self, on: bool) {
        let watermark = if on { "0" } else { DEFAULT_MEMORY_WATERMARK };
        self.ctl(&["set_vm_memory_high_watermark", watermark]).await;
        let deadline = Instant::now() + START_DEADLINE;
        while self.memory_alarm().await != on {
            assert!(
                Instant::now() < deadline,
                "node {}: memory alarm still {} after setting the watermark to {watermark}",
                self.name,
                if on { "off" } else { "on" }
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the node has a memory alarm in effect.
    pub async fn memory_alarm(&self) -> bool {
        self.ctl(&["eval", "rabbit_alarm:get_alarms()."])
            .await
            .contains("resource_limit,memory")
    }

    /// A connection to this node.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.amqp_url(), ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("connect to node {}: {e}", self.name))
    }

    /// Declares a test's durable topic exchange and a durable queue bound to everything on it,
    /// on this node (as `Topology::declare` does on the shared broker).
    pub async fn topology(
        &self,
        name: &str,
        extra_queue_args: &[(&'static str, AMQPValue)],
    ) -> Topology {
        let exchange = unique(&format!("gate.test.{name}"));
        let queue = unique(&format!("gate.test.{name}.q"));
        let topology = self.attach(exchange, queue).await;
        let channel = &topology.channel;
        channel
            .exchange_declare(
                topology.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
        let mut args = FieldTable::default();
        for (k, v) in extra_queue_args {
            args.insert((*k).into(), v.clone());
        }
        channel
            .queue_declare(
                topology.queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .expect("declare queue");
        channel
            .queue_bind(
                topology.queue.as_str().into(),
                topology.exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind queue");
        topology
    }

    /// The same exchange and queue on a fresh connection (after a restart closed the old one).
    pub async fn reattach(&self, topology: &Topology) -> Topology {
        self.attach(topology.exchange.clone(), topology.queue.clone())
            .await
    }

    async fn attach(&self, exchange: String, queue: String) -> Topology {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.expect("channel");
        Topology {
            exchange,
            queue,
            channel,
            _connection: connection,
        }
    }

    /// Polls `await_startup` (it says "not running" until the node registers with epmd).
    async fn await_startup(&self, deadline: Instant) {
        loop {
            let outcome = self.try_ctl(&["await_startup", "--timeout", "10"]).await;
            let Err(error) = outcome else { return };
            self.assert_alive_before(deadline, &error);
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until an AMQP handshake succeeds.
    async fn await_amqp(&self, deadline: Instant) {
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_secs(5),
                Connection::connect(&self.amqp_url(), ConnectionProperties::default()),
            )
            .await;
            match attempt {
                Ok(Ok(connection)) => {
                    let _ = connection.close(200, "ready".into()).await;
                    return;
                }
                Ok(Err(e)) => self.assert_alive_before(deadline, &e.to_string()),
                Err(_) => self.assert_alive_before(deadline, "AMQP handshake timed out"),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn assert_alive_before(&self, deadline: Instant, last_error: &str) {
        let log = || {
            let text = std::fs::read(self.dir().join("server.out")).unwrap_or_default();
            let tail = &text[text.len().saturating_sub(4000)..];
            String::from_utf8_lossy(tail).into_owned()
        };
        let exited = self
            .server
            .lock()
            .expect("no panics while holding the lock")
            .try_wait()
            .expect("wait for rabbitmq-server");
        if let Some(status) = exited {
            panic!(
                "node {} exited ({status}) while starting ({last_error}); its output:\n{}",
                self.name,
                log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "node {} not ready within {START_DEADLINE:?} ({last_error}); its output:\n{}",
            self.name,
            log()
        );
    }

    /// The Erlang VM's pid, from the pid file the node writes.
    fn vm_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir().join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let vm = self.vm_pid();
        let mut stop = Command::new("rabbitmqctl");
        stop.args(["-n", &self.name, "stop"]);
        let stopped = run_bounded(stop, STOP_TIMEOUT);
        let server = self
            .server
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut exited = false;
        if stopped.is_ok() {
            // The script exits once it has reaped the halted VM; killing it before that would
            // leave the VM a zombie for init to reap.
            let deadline = Instant::now() + STOP_TIMEOUT;
            while !exited && Instant::now() < deadline {
                exited = !matches!(server.try_wait(), Ok(None));
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !exited {
            // Not reaped yet, so its pid (the group's id) cannot have been reused.
            kill(&format!("-{}", server.id()));
            let _ = server.wait();
        }
        // The VM is in that group unless something moved it; its pid may have been reused
        // once the script reaped it, so only a process with this node's name is killed.
        if let Some(pid) = vm {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let marker = format!("RABBITMQ_NODENAME={}\0", self.name);
            if environ
                .windows(marker.len())
                .any(|w| w == marker.as_bytes())
            {
                kill(&pid.to_string());
            }
        }
        if let Err(e) = stopped {
            eprintln!("node {}: graceful stop failed, killed: {e}", self.name);
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                eprintln!(
                    "node {}: removing {} failed: {e}",
                    self.name,
                    path.display()
                );
            }
        }
    }
}

/// SIGKILL to a pid, or to a process group as `-pgid`; an already gone target is fine.
fn kill(target: &str) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
