"""Checks deploy/envoy/gate-relay.yaml against Envoy's API types; deploy/check.sh runs it.

Envoy itself is not packaged for Debian bookworm, so the file is not run. Instead it is decoded
into Envoy's Bootstrap message with the generated types of Envoy's data-plane API (PyPI
xds-protos): an unknown field, a wrong type or enum value, or a typed_config whose type does not
exist fails. Envoy's own validation rules (protoc-gen-validate constraints) and anything decided
at run time (DNS, certificate files) are not checked. Then the choices the file exists for.
"""

import importlib
import pkgutil
import sys

import yaml
from google.protobuf import json_format

CONF = "deploy/envoy/gate-relay.yaml"


def type_urls(node):
    if isinstance(node, dict):
        if "@type" in node:
            yield node["@type"]
        for value in node.values():
            yield from type_urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from type_urls(value)


def import_types(doc):
    """Registers the message types the file names, so typed_config decodes into them."""
    for url in set(type_urls(doc)):
        package = url.rsplit("/", 1)[1].rsplit(".", 1)[0]
        try:
            module = importlib.import_module(package)
        except ModuleNotFoundError:
            sys.exit(f"{CONF}: no Envoy API package {package} (for {url})")
        for info in pkgutil.iter_modules(module.__path__):
            if info.name.endswith("_pb2"):
                importlib.import_module(f"{package}.{info.name}")


def seconds(duration):
    return duration.seconds + duration.nanos / 1e9


def check(cond, what):
    if not cond:
        sys.exit(f"{CONF}: {what}")
    print(f"ok  {what}")


def main():
    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

    doc = yaml.safe_load(open(CONF))
    import_types(doc)
    try:
        boot = json_format.ParseDict(doc, bootstrap_pb2.Bootstrap())
    except json_format.ParseError as e:
        sys.exit(f"{CONF}: not a valid Envoy bootstrap: {e}")
    print(f"ok  decodes as envoy.config.bootstrap.v3.Bootstrap ({len(set(type_urls(doc)))} typed configs)")

    (cluster,) = boot.static_resources.clusters
    (listener,) = boot.static_resources.listeners
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    route = hcm.route_config.virtual_hosts[0].routes[0]
    check(route.route.cluster == cluster.name and cluster.lb_policy == cluster_pb2.Cluster.RING_HASH,
          "the webhook route goes to a RING_HASH cluster")
    check(route.route.hash_policy[0].header.header_name == "x-0bit-event-id" and route.route.hash_policy[0].terminal,
          "its first hash policy is the x-0bit-event-id header, terminal")
    check(route.route.retry_policy.retry_on == "connect-failure",
          "retries on connect failure only (never after the request was sent)")
    check(9 < seconds(route.route.timeout) < 10, "route timeout between the relay's 9 s and 0Gate's 10 s")
    buffer = buffer_pb2.Buffer()
    check(any(f.typed_config.Unpack(buffer) for f in hcm.http_filters) and buffer.max_request_bytes.value == 1024 * 1024,
          "the buffer filter reads a body whole, at most 1 MiB (the relay's max_body_bytes)")
    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(options)
    check(0 < seconds(options.common_http_protocol_options.idle_timeout) < 10,
          "upstream idle timeout below the relay's 10 s idle close")
    check(seconds(cluster.connect_timeout) <= 2, "connect timeout at most 2 s")
    endpoints = [e.endpoint.address.socket_address for e in cluster.load_assignment.endpoints[0].lb_endpoints]
    check([(a.address, a.port_value) for a in endpoints] == [(f"gate-relay-{i}", 8080) for i in range(3)],
          "three replicas gate-relay-0/1/2:8080")


if __name__ == "__main__":
    main()
