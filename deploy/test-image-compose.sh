# shellcheck shell=bash
# shellcheck disable=SC2154 # $run, $work, $image, $py, $venv, $test_secret: set by the caller
# The compose part of deploy/test-image.sh, which sources it after the image and kube play checks
# (its helpers, variables and cleanup trap apply here). Not a script of its own.
#
# Runs deploy/compose/docker-compose.yml unchanged but for an override file (written below):
# - Images: none of the compose file's can be pulled here. gate-relay uses the image built above;
#   RabbitMQ and Prometheus, when their tags are not in local storage, are stand-ins built on the
#   debootstrap base from Debian's packages and tagged with the compose file's names: RabbitMQ
#   3.10.8 with the management plugin (the compose file names 3.13, which has no Debian package)
#   and Prometheus 2.42.0 (it names v2.53.0).
# - Grafana: left out (a profile in the override), since it has neither a Debian package nor a
#   reachable image; deploy/check.sh validates its provisioning files and the dashboard.
# - Ports: every published port moves to a free one (5672 is the host's RabbitMQ, and other
#   processes on this machine may hold 8080, 9090 or 15672); the project is named after the run.
# Then: every service's own healthcheck passes (podman 4.3 ignores `condition: service_healthy`
# and, without systemd, schedules no healthchecks: the script runs them), /readyz is 200,
# `send-test` puts an event in the quorum queue fulfilment-test, Prometheus reports the relay's
# target up and the accepted event in gate_relay_requests_total, the relay exits 0 on stop, and
# `down -v` leaves no container, pod, network or volume.

# ---------------------------------------------------------------------------------------------
step "compose: stand-ins for the compose file's RabbitMQ and Prometheus images"
compose_file=deploy/compose/docker-compose.yml
read -r rabbitmq_image prometheus_image grafana_image < <("$py" - "$compose_file" <<'PY'
import sys, yaml
services = yaml.safe_load(open(sys.argv[1]))["services"]
def qualified(name):
    # Docker Hub's short names, as podman resolves them in local storage.
    first = name.split("/")[0]
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"
print(*(qualified(services[s]["image"]) for s in ("rabbitmq", "prometheus", "grafana")))
PY
)
[ -n "${grafana_image:-}" ] || fail "could not read the images of $compose_file"
# Debian's rabbitmq-server, run the way the official image runs it: as the rabbitmq user, logs on
# stdout, the management plugin enabled, the node named rabbit@ the container's hostname.
stand_in_built "$rabbitmq_image" "Debian's rabbitmq-server" <<'CONTAINERFILE'
ARG BASE
FROM $BASE
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server \
    && rm -rf /var/lib/apt/lists/* \
    && rabbitmq-plugins enable --offline rabbitmq_management \
    && install -d -o rabbitmq -g rabbitmq /etc/rabbitmq/conf.d
ENV RABBITMQ_LOGS=-
USER rabbitmq
WORKDIR /var/lib/rabbitmq
EXPOSE 5672 15672
CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
CONTAINERFILE
# Debian's prometheus, with the official image's entrypoint, user and working directory.
stand_in_built "$prometheus_image" "Debian's prometheus" <<'CONTAINERFILE'
ARG BASE
FROM $BASE
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o nobody -g nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
CONTAINERFILE
echo "--  $grafana_image: not run (no Debian package, no reachable registry; see the override)"

# ---------------------------------------------------------------------------------------------
step "compose: up (rabbitmq, gate-relay, prometheus; grafana left out by a profile)"
amqp_port=$(free_port)
management_port=$(free_port)
compose_webhook_port=$(free_port)
compose_admin_port=$(free_port)
prometheus_port=$(free_port)
cat >"$work/compose.override.yml" <<YAML
services:
  rabbitmq:
    ports: !override
      - "127.0.0.1:$amqp_port:5672"
      - "127.0.0.1:$management_port:15672"
  gate-relay:
    image: $image
    ports: !override
      - "127.0.0.1:$compose_webhook_port:8080"
      - "127.0.0.1:$compose_admin_port:9090"
  prometheus:
    ports: !override
      - "127.0.0.1:$prometheus_port:9090"
  grafana:
    profiles: [grafana]
YAML
# The stack's secrets, of this run (the compose file's defaults are fixed development values).
export GATE_RELAY_TEST_SECRETS="$test_secret"
export GATE_RELAY_LIVE_SECRETS="whsec_live_unused_0123456789"
export GATE_RELAY_ADMIN_TOKEN="test-image-token-$RANDOM$RANDOM"
compose=("$venv/bin/podman-compose" -p "$run" -f "$compose_file" -f "$work/compose.override.yml")
t0=$(now_ms)
"${compose[@]}" up -d --no-build >"$work/compose-up.log" 2>&1 ||
  { tail -n 30 "$work/compose-up.log"; fail "podman-compose up failed"; }
service_container() { podman ps -a -q --filter "label=io.podman.compose.project=$run" \
  --filter "label=com.docker.compose.service=$1"; }
rabbitmq_container=$(service_container rabbitmq)
relay_container=$(service_container gate-relay)
prometheus_container=$(service_container prometheus)
if [ -z "$rabbitmq_container" ] || [ -z "$relay_container" ] || [ -z "$prometheus_container" ]; then
  fail "podman-compose up did not create the three services: $(podman ps -a \
    --filter "label=io.podman.compose.project=$run" --format '{{.Names}}' | xargs)"
fi
[ -z "$(service_container grafana)" ] || fail "grafana was started despite its profile"
healthy() { podman healthcheck run "$1" >/dev/null 2>&1; }
compose_readyz_ok() { [ "$(http_status "http://127.0.0.1:$compose_admin_port/readyz")" = 200 ]; }
prometheus_ready() { [ "$(http_status "http://127.0.0.1:$prometheus_port/-/ready")" = 200 ]; }
# Each healthcheck run starts an Erlang VM for rabbitmq-diagnostics: first wait for the log line.
rabbitmq_started() { podman logs "$rabbitmq_container" 2>&1 | grep -q 'Server startup complete'; }
eventually 120 rabbitmq_started || fail "RabbitMQ did not start within 120 s"
eventually 60 healthy "$rabbitmq_container" || fail "RabbitMQ's healthcheck did not pass"
rabbitmq_ms=$(($(now_ms) - t0))
eventually 60 healthy "$relay_container" || fail "the relay's compose healthcheck did not pass"
eventually 60 compose_readyz_ok || fail "the relay's /readyz (published port) did not answer 200"
eventually 60 prometheus_ready || fail "Prometheus' /-/ready did not answer 200"
compose_up_ms=$(($(now_ms) - t0))
echo "ok  RabbitMQ healthy after $rabbitmq_ms ms; relay healthy and /readyz 200, Prometheus ready: $compose_up_ms ms from up"
rabbitmqctl_in() { podman exec "$rabbitmq_container" rabbitmqctl -q "$@"; }
rabbitmqctl_in authenticate_user gate-relay gate-relay-dev-only >/dev/null ||
  fail "the definitions' gate-relay user does not authenticate with config.toml's password"
echo "ok  RabbitMQ $(rabbitmqctl_in version) loaded the compose definitions (users, quorum queues)"

# ---------------------------------------------------------------------------------------------
step "compose: send-test through the relay, the message in fulfilment-test, Prometheus scraped it"
podman exec -e "GATE_WEBHOOK_SECRET=$test_secret" "$relay_container" gate-relay send-test \
  --url "http://127.0.0.1:8080/webhooks/0gate/test" --secret-env GATE_WEBHOOK_SECRET
compose_queue_has() { # queue, messages
  [ "$(rabbitmqctl_in list_queues name type messages --no-table-headers |
    awk -v q="$1" '$1 == q {print $2, $3}')" = "quorum $2" ]
}
eventually 10 compose_queue_has fulfilment-test 1 || fail "fulfilment-test does not hold the event"
echo "ok  the quorum queue fulfilment-test holds 1 message"
# The value of an instant query's single series, or nothing.
prometheus_value() {
  curl -s --max-time 2 -G "http://127.0.0.1:$prometheus_port/api/v1/query" --data-urlencode "query=$1" |
    "$py" -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if len(r) == 1 else "")' 2>/dev/null || true
}
prometheus_says() { [ "$(prometheus_value "$1")" = "$2" ]; }
# Scraped every 15 s (deploy/compose/prometheus.yml): a few intervals at most.
eventually 60 prometheus_says 'up{job="gate-relay"}' 1 ||
  fail "Prometheus: up{job=\"gate-relay\"} is not 1 ($(prometheus_value 'up{job="gate-relay"}'))"
accepted='gate_relay_requests_total{job="gate-relay",endpoint="test",outcome="accepted"}'
eventually 60 prometheus_says "$accepted" 1 ||
  fail "Prometheus has not scraped the accepted event: $accepted = '$(prometheus_value "$accepted")'"
echo "ok  Prometheus: up{job=\"gate-relay\"} = 1, $accepted = 1"

# ---------------------------------------------------------------------------------------------
step "compose: the relay stops with exit 0, then down -v leaves nothing"
t0=$(now_ms)
podman stop -t 30 "$relay_container" >/dev/null
compose_stop_ms=$(($(now_ms) - t0))
code=$(podman inspect --format '{{.State.ExitCode}}' "$relay_container")
[ "$code" = 0 ] || fail "the compose relay exited $code after SIGTERM"
echo "ok  exit 0 after $compose_stop_ms ms"
t0=$(now_ms)
"${compose[@]}" down -v -t 30 >"$work/compose-down.log" 2>&1 ||
  { tail -n 30 "$work/compose-down.log"; fail "podman-compose down failed"; }
compose_down_ms=$(($(now_ms) - t0))
left=$(compose_leftovers | xargs)
[ -z "$left" ] || fail "podman-compose down -v left: $left"
compose=()
echo "ok  down -v in $compose_down_ms ms: no container, pod, network or volume left"
