#!/usr/bin/env bash
# Opt-in (not in .ci/run: a cold run takes longer than CI should spend on it): builds
# deploy/docker/Dockerfile with podman and runs the image the way the shipped manifests do, against
# the host's RabbitMQ at 127.0.0.1:5672 (guest/guest). As root on Debian, from anywhere:
#
#   deploy/test-image.sh
#
# What it checks: the image builds (docker format, so HEALTHCHECK survives) with a stripped binary;
# it runs read-only, as uid 10001, with every capability dropped; /healthz and /readyz answer 200;
# a signed event sent with the image's own `gate-relay send-test` lands in a quorum queue; the
# image's HEALTHCHECK passes; `podman stop` drains and the relay exits 0; sled keeps the configured
# cache size (the container has compose's 512m limit). Then the same for the StatefulSet's pod
# spec with `podman kube play`. It prints the image size, the build time and the start-up time
# (deploy/README.md records them).
#
# How:
# - Base images: no image registry is reachable here, so when the Dockerfile's FROM images are not
#   in local storage it makes stand-ins with `debootstrap --variant=minbase bookworm` (the rootfs
#   tarball is cached under ${XDG_CACHE_HOME:-$HOME/.cache}/gate-relay-test-image; the images it
#   tags are removed at the end). rust:1-bookworm's stand-in has ca-certificates and no Rust.
# - The binary: built on the host (`cargo build --profile dist`, the machine's toolchain and its
#   warm cargo cache) and passed in with the Dockerfile's test-only `--build-arg BINARY=prebuilt`.
#   Compiling inside the build (mounting ~/.cargo and ~/.rustup) would need a C toolchain in the
#   stand-in and a cold compile of every dependency on each machine: minutes longer, same binary.
# - The broker: a throwaway vhost with deploy/rabbitmq/definitions.json's topology, deleted at
#   the end. guest is loopback-only, so the relay runs with host networking, on free ports.
#
# Leaves nothing behind, also on failure (trap): the container, the image, the stand-in base
# images it made, the volume, the vhost and its temp directory.
set -euo pipefail

cd "$(dirname "$0")/.."
run="gate-relay-test-$(date +%s)-$$"
image="localhost/gate-relay-test:$run"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/gate-relay-test-image"
work=$(mktemp -d)
made_images=()
container=""
volume=""
vhost=""
started=$SECONDS

cleanup() {
  status=$?
  set +e
  if [ -n "$container" ]; then
    if [ "$status" -ne 0 ]; then
      echo "-- the relay's log (last 30 lines):"
      podman logs --tail 30 "$container" 2>&1
    fi
    podman rm -f -t 0 "$container" >/dev/null 2>&1
  fi
  podman rm -f -t 0 "$run-trim" >/dev/null 2>&1
  if [ -f "$work/pod.yaml" ]; then
    podman kube down "$work/pod.yaml" >/dev/null 2>&1
    podman pod rm -f -t 0 "$run-pod" >/dev/null 2>&1
    podman volume rm -f "$run-pod-config" >/dev/null 2>&1
  fi
  [ -n "$volume" ] && podman volume rm -f "$volume" >/dev/null 2>&1
  podman rmi -f "$image" >/dev/null 2>&1
  if [ -f "$work/images-before" ]; then
    podman images -a -q --no-trunc --filter dangling=true | sort |
      comm -13 "$work/images-before" - | xargs -r podman rmi -f >/dev/null 2>&1
  fi
  # Newest first: a committed image before the imported one it was made from.
  for ((i = ${#made_images[@]} - 1; i >= 0; i--)); do
    podman rmi -f "${made_images[i]}" >/dev/null 2>&1
  done
  [ -n "$vhost" ] && rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1
  rm -rf "$work"
  if [ "$status" -eq 0 ]; then
    echo "deploy/test-image.sh: passed in $((SECONDS - started)) s; everything it made is removed"
  else
    echo "deploy/test-image.sh: FAILED (exit $status); everything it made is removed" >&2
  fi
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() {
  printf 'deploy/test-image.sh: %s\n' "$*" >&2
  exit 1
}
# Milliseconds since the epoch, for the timings.
now_ms() { date +%s%3N; }
# Polls a command every 100 ms for at most $1 seconds.
eventually() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }

# ---------------------------------------------------------------------------------------------
step "tools: podman, debootstrap, curl, catatonit (the pause image of kube play)"
missing=()
for tool in podman debootstrap curl catatonit; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" uidmap fuse-overlayfs >/dev/null
fi
podman --version
# As root, podman raises RLIMIT_NOFILE and RLIMIT_NPROC in every container to its defaults; where
# this shell's hard limits are lower (inside another container, as here) runc fails with "error
# setting rlimit type 7" (or 6). A containers.conf of this run's own keeps this shell's limits;
# NPROC no higher than kernel.pid_max, since this sandbox refused even the shell's own value above it.
nproc=$(ulimit -Hu)
pid_max=$(cat /proc/sys/kernel/pid_max)
if [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; then nproc=$pid_max; fi
cat >"$work/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=$nproc:$nproc"]
CONF
export CONTAINERS_CONF="$work/containers.conf"
# PyYAML for the pod spec: from deploy/check.sh's venv when it is there.
py="${XDG_CACHE_HOME:-$HOME/.cache}/gate-relay-deploy-check/venv/bin/python"
[ -x "$py" ] || py=python3
"$py" -c 'import yaml' 2>/dev/null || fail "PyYAML missing: run deploy/check.sh once (it makes a venv with it)"
timeout 20 rabbitmqctl -q list_vhosts >/dev/null || fail "no RabbitMQ node answers rabbitmqctl"

# ---------------------------------------------------------------------------------------------
step "the binary: cargo build --profile dist (stripped of debug info)"
t0=$(now_ms)
cargo build --quiet --profile dist --locked --bin gate-relay
binary="${CARGO_TARGET_DIR:-target}/dist/gate-relay"
mkdir "$work/prebuilt"
cp "$binary" "$work/prebuilt/gate-relay"
echo "built in $(($(now_ms) - t0)) ms: $(du -h "$binary" | cut -f1)"

# ---------------------------------------------------------------------------------------------
step "base images: the Dockerfile's FROM names, or local stand-ins"
rootfs_tar="$cache/bookworm-minbase.tar"
stand_in() { # name, packages to purge from the minbase rootfs
  local name=$1
  shift
  if podman image exists "$name"; then
    echo "ok  $name is in local storage"
    return
  fi
  if [ ! -s "$rootfs_tar" ]; then
    echo "debootstrap --variant=minbase bookworm (cached in $cache)"
    mkdir -p "$cache"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$work/rootfs" \
      http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
      { tail -n 20 "$work/debootstrap.log"; fail "debootstrap failed"; }
    tar -C "$work/rootfs" -cf "$rootfs_tar.partial" . && mv "$rootfs_tar.partial" "$rootfs_tar"
    rm -rf "$work/rootfs"
  fi
  local imported
  # The same tarball imports as the same image id each time: removed only at the end.
  imported=$(podman import --quiet "$rootfs_tar")
  made_images+=("$imported")
  if [ "$#" -gt 0 ]; then
    # The slim runtime base has no CA bundle: the Dockerfile must copy it from the builder.
    podman run --name "$run-trim" --network none "$imported" \
      sh -c "dpkg --purge --force-depends $* >/dev/null 2>&1; rm -rf /var/cache/apt/*"
    # Flattened (export, import): a commit on top would carry the purged files in its lower layer.
    podman export "$run-trim" | podman import --quiet - "$name" >/dev/null
    podman rm -f "$run-trim" >/dev/null
  else
    podman tag "$imported" "$name"
  fi
  made_images+=("$name")
  echo "ok  $name: a stand-in made here"
}
stand_in docker.io/library/rust:1-bookworm
stand_in docker.io/library/debian:bookworm-slim ca-certificates openssl

# ---------------------------------------------------------------------------------------------
step "podman build --format docker"
# The build leaves the builder stage behind as an untagged image: remember what was there.
podman images -a -q --no-trunc --filter dangling=true | sort >"$work/images-before"
t0=$(now_ms)
podman build --quiet --format docker --pull=never --build-arg BINARY=prebuilt \
  --build-context "prebuilt=$work/prebuilt" -f deploy/docker/Dockerfile -t "$image" . >/dev/null
build_ms=$(($(now_ms) - t0))
size=$(podman image inspect --format '{{.Size}}' "$image")
base_size=$(podman image inspect --format '{{.Size}}' docker.io/library/debian:bookworm-slim)
healthcheck=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$image")
case "$healthcheck" in "" | null) fail "the image has no HEALTHCHECK" ;; esac
user=$(podman image inspect --format '{{.Config.User}}' "$image")
[ "$user" = "10001:10001" ] || fail "the image runs as '$user', not 10001:10001"
in_image=$(podman run --rm --entrypoint stat "$image" -c %s /usr/local/bin/gate-relay)
echo "built in $build_ms ms; image $((size / 1000000)) MB ($(((size - base_size) / 1000000)) MB on its base), binary $((in_image / 1000000)) MB, user $user, HEALTHCHECK kept"

# ---------------------------------------------------------------------------------------------
step "the broker: a throwaway vhost with deploy/rabbitmq/definitions.json's topology"
vhost="$run"
python3 - "$vhost" "$work/definitions.json" <<'PY'
import json, sys
vhost, out = sys.argv[1], sys.argv[2]
d = json.load(open("deploy/rabbitmq/definitions.json"))
d["vhosts"] = [{"name": vhost}]
for key in ("exchanges", "queues", "bindings"):
    for item in d[key]:
        item["vhost"] = vhost
json.dump(d, open(out, "w"))
PY
rabbitmqctl -q add_vhost "$vhost"
rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*'
# Debian's rabbitmqctl runs as the rabbitmq user: it must be able to read the file.
chmod 0755 "$work" && chmod 0644 "$work/definitions.json"
rabbitmqctl -q import_definitions "$work/definitions.json" >/dev/null
queue_has() { # queue, messages
  [ "$(rabbitmqctl -q list_queues -p "$vhost" name messages --no-table-headers |
    awk -v q="$1" '$1 == q {print $2}')" = "$2" ]
}
eventually 10 queue_has fulfilment-test 0 || fail "the queue fulfilment-test was not imported"
echo "ok  vhost $vhost"

# ---------------------------------------------------------------------------------------------
step "podman run --read-only --cap-drop ALL, as the image's user, host network"
webhook_port=$(free_port)
admin_port=$(free_port)
sed -e "s|^listen = \"0.0.0.0:8080\"|listen = \"127.0.0.1:$webhook_port\"|" \
  -e "s|^listen = \"0.0.0.0:9090\"|listen = \"127.0.0.1:$admin_port\"|" \
  -e "s|^url = .*|url = \"amqp://guest:guest@127.0.0.1:5672/$vhost\"|" \
  deploy/compose/config.toml >"$work/config.toml"
chmod 0644 "$work/config.toml"
grep -q "127.0.0.1:$admin_port" "$work/config.toml" || fail "could not point the config at free ports"
test_secret="whsec_test_image_$RANDOM$RANDOM"
volume="$run-store"
podman volume create "$volume" >/dev/null
t0=$(now_ms)
container=$(podman run -d --name "$run" --network host --read-only --cap-drop ALL --memory 512m \
  --security-opt no-new-privileges -v "$work/config.toml:/etc/gate-relay/config.toml:ro" \
  -v "$volume:/var/lib/gate-relay" -e "GATE_RELAY_LIVE_SECRETS=whsec_live_unused_0123456789" \
  -e "GATE_RELAY_TEST_SECRETS=$test_secret" -e "GATE_RELAY_ADMIN_TOKEN=test-image-token-$RANDOM" \
  -e "GATE_RELAY_HEALTHCHECK_PORT=$admin_port" "$image")
healthz_ok() { [ "$(http_status "http://127.0.0.1:$admin_port/healthz")" = 200 ]; }
readyz_ok() { [ "$(http_status "http://127.0.0.1:$admin_port/readyz")" = 200 ]; }
eventually 30 healthz_ok || fail "/healthz did not answer 200 within 30 s"
healthz_ms=$(($(now_ms) - t0))
eventually 30 readyz_ok || fail "/readyz did not answer 200 within 30 s"
readyz_ms=$(($(now_ms) - t0))
uid=$(podman top "$container" huser | tail -n 1)
[ "$uid" = 10001 ] || fail "the relay runs as uid '$uid'"
echo "ok  /healthz 200 after $healthz_ms ms, /readyz 200 after $readyz_ms ms (from podman run); uid $uid"

# ---------------------------------------------------------------------------------------------
step "send-test through the relay, then the message in fulfilment-test"
podman exec -e "GATE_WEBHOOK_SECRET=$test_secret" "$container" gate-relay send-test \
  --url "http://127.0.0.1:$webhook_port/webhooks/0gate/test" --secret-env GATE_WEBHOOK_SECRET
eventually 10 queue_has fulfilment-test 1 || fail "fulfilment-test does not hold the event"
echo "ok  fulfilment-test holds 1 message"
podman healthcheck run "$container" || fail "the image's HEALTHCHECK failed"
echo "ok  the image's HEALTHCHECK passes"

# ---------------------------------------------------------------------------------------------
step "podman stop: drains and exits 0"
t0=$(now_ms)
podman stop -t 30 "$container" >/dev/null
stop_ms=$(($(now_ms) - t0))
code=$(podman inspect --format '{{.State.ExitCode}}' "$container")
[ "$code" = 0 ] || fail "the relay exited $code after SIGTERM"
echo "ok  exit 0 after $stop_ms ms"
if podman logs "$container" 2>&1 | grep -q "cache capacity is limited"; then
  fail "sled capped its cache to the 512m limit: store.cache_capacity_bytes is above it"
fi
podman rm "$container" >/dev/null
container=""

# ---------------------------------------------------------------------------------------------
step "podman kube play: the StatefulSet's pod spec and the ConfigMap, as a Pod"
# A Pod made from the kustomize-free manifests: host network on free ports (guest is loopback-only),
# the test image, the Secret's keys as plain env, the claim as a podman volume, the memory limit
# kept. imagePullPolicy becomes Never: the image is local and no registry is reachable.
pod="$run-pod"
"$py" - "$work" "$pod" "$image" "$volume" "$webhook_port" "$admin_port" "$vhost" "$test_secret" <<'PY'
import sys, yaml
work, pod, image, volume, webhook, admin, vhost, secret = sys.argv[1:]
sts = yaml.safe_load(open("deploy/kubernetes/statefulset.yaml"))
cm = yaml.safe_load(open("deploy/kubernetes/configmap.yaml"))
config = (cm["data"]["config.toml"]
          .replace('"0.0.0.0:8080"', f'"127.0.0.1:{webhook}"')
          .replace('"0.0.0.0:9090"', f'"127.0.0.1:{admin}"'))
assert f"127.0.0.1:{admin}" in config, "the ConfigMap's listen addresses changed"
cm["data"]["config.toml"] = config
spec = sts["spec"]["template"]["spec"]
spec["hostNetwork"] = True
c = spec["containers"][0]
c["image"], c["imagePullPolicy"] = image, "Never"
c.pop("envFrom")
c["env"] = [
    {"name": "GATE_RELAY_LIVE_SECRETS", "value": "whsec_live_unused_0123456789"},
    {"name": "GATE_RELAY_TEST_SECRETS", "value": secret},
    {"name": "GATE_RELAY_ADMIN_TOKEN", "value": "test-image-token-0123456789"},
    {"name": "GATE_RELAY_AMQP_URL", "value": f"amqp://guest:guest@127.0.0.1:5672/{vhost}"},
]
for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
    if probe in c:
        c[probe]["httpGet"]["port"] = int(admin)
# Host network: podman refuses port mappings there, and the probes name the port by number.
c.pop("ports")
# A ConfigMap name of this run's own: kube play turns it into a volume of that name.
cm["metadata"]["name"] = f"{pod}-config"
for v in spec["volumes"]:
    if "configMap" in v:
        v["configMap"]["name"] = cm["metadata"]["name"]
claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
spec["volumes"].append({"name": claim, "persistentVolumeClaim": {"claimName": volume}})
doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "labels": sts["spec"]["template"]["metadata"]["labels"]}, "spec": spec}
yaml.safe_dump_all([cm, doc], open(f"{work}/pod.yaml", "w"))
PY
# kube play builds podman's pause image on first use: remove it at the end if this run made it.
if ! podman image exists "localhost/podman-pause:$(podman version --format '{{.Client.Version}}')-0"; then
  made_images+=("localhost/podman-pause:$(podman version --format '{{.Client.Version}}')-0")
fi
t0=$(now_ms)
podman kube play --quiet "$work/pod.yaml" >/dev/null
container="$pod-gate-relay"
eventually 30 readyz_ok || fail "/readyz in the pod did not answer 200 within 30 s"
echo "ok  /readyz 200 after $(($(now_ms) - t0)) ms (from podman kube play)"
podman exec -e "GATE_WEBHOOK_SECRET=$test_secret" "$container" gate-relay send-test \
  --url "http://127.0.0.1:$webhook_port/webhooks/0gate/test" --secret-env GATE_WEBHOOK_SECRET
eventually 10 queue_has fulfilment-test 2 || fail "fulfilment-test does not hold the pod's event"
echo "ok  fulfilment-test holds 2 messages"
podman pod stop -t 30 "$pod" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$container")
[ "$code" = 0 ] || fail "the pod's relay exited $code after SIGTERM"
if podman logs "$container" 2>&1 | grep -q "cache capacity is limited"; then
  fail "sled capped its cache to the pod limit: the ConfigMap's cache_capacity_bytes is above it"
fi
echo "ok  exit 0; sled kept the ConfigMap's cache size (no 'cache capacity is limited' in the log)"
podman kube down "$work/pod.yaml" >/dev/null
podman volume rm -f "$pod-config" >/dev/null
container=""

printf '\nfigures: build %d ms, image %d MB (%d MB on its base), /healthz %d ms, /readyz %d ms, stop %d ms\n' \
  "$build_ms" "$((size / 1000000))" "$(((size - base_size) / 1000000))" "$healthz_ms" "$readyz_ms" "$stop_ms"
