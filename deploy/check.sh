#!/usr/bin/env bash
# Validates everything under deploy/ that can be validated without a Docker engine or a
# Kubernetes cluster. Run from anywhere, as root on a fresh Debian machine or a developer's;
# .ci/run calls it after the tests. Installs what it needs: Debian's prometheus package (for
# promtool) when promtool is missing, PyYAML when python3 lacks it.
#
# Steps: alert rules (promtool check + unit tests); dashboard queries parse and name real metrics;
# JSON files; YAML files (compose, Kubernetes, Prometheus, Grafana provisioning) with a few
# cross-references; the relay configs (gate-relay check-config when a built binary exists);
# the systemd unit (systemd-analyze verify, when it works here); the RabbitMQ definitions
# (imported into a throwaway vhost, when rabbitmqctl reaches a node); the Dockerfile and this
# script (hadolint and shellcheck, only when installed).
#
# Not checked here: building the image and running the compose stack (no Docker engine), and
# applying the manifests (no cluster; the Kubernetes schemas are not available offline).
set -euo pipefail

cd "$(dirname "$0")/.."
started=$SECONDS
work=$(mktemp -d)
vhost=""
cleanup() {
  if [ -n "$vhost" ]; then
    rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
skip() { printf -- '-- skipped: %s\n' "$*"; }
fail() {
  printf 'deploy/check.sh: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
step "promtool: alert rules parse (deploy/prometheus/alerts.yml)"
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool missing: installing Debian's prometheus package"
  t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  echo "installed in $((SECONDS - t0)) s"
fi
promtool check rules deploy/prometheus/alerts.yml

step "promtool: alert unit tests (deploy/prometheus/alerts.test.yml)"
promtool test rules deploy/prometheus/alerts.test.yml

# ---------------------------------------------------------------------------------------------
step "python3 with PyYAML"
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "PyYAML missing: installing it"
  python3 -m pip install --quiet pyyaml 2>/dev/null ||
    { apt-get update -qq && apt-get install -y -qq python3-yaml >/dev/null; }
  python3 -c 'import yaml' || fail "cannot import yaml after installing PyYAML"
fi
python3 -c 'import sys, yaml; print("python", sys.version.split()[0], "PyYAML", yaml.__version__)'

# ---------------------------------------------------------------------------------------------
step "JSON: dashboard, RabbitMQ definitions, compose users"
for f in deploy/grafana/gate-relay.json deploy/rabbitmq/definitions.json \
  deploy/compose/rabbitmq/users.json; do
  python3 -m json.tool "$f" >/dev/null || fail "$f is not valid JSON"
  echo "ok  $f"
done

step "Grafana dashboard: uid, title, datasource variable, queries parse, metrics exist"
python3 - "$work/dashboard-rules.yml" <<'PY'
import json, re, sys, yaml
d = json.load(open("deploy/grafana/gate-relay.json"))
assert d.get("uid") == "gate-relay" and d.get("title"), "uid and title"
variables = {v["name"]: v for v in d["templating"]["list"]}
assert variables.get("datasource", {}).get("type") == "datasource", "a datasource variable"
exprs, ids = [], set()
def walk(panels):
    for p in panels:
        assert p["id"] not in ids, f"duplicate panel id {p['id']}"
        ids.add(p["id"])
        if p["type"] != "row":
            assert p.get("datasource", {}).get("uid") == "${datasource}", f"panel {p['title']!r} uses the variable"
        for t in p.get("targets", []):
            exprs.append((p["title"], t["expr"]))
        walk(p.get("panels", []))
walk(d["panels"])
# Grafana's variables, replaced by what they expand to, so promtool can parse every query.
def concrete(e):
    return (e.replace("$__rate_interval", "5m").replace("$instance", ".*")
             .replace("$endpoint", ".*"))
rules = [{"record": f"dashboard:query_{i}", "expr": concrete(e)} for i, (_, e) in enumerate(exprs)]
for v in variables.values():
    m = re.match(r"label_values\((.*),\s*\w+\)$", v.get("definition", ""))
    if m:
        rules.append({"record": f"dashboard:variable_{v['name']}", "expr": concrete(m.group(1))})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
print(f"{len(exprs)} queries in {len(ids)} panels")
PY
promtool check rules "$work/dashboard-rules.yml" >/dev/null ||
  { promtool check rules "$work/dashboard-rules.yml"; fail "a dashboard query does not parse"; }
echo "every dashboard query parses"
python3 - <<'PY'
import re
# Metric names the relay registers (src/metrics.rs), with the series a histogram expands to.
src = open("src/metrics.rs").read()
known = set()
for name in re.findall(r'"(gate_relay_[a-z_]+)"', src):
    known |= {name, name + "_bucket", name + "_sum", name + "_count"}
missing = {}
for path in ("deploy/grafana/gate-relay.json", "deploy/prometheus/alerts.yml"):
    for name in set(re.findall(r"gate_relay_[a-z_]+", open(path).read())):
        if name not in known:
            missing.setdefault(path, set()).add(name)
if missing:
    raise SystemExit(f"metrics not in src/metrics.rs: {missing}")
print(f"every gate_relay_* metric named in the dashboard and alerts is in src/metrics.rs ({len(known) // 4} metrics)")
PY

# ---------------------------------------------------------------------------------------------
step "YAML: compose, Kubernetes, Prometheus, Grafana provisioning"
python3 - <<'PY'
import glob, os, yaml
files = sorted(glob.glob("deploy/**/*.yml", recursive=True) + glob.glob("deploy/**/*.yaml", recursive=True))
docs = {}
for f in files:
    docs[f] = [d for d in yaml.safe_load_all(open(f)) if d is not None]
    print(f"ok  {f}")

# Kubernetes: every object is complete, the kustomization lists files that exist, and the names
# the objects use for each other match.
k8s = "deploy/kubernetes"
kust = docs[f"{k8s}/kustomization.yaml"][0]
objects = {}
for r in kust["resources"]:
    path = os.path.join(k8s, r)
    assert path in docs, f"kustomization.yaml lists {r}, which does not exist"
    for o in docs[path]:
        for key in ("apiVersion", "kind"):
            assert key in o, f"{path}: {key} missing"
        assert o.get("metadata", {}).get("name"), f"{path}: metadata.name missing"
        objects[(o["kind"], o["metadata"]["name"])] = o
unlisted = {f for f in docs if f.startswith(k8s + "/")} - {os.path.join(k8s, r) for r in kust["resources"]} - {f"{k8s}/kustomization.yaml"}
assert not unlisted, f"not in kustomization.yaml: {unlisted}"
sts = objects[("StatefulSet", "gate-relay")]
spec = sts["spec"]
pod = spec["template"]["spec"]
assert ("Service", spec["serviceName"]) in objects, "serviceName names a Service"
assert objects[("Service", spec["serviceName"])]["spec"].get("clusterIP") == "None", "the governing Service is headless"
assert pod["terminationGracePeriodSeconds"] >= 30, "terminationGracePeriodSeconds >= 30"
container = pod["containers"][0]
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
assert ports == {"webhook": 8080, "admin": 9090}, ports
assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
assert mounts.get("/var/lib/gate-relay") in {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}, "the store is a claim"
config_volume = next(v for v in pod["volumes"] if v["name"] == mounts["/etc/gate-relay"])
assert ("ConfigMap", config_volume["configMap"]["name"]) in objects, "the config volume names the ConfigMap"
for source in container["envFrom"]:
    assert ("Secret", source["secretRef"]["name"]) in objects, "envFrom names the Secret"
labels = spec["template"]["metadata"]["labels"]
for (kind, name), o in objects.items():
    selector = o.get("spec", {}).get("selector")
    if kind == "Service":
        assert all(labels.get(k) == v for k, v in selector.items()), f"Service {name} selects the pods"
        for p in o["spec"]["ports"]:
            assert p["targetPort"] in ports, f"Service {name} targets a named container port"
    if kind in ("PodDisruptionBudget", "StatefulSet"):
        assert all(labels.get(k) == v for k, v in selector["matchLabels"].items()), f"{kind} {name} selects the pods"
monitor = objects[("ServiceMonitor", "gate-relay")]
monitored = [o for (k, _), o in objects.items() if k == "Service" and all(o["metadata"]["labels"].get(a) == b for a, b in monitor["spec"]["selector"]["matchLabels"].items())]
assert monitored and all(any(p["name"] == "admin" for p in s["spec"]["ports"]) for s in monitored), "the ServiceMonitor finds the admin port"
assert objects[("Service", "gate-relay")]["spec"]["ports"][0]["port"] == 8080
print("kubernetes: names, ports, probes, volumes and selectors agree")

# Compose: every file it mounts exists; the relay's admin listener is reachable for Prometheus.
compose_dir = "deploy/compose"
compose = docs[f"{compose_dir}/docker-compose.yml"][0]
for name, service in compose["services"].items():
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("."):
            assert os.path.exists(os.path.join(compose_dir, source)), f"{name} mounts {source}, which does not exist"
    for dep in service.get("depends_on", []):
        assert dep in compose["services"], f"{name} depends on unknown {dep}"
build = compose["services"]["gate-relay"]["build"]
assert os.path.exists(os.path.join(compose_dir, build["context"], build["dockerfile"])), "the Dockerfile"
prometheus = docs[f"{compose_dir}/prometheus.yml"][0]
job = prometheus["scrape_configs"][0]
assert job["job_name"] == "gate-relay" and job["static_configs"][0]["targets"] == ["gate-relay:9090"]
print("compose: mounted files exist, Prometheus scrapes job gate-relay at gate-relay:9090")
PY

# ---------------------------------------------------------------------------------------------
step "relay configs (compose config.toml, the Kubernetes ConfigMap's config.toml)"
python3 - "$work/k8s-config.toml" <<'PY'
import sys, yaml
cm = yaml.safe_load(open("deploy/kubernetes/configmap.yaml"))
open(sys.argv[1], "w").write(cm["data"]["config.toml"])
PY
bin=""
for candidate in "${GATE_RELAY_BIN:-}" "${CARGO_TARGET_DIR:-target}/debug/gate-relay" \
  "${CARGO_TARGET_DIR:-target}/release/gate-relay"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then bin=$candidate && break; fi
done
if [ -n "$bin" ]; then
  for config in deploy/compose/config.toml "$work/k8s-config.toml"; do
    GATE_RELAY_LIVE_SECRETS=whsec_live_check_0123456789 \
      GATE_RELAY_TEST_SECRETS=whsec_test_check_0123456789 \
      GATE_RELAY_ADMIN_TOKEN=check-admin-token-0123456789 \
      GATE_RELAY_AMQP_URL=amqp://check:check@localhost:5672/%2f \
      "$bin" check-config --config "$config" || fail "$config is not a valid relay config"
  done
else
  python3 - "$work/k8s-config.toml" <<'PY'
import sys, tomllib
for path in ("deploy/compose/config.toml", sys.argv[1]):
    tomllib.load(open(path, "rb"))
    print(f"ok  {path} (TOML syntax only)")
PY
  skip "gate-relay check-config: no built binary (cargo build, or set GATE_RELAY_BIN)"
fi

# ---------------------------------------------------------------------------------------------
step "systemd: systemd-analyze verify deploy/systemd/gate-relay.service"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  skip "systemd-analyze is not installed"
else
  printf '[Service]\nExecStart=/bin/true\n' >"$work/probe.service"
  if ! systemd-analyze verify "$work/probe.service" >/dev/null 2>&1; then
    skip "systemd-analyze verify does not work on this machine"
  else
    unit="$work/gate-relay.service"
    cp deploy/systemd/gate-relay.service "$unit"
    # verify insists that ExecStart's program exists; stand in for an uninstalled relay.
    if [ ! -x /usr/local/bin/gate-relay ]; then
      sed -i 's|/usr/local/bin/gate-relay|/bin/true|' "$unit"
    fi
    # Unknown keys and bad values are only warnings (exit 0): treat any output as a failure.
    out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
    [ -z "$out" ] || fail "systemd-analyze verify: $out"
    echo "ok  deploy/systemd/gate-relay.service"
    if exposure=$(systemd-analyze security --offline=true "$unit" 2>/dev/null | tail -n 1); then
      echo "${exposure//$work\//}"
    fi
  fi
fi

# ---------------------------------------------------------------------------------------------
step "RabbitMQ: import deploy/rabbitmq/definitions.json into a throwaway vhost"
if ! command -v rabbitmqctl >/dev/null 2>&1; then
  skip "rabbitmqctl is not installed"
elif ! timeout 20 rabbitmqctl -q list_vhosts >/dev/null 2>&1; then
  skip "no RabbitMQ node answers rabbitmqctl"
else
  vhost="gate-relay-deploy-check-$$"
  python3 - "$vhost" "$work/definitions.json" <<'PY'
import json, sys
vhost, out = sys.argv[1], sys.argv[2]
d = json.load(open("deploy/rabbitmq/definitions.json"))
assert not d.get("users") and not d.get("permissions"), "definitions.json holds topology only"
d["vhosts"] = [{"name": vhost}]
for key in ("exchanges", "queues", "bindings", "policies", "parameters"):
    for item in d.get(key, []):
        item["vhost"] = vhost
json.dump(d, open(out, "w"))
PY
  rabbitmqctl -q add_vhost "$vhost"
  # Debian's rabbitmqctl runs as the rabbitmq user (and its "-" for stdin does not work in 3.10).
  chmod 0755 "$work"
  chmod 0644 "$work/definitions.json"
  rabbitmqctl -q import_definitions "$work/definitions.json" >/dev/null
  # The import is asynchronous: wait until every binding is there, then compare.
  want=$(python3 -c '
import json
d = json.load(open("deploy/rabbitmq/definitions.json"))
print(len(d["bindings"]))')
  for _ in $(seq 1 100); do
    got=$(rabbitmqctl -q list_bindings -p "$vhost" source_name --no-table-headers |
      grep -c . || true)
    # Counts bindings from named exchanges (the default exchange's have an empty source).
    [ "$((got))" -ge "$want" ] && break
    sleep 0.1
  done
  rabbitmqctl -q list_queues -p "$vhost" name type arguments --formatter json >"$work/queues.json"
  rabbitmqctl -q list_exchanges -p "$vhost" name type durable --formatter json >"$work/exchanges.json"
  rabbitmqctl -q list_bindings -p "$vhost" source_name destination_name routing_key \
    --formatter json >"$work/bindings.json"
  python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
d = json.load(open("deploy/rabbitmq/definitions.json"))
queues = {q["name"]: q for q in json.load(open(f"{work}/queues.json"))}
exchanges = {e["name"]: e for e in json.load(open(f"{work}/exchanges.json"))}
bindings = {(b["source_name"], b["destination_name"], b["routing_key"]) for b in json.load(open(f"{work}/bindings.json"))}
for q in d["queues"]:
    assert q["name"] in queues, f"queue {q['name']} missing after import"
    assert queues[q["name"]]["type"] == q["arguments"].get("x-queue-type", "classic"), q["name"]
for e in d["exchanges"]:
    assert exchanges.get(e["name"], {}).get("type") == e["type"], f"exchange {e['name']}"
for b in d["bindings"]:
    assert (b["source"], b["destination"], b["routing_key"]) in bindings, f"binding {b}"
print(f"imported: {len(d['exchanges'])} exchanges, {len(d['queues'])} queues, {len(d['bindings'])} bindings")
PY
  rabbitmqctl -q delete_vhost "$vhost"
  vhost=""
  echo "throwaway vhost deleted"
fi

# ---------------------------------------------------------------------------------------------
step "lint: Dockerfile (hadolint) and this script (shellcheck), when installed"
if command -v hadolint >/dev/null 2>&1; then
  hadolint deploy/docker/Dockerfile && echo "ok  deploy/docker/Dockerfile"
else
  skip "hadolint is not installed (the Dockerfile is reviewed by hand)"
fi
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck deploy/check.sh && echo "ok  deploy/check.sh"
else
  skip "shellcheck is not installed"
fi

printf '\ndeploy/check.sh: all checks passed in %d s\n' "$((SECONDS - started))"
