#!/usr/bin/env python3
"""Local end-to-end run of what the operator renders, without a cluster.

A sample PlamatioStore (pointing at this machine's PostgreSQL and Redis and at a tansu broker this
script starts) goes through `plamatio-operator render`; the migration Job's container and then the API
Deployment's container are run as processes with exactly the command and environment the rendered
objects give them (Secrets resolved from the sample Secret manifests, ConfigMap keys from the rendered
ConfigMap, `$(VAR)` references expanded as the kubelet does). `plamatio-operator topics` creates the
store's topics as the controller would. Then the storefront's real flows run over HTTP and the Kafka
messages they caused are read back with `plamatio-api events tail`.

Usage: e2e/local/run.py [TARGET_DIR]   (binaries from TARGET_DIR/debug, default $CARGO_TARGET_DIR or target)
"""

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

TARGET = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", "target")
API_BIN = os.path.join(TARGET, "debug", "plamatio-api")
OPERATOR_BIN = os.path.join(TARGET, "debug", "plamatio-operator")
PG_SERVER = os.environ.get("TEST_DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")

processes = []
checks = {"passed": 0, "failed": 0}


def fail(message):
    print(f"FAILED: {message}", flush=True)
    checks["failed"] += 1


def check(condition, message):
    if condition:
        checks["passed"] += 1
        print(f"ok: {message}", flush=True)
    else:
        fail(message)
    return condition


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tansu_binary():
    for candidate in (os.environ.get("TANSU_BIN"), "/var/tmp/plamatio-tools/bin/tansu", shutil.which("tansu")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    sys.exit("tansu is required (TANSU_BIN, /var/tmp/plamatio-tools/bin/tansu or PATH); .ci/run installs it")


def wait_for_port(port, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def start(argv, env, log_path):
    log = open(log_path, "w")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    processes.append((process, log_path))
    return process


def resolve_env(container, config_maps, secret_data):
    """The environment a kubelet would give the container."""
    env = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]])
        if "secretRef" in source:
            env.update(secret_data[source["secretRef"]["name"]])
    for variable in container.get("env") or []:
        name = variable["name"]
        if "value" in variable:
            # $(VAR) refers to variables defined before this one; $$ escapes
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), variable["value"])
            env[name] = value.replace("$$", "$")
            continue
        source = variable.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = secret_data.get(ref["name"], {}).get(ref["key"])
            if value is None and not ref.get("optional"):
                sys.exit(f"container needs Secret {ref['name']}/{ref['key']}, which the sample does not define")
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = config_maps.get(ref["name"], {}).get(ref["key"])
        elif "fieldRef" in source:
            value = {"metadata.name": "e2e-pod", "metadata.namespace": "e2e", "status.podIP": "127.0.0.1"}.get(
                source["fieldRef"]["fieldPath"], "")
        else:
            value = None
        if value is not None:
            env[name] = value
    return env


def command_of(container, binary):
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if not argv:
        sys.exit(f"container {container['name']} has no command")
    if os.path.basename(argv[0]) != "plamatio-api":
        sys.exit(f"container {container['name']} runs {argv[0]}, expected plamatio-api")
    return [binary] + argv[1:]


def http(method, port, path, key, body=None, expect=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    parsed = json.loads(payload) if payload else None
    if expect is not None:
        check(status == expect, f"{method} {path} → {status} (want {expect})")
    return status, parsed


def tail(port_env, topic, count):
    argv = [API_BIN, "events", "tail", "--topic", topic, "--from-beginning", "--limit", str(count)]
    try:
        done = subprocess.run(argv, env=port_env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as timeout:
        fail(f"reading {count} messages from {topic} timed out; got: {timeout.stdout}")
        return []
    messages = []
    for line in done.stdout.splitlines():
        match = re.match(r"^(\S+) key=(\S*) type=(\S*) (.*)$", line)
        if match:
            messages.append({"topic": match.group(1), "key": match.group(2), "type": match.group(3),
                             "payload": json.loads(match.group(4))})
    return messages


def main():
    for binary in (API_BIN, OPERATOR_BIN):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{binary} is missing: build the workspace first (cargo build --workspace)")
    work = tempfile.mkdtemp(prefix="plamatio-e2e-")
    database = f"plamatio_e2e_{os.getpid()}"
    kafka_port, api_port = free_port(), free_port()
    storefront_key, admin_key = f"plm_{secrets.token_hex(32)}", f"plm_{secrets.token_hex(32)}"

    tansu = start([tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{kafka_port}",
                   "--advertised-listener-url", f"tcp://127.0.0.1:{kafka_port}",
                   "--storage-engine", "memory://tansu/"], dict(os.environ), os.path.join(work, "tansu.log"))
    if not wait_for_port(kafka_port):
        sys.exit("tansu did not start")

    # The sample store and the Secrets it references, as a platform team would apply them.
    store = {
        "apiVersion": "plamatio.io/v1alpha1", "kind": "PlamatioStore",
        "metadata": {"name": "e2e", "namespace": "e2e"},
        "spec": {
            "api": {"replicas": 1, "port": api_port, "logLevel": "info", "rateLimitPerMinute": 6000,
                    "apiKeysSecretRef": {"name": "e2e-api-keys"}},
            "database": {"urlSecretRef": {"name": "e2e-database", "key": "url"}, "poolSize": 8, "migrations": "auto"},
            "cache": {"urlSecretRef": {"name": "e2e-redis", "key": "url"}},
            "kafka": {"bootstrapServers": f"127.0.0.1:{kafka_port}", "securityProtocol": "plaintext",
                      "topicPrefix": "e2e.", "topics": {"partitions": 3, "replicationFactor": 1}},
        },
    }
    secret_data = {
        "e2e-api-keys": {"storefront": hashlib.sha256(storefront_key.encode()).hexdigest(),
                         "admin": hashlib.sha256(admin_key.encode()).hexdigest()},
        "e2e-database": {"url": f"{PG_SERVER}/{database}"},
        "e2e-redis": {"url": REDIS_URL},
    }
    store_path = os.path.join(work, "store.yaml")
    with open(store_path, "w") as f:
        yaml.safe_dump(store, f)

    rendered = subprocess.run([OPERATOR_BIN, "render", "-f", store_path], capture_output=True, text=True, check=True).stdout
    objects = [o for o in yaml.safe_load_all(rendered) if o]
    kinds = sorted({o["kind"] for o in objects})
    print("rendered:", ", ".join(kinds), flush=True)
    config_maps = {o["metadata"]["name"]: o.get("data") or {} for o in objects if o["kind"] == "ConfigMap"}
    jobs = [o for o in objects if o["kind"] == "Job"]
    api_deployments = [o for o in objects if o["kind"] == "Deployment"
                       and any(os.path.basename((c.get("command") or [""])[0]) == "plamatio-api"
                               for c in o["spec"]["template"]["spec"]["containers"])]
    check(len(jobs) == 1, "one migration Job rendered")
    check(len(api_deployments) == 1, "one API Deployment rendered")
    job_container = jobs[0]["spec"]["template"]["spec"]["containers"][0]
    api_container = next(c for c in api_deployments[0]["spec"]["template"]["spec"]["containers"]
                         if os.path.basename((c.get("command") or [""])[0]) == "plamatio-api")
    base_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}

    # 1. the migration Job
    job_env = {**base_env, **resolve_env(job_container, config_maps, secret_data)}
    migrated = subprocess.run(command_of(job_container, API_BIN), env=job_env, capture_output=True, text=True, timeout=120)
    check(migrated.returncode == 0, f"migration Job command succeeded ({' '.join(job_container.get('command', []) + job_container.get('args', []))})")

    # 2. the operator's topic manager
    topics = subprocess.run([OPERATOR_BIN, "topics", "-f", store_path], capture_output=True, text=True, timeout=60)
    print(topics.stdout.strip(), flush=True)
    check(topics.returncode == 0 and topics.stdout.count("state=Ready") == 5, "operator created the five topics")

    # 3. the API container, exactly as the Deployment runs it
    api_env = {**base_env, **resolve_env(api_container, config_maps, secret_data)}
    check(api_env.get("KAFKA_BOOTSTRAP_SERVERS") == f"127.0.0.1:{kafka_port}", "the Deployment wires Kafka")
    check(api_env.get("REDIS_URL") == REDIS_URL, "the Deployment wires Redis")
    api = start(command_of(api_container, API_BIN), api_env, os.path.join(work, "api.log"))
    if not wait_for_port(api_port):
        print(open(os.path.join(work, "api.log")).read())
        sys.exit("the API did not listen on the rendered port")
    probe = api_container.get("readinessProbe", {}).get("httpGet", {}).get("path", "/readyz")
    deadline = time.time() + 30
    while http("GET", api_port, probe, None)[0] != 200 and time.time() < deadline:
        time.sleep(0.2)
    http("GET", api_port, probe, None, expect=200)
    http("GET", api_port, api_container.get("livenessProbe", {}).get("httpGet", {}).get("path", "/healthz"), None, expect=200)

    # 4. the storefront's flows
    sf = storefront_key
    http("GET", api_port, "/core/info", None, expect=200)
    _, products = http("GET", api_port, "/products/all", sf, expect=200)
    check(len(products["data"]) == 25, "catalog has the 25 seeded products")
    http("GET", api_port, "/categories/all", sf, expect=200)
    _, found = http("GET", api_port, "/products/search/mug", sf, expect=200)
    check([p["id"] for p in found["data"]] == [23, 24, 25], "search finds the mugs")
    http("GET", api_port, "/products/all", None, expect=401)
    user = "user_e2e"
    http("GET", api_port, f"/users/get/{user}", sf, expect=404)
    http("POST", api_port, "/users/add", sf, {"id": user, "firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"}, expect=200)
    http("GET", api_port, f"/users/get/{user}", sf, expect=200)
    _, address = http("POST", api_port, "/users/addresses/add", sf, {"street": "1 Llama Way", "city": "Toronto", "state": "ON", "country": "CA", "zipCode": "M5V 1A1", "userId": user}, expect=200)
    _, first = http("POST", api_port, "/cart/add", sf, {"product_id": 3, "quantity": 1, "user_id": user}, expect=200)
    http("POST", api_port, "/cart/add", sf, {"product_id": 14, "quantity": 1, "user_id": user}, expect=200)
    http("PUT", api_port, "/cart/update", sf, {"id": first["id"], "product_id": 3, "quantity": 2, "user_id": user}, expect=200)
    http("POST", api_port, "/cart/add/all", sf, {"data": [{"product_id": 23, "quantity": 1, "user_id": user}, {"product_id": 8, "quantity": 1, "user_id": user}]}, expect=200)
    http("DELETE", api_port, f"/cart/delete/{first['id']}/user/{user}", sf, expect=200)
    _, cart = http("GET", api_port, f"/cart/all/{user}", sf, expect=200)
    check([i["product_id"] for i in cart["data"]] == [14, 23, 8], "cart holds what was added and not deleted")
    _, order = http("POST", api_port, "/orders/detailed/add", sf, {"order": {"user_id": user, "address_id": address["id"], "total_price": 125.0, "status": "pending"}, "items": [{"product_id": i["product_id"], "quantity": i["quantity"]} for i in cart["data"]]}, expect=200)
    _, orders = http("GET", api_port, f"/orders/detailed/all/{user}", sf, expect=200)
    check(orders["data"] == [order], "orders page shows the checkout exactly")

    # 5. the events the flows caused, as Kafka consumers see them
    kafka_env = {**base_env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}", "KAFKA_TOPIC_PREFIX": "e2e."}
    deadline = time.time() + 30
    pending = None
    while time.time() < deadline:
        pending = subprocess.run(["psql", f"{PG_SERVER}/{database}", "-Atc", "SELECT count(*) FROM outbox_pending"], capture_output=True, text=True).stdout.strip()
        if pending == "0":
            break
        time.sleep(0.3)
    check(pending == "0", "the relay published the whole outbox")
    cart_events = tail(kafka_env, "cart_updates", 6)
    types = sorted(m["type"] for m in cart_events)
    check(types == sorted(["cart_item_added"] * 4 + ["cart_item_updated", "cart_item_deleted"]), f"cart_updates carries the six cart changes ({types})")
    check(all(m["key"] == user and m["topic"].startswith("e2e.cart_updates") for m in cart_events), "cart events are keyed by the user, on the prefixed topic")
    user_events = tail(kafka_env, "users_updates", 2)
    check(sorted(m["type"] for m in user_events) == ["address_added", "user_created"], "users_updates carries sign-up and address")
    order_events = tail(kafka_env, "orders_updates", 1)
    check(len(order_events) == 1 and order_events[0]["type"] == "order_created"
          and order_events[0]["payload"]["order"] == order["order"]
          and order_events[0]["payload"]["order_items"] == order["items"], "orders_updates carries the checkout with its items")
    event_ids = [m["payload"]["event_id"] for m in cart_events + user_events + order_events]
    check(len(event_ids) == len(set(event_ids)), "no event arrived twice")

    api.send_signal(signal.SIGTERM)
    try:
        check(api.wait(timeout=20) == 0, "the API stops cleanly on SIGTERM")
    except subprocess.TimeoutExpired:
        fail("the API did not stop within 20 s of SIGTERM")
    tansu.terminate()
    subprocess.run(["psql", f"{PG_SERVER}/postgres", "-qc", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"], capture_output=True)
    if checks["failed"]:
        for process, log_path in processes:
            print(f"--- {log_path}\n" + open(log_path).read()[-4000:])
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.kill()
    print(f"e2e: {checks['passed']} passed, {checks['failed']} failed")
    sys.exit(1 if checks["failed"] else 0)
