#!/usr/bin/env python3
"""Soak driver: mixed storefront traffic at a steady rate against a running plamatio-api, sampling the
server's RSS every 5 s from /proc/<pid>/status.

Every request must answer 2xx; the RSS must stay flat: the average of the last window must be within
+SOAK_RSS_GROWTH (default 20 %) of the average of the first window after warm-up (with the default
300 s: warm-up 0-30 s, first window 30-90 s, last window 240-300 s; windows scale with SOAK_SECONDS).

Prints the RSS curve, the per-operation counts, and the closing line `soak: N passed, M failed`, where
every request is one check and so are "RSS flat" and "server alive"; exits 1 when M > 0.

Usage: driver.py --base http://127.0.0.1:PORT --key STOREFRONT_KEY --pid SERVER_PID
Environment: SOAK_SECONDS (300), SOAK_RATE (requests/s, 50), SOAK_WORKERS (10), SOAK_RSS_GROWTH (0.20).
"""

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse
from collections import Counter

SEARCH_TERMS = ["mug", "llama", "shirt", "hat", "bottle", "alpaca", "cap", "blue", "zzz-none", "%", "_"]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects after a failure (the failure still counts)."""

    def __init__(self, base, key):
        url = urllib.parse.urlparse(base)
        self.host, self.port = url.hostname, url.port
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.connection = None

    def request(self, method, path, body=None):
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=15)
        payload = None if body is None else json.dumps(body)
        try:
            self.connection.request(method, path, body=payload, headers=self.headers)
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.connection.close()
            self.connection = None
            return 0, repr(error)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data[:200]
        return response.status, parsed


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = Counter()
        self.failed = Counter()
        self.examples = []

    def record(self, operation, status, body):
        with self.lock:
            if 200 <= status < 300:
                self.ok[operation] += 1
            else:
                self.failed[operation] += 1
                if len(self.examples) < 10:
                    self.examples.append(f"{operation}: {status} {str(body)[:200]}")

    def totals(self):
        with self.lock:
            return sum(self.ok.values()), sum(self.failed.values())


def seed(client, count):
    """Creates `count` shoppers with one address each; returns (user_id, address_id) pairs."""
    run = f"{os.getpid()}_{int(time.time())}"
    shoppers = []
    for i in range(count):
        user = f"soak_{run}_{i}"
        status, body = client.request("POST", "/users/add", {
            "id": user, "firstName": "Soak", "lastName": "Llama", "email": f"{user}@example.com"})
        if status != 200:
            sys.exit(f"seeding user failed: {status} {body}")
        status, body = client.request("POST", "/users/addresses/add", {
            "street": "1 Pass", "city": "Cusco", "state": "Cusco", "country": "PE",
            "zipCode": "08000", "userId": user})
        if status != 200:
            sys.exit(f"seeding address failed: {status} {body}")
        shoppers.append((user, body["id"]))
    return shoppers


def worker(base, key, shoppers, period, deadline, stats, seed_value):
    rng = random.Random(seed_value)
    client = Client(base, key)
    carts = {user: [] for user, _ in shoppers}
    next_at = time.monotonic() + rng.random() * period
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if next_at > now:
            time.sleep(next_at - now)
        next_at += period
        user, address = rng.choice(shoppers)
        cart = carts[user]
        roll = rng.random()
        if roll < 0.45:
            operation = "browse"
            path = rng.choice([
                "/products/all", f"/products/get/{rng.randint(1, 25)}", "/categories/all",
                f"/categories/subcategories/category/{rng.randint(1, 3)}", "/products/hero",
                f"/products/category/{rng.randint(1, 3)}", f"/products/hero/category/{rng.randint(1, 3)}",
            ])
            status, body = client.request("GET", path)
        elif roll < 0.60:
            operation = "search"
            term = urllib.parse.quote(rng.choice(SEARCH_TERMS), safe="")
            status, body = client.request("GET", f"/products/search/{term}")
        elif roll < 0.75 or (roll < 0.90 and not cart):
            if len(cart) >= 5:
                operation = "cart delete"
                item = cart.pop(0)
                status, body = client.request("DELETE", f"/cart/delete/{item}/user/{user}")
            else:
                operation = "cart add"
                status, body = client.request("POST", "/cart/add", {
                    "product_id": rng.randint(1, 25), "quantity": rng.randint(1, 3), "user_id": user})
                if status == 200:
                    cart.append(body["id"])
        elif roll < 0.83:
            operation = "cart update"
            item = rng.choice(cart)
            status, body = client.request("PUT", "/cart/update", {
                "id": item, "product_id": rng.randint(1, 25), "quantity": rng.randint(1, 5), "user_id": user})
        elif roll < 0.90:
            operation = "cart delete"
            item = cart.pop(rng.randrange(len(cart)))
            status, body = client.request("DELETE", f"/cart/delete/{item}/user/{user}")
        elif roll < 0.95:
            operation = "checkout"
            items = [{"product_id": rng.randint(1, 25), "quantity": rng.randint(1, 3)} for _ in range(3)]
            status, body = client.request("POST", "/orders/detailed/add", {
                "order": {"user_id": user, "address_id": address, "total_price": 42.5, "status": "pending"},
                "items": items})
            if status == 200 and len(body.get("items", [])) != 3:
                status, body = 0, f"checkout returned {body}"
        else:
            operation = "orders"
            status, body = client.request("GET", f"/orders/detailed/all/{user}")
        stats.record(operation, status, body)


def window_average(samples, start, end):
    values = [rss for t, rss in samples if start <= t < end and rss is not None]
    return sum(values) / len(values) if values else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--pid", required=True, type=int)
    args = parser.parse_args()
    seconds = float(os.environ.get("SOAK_SECONDS", "300"))
    rate = float(os.environ.get("SOAK_RATE", "50"))
    workers = int(os.environ.get("SOAK_WORKERS", "10"))
    growth = float(os.environ.get("SOAK_RSS_GROWTH", "0.20"))

    shoppers = seed(Client(args.base, args.key), 16)
    stats = Stats()
    started = time.monotonic()
    deadline = started + seconds
    period = workers / rate
    threads = [
        threading.Thread(
            target=worker,
            args=(args.base, args.key, shoppers[i::workers] or shoppers, period, deadline, stats, i),
            daemon=True)
        for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    print(f"soak: {seconds:.0f} s at {rate:.0f} req/s with {workers} clients; RSS of pid {args.pid} every 5 s",
          flush=True)
    samples = []
    next_sample = started
    while True:
        now = time.monotonic()
        elapsed = now - started
        if now >= next_sample:
            rss = rss_kib(args.pid)
            samples.append((elapsed, rss))
            ok, failed = stats.totals()
            shown = f"{rss / 1024:7.1f} MiB" if rss is not None else "   gone   "
            print(f"rss t={elapsed:5.0f}s {shown}  requests ok={ok} failed={failed}", flush=True)
            next_sample += 5
        if now >= deadline and all(not t.is_alive() for t in threads):
            break
        if now >= deadline + 30:
            print("soak: clients still running 30 s after the deadline (hung requests)", flush=True)
            break
        time.sleep(min(0.2, max(0.0, next_sample - time.monotonic())))
    samples.append((time.monotonic() - started, rss_kib(args.pid)))

    ok, failed = stats.totals()
    print("operations:", ", ".join(
        f"{operation} {stats.ok[operation]}/{stats.ok[operation] + stats.failed[operation]}"
        for operation in sorted(set(stats.ok) | set(stats.failed))))
    for example in stats.examples:
        print("  failed:", example)
    checks_passed, checks_failed = 0, 0

    warmup = min(30.0, seconds * 0.1)
    window = min(60.0, seconds * 0.2)
    first = window_average(samples, warmup, warmup + window)
    last = window_average(samples, seconds - window, seconds + 1)
    if first is None or last is None:
        print("check RSS flat: FAILED (no samples)")
        checks_failed += 1
    else:
        change = (last - first) / first
        verdict = "ok" if change <= growth else "FAILED"
        print(f"check RSS flat: first window {warmup:.0f}-{warmup + window:.0f}s avg {first / 1024:.1f} MiB, "
              f"last window {seconds - window:.0f}-{seconds:.0f}s avg {last / 1024:.1f} MiB, "
              f"change {change * 100:+.1f}% (limit +{growth * 100:.0f}%): {verdict}")
        checks_passed, checks_failed = (checks_passed + 1, checks_failed) if verdict == "ok" else (checks_passed, checks_failed + 1)

    status, body = Client(args.base, args.key).request("GET", "/readyz")
    alive = rss_kib(args.pid) is not None and status == 200
    print(f"check server alive and ready: {'ok' if alive else f'FAILED ({status} {body})'}")
    checks_passed, checks_failed = (checks_passed + 1, checks_failed) if alive else (checks_passed, checks_failed + 1)

    passed, failed_total = ok + checks_passed, failed + checks_failed
    print(f"soak: {passed} passed, {failed_total} failed", flush=True)
    sys.exit(1 if failed_total else 0)


if __name__ == "__main__":
    main()
