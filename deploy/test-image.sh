#!/usr/bin/env bash
# Opt-in (not in .ci/run: a cold run takes longer than CI should spend on it): builds
# deploy/docker/Dockerfile with podman and runs the image the way the shipped manifests do, against
# the host's RabbitMQ at 127.0.0.1:5672 (guest/guest), then runs the compose stack. As root on
# Debian, from anywhere:
#
#   deploy/test-image.sh
#
# What it checks: the image builds (docker format, so HEALTHCHECK survives) with a stripped binary;
# it runs read-only, as uid 10001, with every capability dropped; /healthz and /readyz answer 200;
# a signed event sent with the image's own `gate-relay send-test` lands in a quorum queue; the
# image's HEALTHCHECK passes; `podman stop` drains and the relay exits 0; sled keeps the configured
# cache size (the container has compose's 512m limit). Then the same for the StatefulSet's pod
# spec with `podman kube play`, and for deploy/compose/docker-compose.yml with podman-compose
# (deploy/test-image-compose.sh, sourced below, says how). It prints the image size, the build
# time, the start-up and stop times and the compose stack's up time (deploy/README.md records them).
#
# How:
# - Tools: Debian's podman (with netavark and aardvark-dns: compose services find each other by
#   name), debootstrap, curl, catatonit; podman-compose from PyPI, pinned, in a venv under
#   ${XDG_CACHE_HOME:-$HOME/.cache}/gate-relay-test-image (Debian's 1.0.3 predates `!override`).
# - Base images: no image registry is reachable here, so when an image the Dockerfile or the
#   compose file names is not in local storage it makes a stand-in from `debootstrap
#   --variant=minbase bookworm` (the rootfs tarball is cached in that directory; every image it
#   tags or builds is removed at the end). rust:1-bookworm's stand-in has ca-certificates and no
#   Rust; the compose file's RabbitMQ and Prometheus are Debian's packages (3.10.8 and 2.42.0).
# - The binary: built on the host (`cargo build --profile dist`, the machine's toolchain and its
#   warm cargo cache) and passed in with the Dockerfile's test-only `--build-arg BINARY=prebuilt`.
#   Compiling inside the build (mounting ~/.cargo and ~/.rustup) would need a C toolchain in the
#   stand-in and a cold compile of every dependency on each machine: minutes longer, same binary.
# - The broker: a throwaway vhost with deploy/rabbitmq/definitions.json's topology, deleted at
#   the end. guest is loopback-only, so the relay runs with host networking, on free ports.
#
# Leaves nothing behind, also on failure or interruption (trap on EXIT, INT and TERM): the
# containers, pods, networks, volumes, the images it built or tagged, the vhost, its temp directory.
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
compose=() # the podman-compose command line, once the stack is up (deploy/test-image-compose.sh)
made_networks=()
started=$SECONDS

# What the compose project of this run left, as "KIND NAME" lines for `podman KIND rm -f NAME`.
# podman-compose labels containers, networks and volumes with the project; the pod only by name.
compose_leftovers() {
  local label="label=io.podman.compose.project=$run"
  podman ps -a -q --filter "$label" | sed 's/^/container /'
  if podman pod exists "pod_$run"; then echo "pod pod_$run"; fi
  podman network ls -q --filter "$label" | sed 's/^/network /'
  podman volume ls -q --filter "$label" | sed 's/^/volume /'
}

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
  if [ "${#compose[@]}" -gt 0 ]; then
    [ "$status" -ne 0 ] && "${compose[@]}" logs --tail 20 >&2 2>&1
    "${compose[@]}" down -v -t 0 >/dev/null 2>&1
    compose_leftovers | while read -r kind id; do podman "$kind" rm -f "$id"; done >/dev/null 2>&1
  fi
  podman rmi -f "$image" >/dev/null 2>&1
  if [ -f "$work/images-before" ]; then
    podman images -a -q --no-trunc --filter dangling=true | sort |
      comm -13 "$work/images-before" - | xargs -r podman rmi -f >/dev/null 2>&1
  fi
  # Newest first: an image before the one it was built or committed from.
  for ((i = ${#made_images[@]} - 1; i >= 0; i--)); do
    podman rmi -f "${made_images[i]}" >/dev/null 2>&1
  done
  for network in "${made_networks[@]}"; do podman network rm -f "$network" >/dev/null 2>&1; done
  [ -n "$vhost" ] && rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1
  rm -rf "$work"
  if [ "$status" -eq 0 ]; then
    echo "deploy/test-image.sh: passed in $((SECONDS - started)) s; everything it made is removed"
  else
    echo "deploy/test-image.sh: FAILED (exit $status); everything it made is removed" >&2
  fi
}
trap cleanup EXIT
# Without these, SIGINT and SIGTERM end the script without running the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "deploy/test-image.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR

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
step "tools: podman (netavark, aardvark-dns), debootstrap, curl, catatonit; podman-compose (PyPI)"
# Debian packages, by package name: netavark and aardvark-dns are not on PATH, and podman only
# recommends them (without aardvark-dns compose services cannot resolve each other's names;
# without iptables netavark fails with "No such file or directory"); runc, since crun 1.8 refuses
# this sandbox's cgroups ("cgroups in hybrid mode not supported"); catatonit is the pause image
# of kube play; python3-venv for the podman-compose venv.
missing=()
for package in podman runc netavark aardvark-dns iptables debootstrap curl catatonit uidmap \
  fuse-overlayfs python3-venv; do
  dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# PyPI's podman-compose (with PyYAML, which the pod spec below uses too), pinned; a changed pin
# rebuilds the venv. Debian's python3, not whichever python3 comes first on PATH.
python_tools="podman-compose==1.6.0 pyyaml==6.0.3"
venv="$cache/venv"
if [ "$(cat "$venv/.gate-relay-tools" 2>/dev/null)" != "$python_tools" ]; then
  echo "creating $venv: $python_tools"
  rm -rf "$venv"
  mkdir -p "$cache"
  /usr/bin/python3 -m venv "$venv"
  # shellcheck disable=SC2086 # the list is word-split on purpose
  "$venv/bin/pip" install --quiet --disable-pip-version-check $python_tools
  printf '%s' "$python_tools" >"$venv/.gate-relay-tools"
fi
py="$venv/bin/python"
echo "$(podman --version), $("$venv/bin/podman-compose" --version 2>/dev/null | head -n 1)"
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
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$work/containers.conf"
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
# Builds leave stages behind as untagged images: remember what was there.
podman images -a -q --no-trunc --filter dangling=true | sort >"$work/images-before"
rootfs_tar="$cache/bookworm-minbase.tar"
minbase="" # the cached minbase rootfs, imported once per run and tagged with the run's name
minbase_image() {
  [ -z "$minbase" ] || return 0
  if [ ! -s "$rootfs_tar" ]; then
    echo "debootstrap --variant=minbase bookworm (cached in $cache)"
    mkdir -p "$cache"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$work/rootfs" \
      http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
      { tail -n 20 "$work/debootstrap.log"; fail "debootstrap failed"; }
    tar -C "$work/rootfs" -cf "$rootfs_tar.partial" . && mv "$rootfs_tar.partial" "$rootfs_tar"
    rm -rf "$work/rootfs"
  fi
  minbase="localhost/gate-relay-test-minbase:$run"
  podman import --quiet "$rootfs_tar" "$minbase" >/dev/null
  made_images+=("$minbase")
}
stand_in() { # name, packages to purge from the minbase rootfs
  local name=$1
  shift
  if podman image exists "$name"; then
    echo "ok  $name is in local storage"
    return
  fi
  minbase_image
  if [ "$#" -gt 0 ]; then
    # The slim runtime base has no CA bundle: the Dockerfile must copy it from the builder.
    podman run --name "$run-trim" --network none "$minbase" \
      sh -c "dpkg --purge --force-depends $* >/dev/null 2>&1; rm -rf /var/cache/apt/*"
    # Flattened (export, import): a commit on top would carry the purged files in its lower layer.
    podman export "$run-trim" | podman import --quiet - "$name" >/dev/null
    podman rm -f "$run-trim" >/dev/null
  else
    podman tag "$minbase" "$name"
  fi
  made_images+=("$name")
  echo "ok  $name: a stand-in made here"
}
# A stand-in built from a Containerfile on stdin (`FROM $BASE`, the minbase image), when the name
# is not in local storage.
stand_in_built() { # name, what it is (for the log)
  local name=$1
  if podman image exists "$name"; then
    echo "ok  $name is in local storage"
    cat >/dev/null
    return
  fi
  minbase_image
  mkdir -p "$work/empty"
  local t0
  t0=$(now_ms)
  # --layers=false: no intermediate images left to clean up.
  podman build --quiet --format docker --pull=never --layers=false --build-arg "BASE=$minbase" \
    -t "$name" -f - "$work/empty" >"$work/stand-in.log" 2>&1 ||
    { tail -n 30 "$work/stand-in.log"; fail "could not build the stand-in $name"; }
  made_images+=("$name")
  echo "ok  $name: a stand-in built here from $2 in $(($(now_ms) - t0)) ms"
}
stand_in docker.io/library/rust:1-bookworm
stand_in docker.io/library/debian:bookworm-slim ca-certificates openssl

# ---------------------------------------------------------------------------------------------
step "podman build --format docker"
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
# It makes the network podman-default-kube-network on first use too: likewise.
podman network exists podman-default-kube-network || made_networks+=(podman-default-kube-network)
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

# shellcheck source=deploy/test-image-compose.sh
. deploy/test-image-compose.sh

printf '\nfigures: build %d ms, image %d MB (%d MB on its base), /healthz %d ms, /readyz %d ms, stop %d ms\n' \
  "$build_ms" "$((size / 1000000))" "$(((size - base_size) / 1000000))" "$healthz_ms" "$readyz_ms" "$stop_ms"
printf 'compose: up to all healthy %d ms (RabbitMQ %d ms), relay stop %d ms, down -v %d ms\n' \
  "$compose_up_ms" "$rabbitmq_ms" "$compose_stop_ms" "$compose_down_ms"
