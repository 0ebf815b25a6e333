"""Checks deploy/nginx/gate-relay.conf with Debian's nginx; deploy/check.sh runs it.

Usage: check.py WORKDIR (an empty throwaway directory; nothing outside it is written).

1. `nginx -t` on the file as shipped (TLS included, a throwaway self-signed certificate), inside a
   throwaway prefix, with 127.0.0.1x stand-ins for the replica names gate-relay-0/1/2 (nginx
   resolves upstream names when it loads a config; they resolve only inside a deployment).
2. Its behaviour: the same file with the listener on plain HTTP and the three replicas replaced by
   stand-in HTTP servers on free loopback ports (they record what arrives and answer their name),
   nginx run in the foreground and stopped at the end, also on failure. Checked: one id always
   meets one replica and ids use all three; requests without the header all meet one replica;
   body bytes arrive unchanged (chunked ones with a Content-Length); the body limit; a request
   that reached a replica which then died is a 502 and never resent to another; when a replica
   refuses connections only its ids move, each to one other replica, and the others stay put.
"""

import hashlib
import http.client
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time

CONF = "deploy/nginx/gate-relay.conf"
PATH = "/webhooks/0gate/live"
MIB = 1024 * 1024


class Replica:
    """A stand-in relay: records (event id, body sha256, content-length) and answers its name."""

    def __init__(self, name):
        self.name, self.seen, self.conns = name, [], []
        replica = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the relay speaks it
            # The head and the answer go out in two writes: without this, Nagle's algorithm and
            # delayed ACKs cost every request about 40 ms.
            disable_nagle_algorithm = True

            def setup(self):
                super().setup()
                replica.conns.append(self.connection)

            def do_POST(self):
                length = self.headers.get("Content-Length")
                body = self.rfile.read(int(length or 0))
                event_id = self.headers.get("X-0bit-Event-Id")
                replica.seen.append((event_id, hashlib.sha256(body).hexdigest(), length))
                if self.headers.get("X-Test-Die") == replica.name:
                    # Got the whole request, then gone without an answer (a kill -9 mid-request).
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                answer = replica.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        """Refuse connections from now on and drop the open ones."""
        self.server.shutdown()
        self.server.server_close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrapper(work, name, include, extra=""):
    """A minimal nginx.conf around the include, every path inside the throwaway prefix."""
    temps = "".join(f"    {t}_temp_path {work}/{t};\n" for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    path = f"{work}/{name}"
    with open(path, "w") as f:
        f.write(f"pid {work}/{name}.pid;\nerror_log {work}/error.log;\nworker_processes 1;\n{extra}"
                f"events {{}}\nhttp {{\n    access_log off;\n{temps}    include {include};\n}}\n")
    return path


def syntax(work, text):
    tls = f"{work}/tls"
    os.makedirs(tls, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=hooks.example.com", "-days", "1",
                    "-keyout", f"{tls}/privkey.pem", "-out", f"{tls}/fullchain.pem"],
                   check=True, capture_output=True)
    text = re.sub(r"gate-relay-(\d):8080", r"127.0.0.1\1:8080", text)
    text = text.replace("/etc/nginx/tls/hooks.example.com", tls)
    with open(f"{work}/syntax.conf", "w") as f:
        f.write(text)
    conf = wrapper(work, "nginx-t.conf", f"{work}/syntax.conf")
    out = subprocess.run(["nginx", "-t", "-p", work, "-c", conf, "-e", f"{work}/error.log"],
                         capture_output=True, text=True)
    print(out.stderr.strip())
    if out.returncode != 0:
        sys.exit(f"nginx -t failed on {CONF}")


def post(port, event_id=None, body=b"{}", chunked=False, **headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    if event_id is not None:
        headers["X-0bit-Event-Id"] = event_id
    if chunked:
        conn.putrequest("POST", PATH)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(body), 1000):
            part = body[i:i + 1000]
            conn.send(b"%x\r\n%s\r\n" % (len(part), part))
        conn.send(b"0\r\n\r\n")
    else:
        conn.request("POST", PATH, body=body, headers=headers)
    resp = conn.getresponse()
    answer = (resp.status, resp.read().decode(errors="replace"))
    conn.close()
    return answer


class Nginx:
    """nginx in the foreground on the behaviour copy; stopped by stop(), also on failure."""

    def __init__(self, work, text, replicas, tag):
        self.port = free_port()
        for i, r in enumerate(replicas):
            text = text.replace(f"gate-relay-{i}:8080", f"127.0.0.1:{r.port}")
        text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{self.port};")
        text = re.sub(r"\n\s*(listen \[::\]:443 ssl|ssl_\w+)[^\n]*;", "", text)
        with open(f"{work}/behaviour-{tag}.conf", "w") as f:
            f.write(text)
        conf = wrapper(work, f"nginx-{tag}.conf", f"{work}/behaviour-{tag}.conf", "daemon off;\n")
        self.proc = subprocess.Popen(["nginx", "-p", work, "-c", conf, "-e", f"{work}/error.log"])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    sys.exit(f"nginx did not listen within 10 s (see {work}/error.log)")
                time.sleep(0.05)  # polling a bounded condition, not a synchronisation sleep

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def check(cond, what):
    if not cond:
        sys.exit(f"{CONF}: {what}")
    print(f"ok  {what}")


def behaviour(work, text):
    replicas = [Replica(f"gate-relay-{i}") for i in range(3)]
    ids = [f"evt_check_{i:03}" for i in range(60)]
    nginx = Nginx(work, text, replicas, "all-up")
    try:
        home = {}
        for event_id in ids:
            answers = {post(nginx.port, event_id) for _ in range(3)}
            assert len(answers) == 1, f"{event_id} met several replicas: {answers}"
            assert next(iter(answers))[0] == 200, f"{event_id}: {answers}"
            home[event_id] = next(iter(answers))[1]
        spread = {r.name: sum(1 for h in home.values() if h == r.name) for r in replicas}
        check(all(spread.values()), f"{len(ids)} ids, 3 deliveries each, each id on one replica; per replica {spread}")
        nameless = {post(nginx.port)[1] for _ in range(6)}
        check(len(nameless) == 1, f"6 requests without X-0bit-Event-Id all meet one replica: {sorted(nameless)}")

        raw = bytes(range(256)) * 64 + b'{"id":"evt_raw"}\r\n\xff\xfe'
        digest = hashlib.sha256(raw).hexdigest()
        status, name = post(nginx.port, "evt_raw", raw, **{"Content-Type": "application/json; charset=latin1"})
        got = next(r for r in replicas if r.name == name).seen[-1]
        check(status == 200 and got[1] == digest, "body bytes arrive unchanged (binary, CR LF, invalid UTF-8)")
        status, name = post(nginx.port, "evt_chunked", raw, chunked=True)
        got = next(r for r in replicas if r.name == name).seen[-1]
        check(status == 200 and got[1] == digest and got[2] == str(len(raw)),
              "a chunked body arrives whole, with a Content-Length (proxy_request_buffering on)")

        before = sum(len(r.seen) for r in replicas)
        check(post(nginx.port, "evt_max", b"x" * MIB)[0] == 200, "a body of exactly 1 MiB (max_body_bytes) passes")
        check(post(nginx.port, "evt_big", b"x" * (MIB + 1))[0] == 413 and
              sum(len(r.seen) for r in replicas) == before + 1, "a body of 1 MiB + 1 byte: 413 from nginx, no replica sees it")

        victim = home[ids[0]]
        status, _ = post(nginx.port, ids[0], **{"X-Test-Die": victim})
        arrivals = [r.name for r in replicas for s in r.seen if s[0] == ids[0]]
        check(status == 502 and arrivals.count(victim) == 4 and len(arrivals) == 4,
              "a POST whose replica dies after receiving it: 502, not resent to another replica")
    finally:
        nginx.stop()

    # A fresh nginx (no cached upstream connections) with one replica refusing connections.
    down = next(r for r in replicas if r.name == home[ids[0]])
    down.stop()
    nginx = Nginx(work, text, replicas, "one-down")
    try:
        moved, stayed = {}, 0
        for event_id in ids:
            answers = {post(nginx.port, event_id) for _ in range(2)}
            assert len(answers) == 1, f"{event_id} met several replicas with {down.name} down: {answers}"
            status, name = next(iter(answers))
            assert status == 200, f"{event_id}: {status} with {down.name} down"
            if home[event_id] == down.name:
                moved[event_id] = name
            else:
                assert name == home[event_id], f"{event_id} moved from {home[event_id]} to {name} though its replica is up"
                stayed += 1
        check(moved and down.name not in moved.values(),
              f"{down.name} refusing: its {len(moved)} ids retried on the next replica (200), each on one; "
              f"the other {stayed} ids stayed where they were")
    finally:
        nginx.stop()
        for r in replicas:
            if r is not down:
                r.stop()


def main():
    work = sys.argv[1]
    text = open(CONF).read()
    syntax(work, text)
    behaviour(work, text)


if __name__ == "__main__":
    main()
