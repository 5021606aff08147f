#!/usr/bin/env python3
"""Soak test: drives a `glmtune serve` on loopback for a bounded time with a mix of dataset uploads
(raw and OpenAI multipart), training runs (some cancelled, some finished), chats (OpenAI and
dashboard, streamed and not, with a finished run's adapter too), event streams that drop and
reconnect with Last-Event-ID, deletions and reads. Then it reports the requests, the errors,
latency percentiles per kind and the server's memory over time, and exits non-zero on any error or
on memory that keeps growing.

    scripts/soak.py --binary target/release/glmtune [--minutes 20] [--workers 4] [--json REPORT]

Python's standard library only. The server gets a fresh data folder and the tiny fixture model.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "chatglm6b-tiny")
TRAIN = open(os.path.join(FIXTURE, "train.jsonl"), "rb").read()

# What a request of each kind may answer without being an error. Cancelling a run that finished
# first is a 409 by design, as is a chat with a run that was cancelled.
EXPECTED = {
    "upload": {201},
    "upload_multipart": {200},
    "run_create": {201},
    "run_cancel": {200, 409},
    "run_get": {200},
    "chat_openai": {200},
    "chat_openai_stream": {200},
    "chat_dashboard": {200, 201},
    "chat_dashboard_stream": {200},
    "chat_create": {201},
    "events": {200},
    "dataset_delete": {204, 409},
    "read": {200},
}


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = {}  # kind -> [seconds]
        self.errors = []  # (kind, description)
        self.events_received = 0
        self.reconnects = 0

    def record(self, kind, seconds, status, detail=""):
        with self.lock:
            self.latency.setdefault(kind, []).append(seconds)
            if status not in EXPECTED[kind]:
                self.errors.append((kind, f"HTTP {status} {detail[:300]}"))

    def fail(self, kind, description):
        with self.lock:
            self.latency.setdefault(kind, [])
            self.errors.append((kind, description[:300]))


class Client:
    def __init__(self, address, key, stats):
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.key = key
        self.stats = stats

    def request(self, kind, method, path, body=None, content_type="application/json", headers=None):
        """One request on its own connection; returns (status, body bytes) or None on failure."""
        start = time.monotonic()
        all_headers = {"Authorization": f"Bearer {self.key}"}
        if body is not None:
            all_headers["Content-Type"] = content_type
        all_headers.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        try:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=300)
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            data = response.read()
            connection.close()
        except Exception as error:  # a dropped connection or a timeout is an error of the server
            self.stats.fail(kind, f"{method} {path}: {type(error).__name__}: {error}")
            return None
        self.stats.record(kind, time.monotonic() - start, response.status, f"{method} {path}: {data!r}")
        return response.status, data

    def json(self, kind, method, path, body=None):
        result = self.request(kind, method, path, body)
        if result is None:
            return None, None
        status, data = result
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            self.stats.fail(kind, f"{method} {path}: not JSON: {data[:200]!r}")
            return status, None

    def stream(self, kind, path, body, read_seconds=None, last_event_id=None):
        """An SSE request read to its end (or for `read_seconds`, then dropped); returns the
        last event id seen."""
        start = time.monotonic()
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "text/event-stream"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        method = "GET" if body is None else "POST"
        last = last_event_id
        first = None
        try:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=300)
            connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            response = connection.getresponse()
            if response.status != 200:
                data = response.read()
                self.stats.record(kind, time.monotonic() - start, response.status, f"{path}: {data!r}")
                connection.close()
                return last
            while True:
                if read_seconds is not None:
                    left = read_seconds - (time.monotonic() - start)
                    if left <= 0:
                        break
                    connection.sock.settimeout(left)
                try:
                    line = response.readline()
                except TimeoutError:
                    break  # the client leaves, as a closed browser tab does
                if not line:
                    break
                if first is None:
                    first = time.monotonic() - start
                if line.startswith(b"id:"):
                    last = int(line[3:].strip())
                    with self.stats.lock:
                        self.stats.events_received += 1
                if line.strip() == b"data: [DONE]":
                    break
            connection.close()
        except Exception as error:
            self.stats.fail(kind, f"stream {path}: {type(error).__name__}: {error}")
            return last
        # Streams are timed to their first line: the rest is the stream's own pace.
        self.stats.record(kind, first if first is not None else time.monotonic() - start, 200)
        return last


def multipart(fields):
    boundary = "soak-%x" % random.getrandbits(64)
    body = b""
    for name, filename, value in fields:
        body += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"".encode()
        if filename:
            body += f"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream".encode()
        body += b"\r\n\r\n" + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Mix:
    """The shared state of the workers: datasets and runs made so far."""

    def __init__(self, client):
        self.client = client
        self.lock = threading.Lock()
        self.datasets = []
        self.runs = []  # ids of runs started
        self.succeeded = []
        self.active_runs = 0

    def upload(self, rng):
        if rng.random() < 0.5:
            name = f"soak-{rng.getrandbits(32):x}.jsonl"
            result = self.client.request("upload", "POST", f"/api/v1/datasets?name={name}", TRAIN, "application/octet-stream")
        else:
            data, content_type = multipart([("purpose", None, b"fine-tune"), ("file", "soak.jsonl", TRAIN)])
            result = self.client.request("upload_multipart", "POST", "/v1/files", data, content_type)
        if result and result[0] in (200, 201):
            with self.lock:
                self.datasets.append(json.loads(result[1])["id"])

    def delete_dataset(self, rng):
        with self.lock:
            # Keep a few for runs; a dataset a run uses answers 409, which is fine.
            if len(self.datasets) < 4:
                return
            dataset = self.datasets.pop(rng.randrange(len(self.datasets)))
        self.client.request("dataset_delete", "DELETE", f"/api/v1/datasets/{dataset}")

    def run(self, rng):
        with self.lock:
            busy = not self.datasets or self.active_runs >= 2
            if not busy:
                dataset = rng.choice(self.datasets)
                self.active_runs += 1
        if busy:
            return self.read(rng)
        try:
            settings = {"max_steps": rng.choice([8, 32, 96]), "pre_seq_len": 4, "save_steps": 8}
            _, run = self.client.json("run_create", "POST", "/api/v1/runs", {"model": "tiny", "train_dataset": dataset, "preset": "quick", "settings": settings})
            if not run or "id" not in run:
                return
            run_id = run["id"]
            with self.lock:
                self.runs.append(run_id)
            cancel = rng.random() < 0.35
            if cancel:
                time.sleep(rng.uniform(0.1, 1.5))
                self.client.json("run_cancel", "POST", f"/api/v1/runs/{run_id}/cancel", {})
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                _, state = self.client.json("run_get", "GET", f"/api/v1/runs/{run_id}")
                if not state:
                    return
                if state.get("state") in ("succeeded", "failed", "cancelled"):
                    if state["state"] == "failed":
                        self.client.stats.fail("run_get", f"run {run_id} failed: {state.get('error')}")
                    if state["state"] == "succeeded":
                        with self.lock:
                            self.succeeded.append(run_id)
                    return
                time.sleep(0.5)
            self.client.stats.fail("run_get", f"run {run_id} did not finish in 300 s")
        finally:
            with self.lock:
                self.active_runs -= 1

    def events(self, rng):
        with self.lock:
            run_id = rng.choice(self.runs) if self.runs else None
        if run_id is None:
            return self.read(rng)
        # Drop the stream after a moment, then come back where it left off, as a browser does.
        last = None
        for _ in range(rng.randint(1, 3)):
            last = self.client.stream("events", f"/api/v1/runs/{run_id}/events", None, read_seconds=rng.uniform(0.3, 2.0), last_event_id=last)
            with self.client.stats.lock:
                self.client.stats.reconnects += 1

    def chat(self, rng):
        question = rng.choice(["你好", "类型#上衣*颜色#白色", "hello", "写一首诗"])
        kind = rng.random()
        if kind < 0.35:
            body = {"model": "tiny", "messages": [{"role": "user", "content": question}], "max_tokens": rng.randint(1, 24)}
            self.client.json("chat_openai", "POST", "/v1/chat/completions", body)
        elif kind < 0.6:
            body = {"model": "tiny", "messages": [{"role": "user", "content": question}], "max_tokens": rng.randint(1, 24), "stream": True}
            self.client.stream("chat_openai_stream", "/v1/chat/completions", body)
        else:
            with self.lock:
                run_id = rng.choice(self.succeeded) if self.succeeded and rng.random() < 0.5 else None
            _, chat = self.client.json("chat_create", "POST", "/api/v1/chats", {"model": "tiny", "run_id": run_id})
            if not chat or "id" not in chat:
                return
            for _ in range(rng.randint(1, 3)):
                body = {"content": question, "max_tokens": rng.randint(1, 16)}
                if rng.random() < 0.5:
                    body["stream"] = True
                    self.client.stream("chat_dashboard_stream", f"/api/v1/chats/{chat['id']}/messages", body)
                else:
                    self.client.json("chat_dashboard", "POST", f"/api/v1/chats/{chat['id']}/messages", body)

    def read(self, rng):
        path = rng.choice(["/api/v1/runs", "/api/v1/datasets", "/api/v1/chats", "/api/v1/models", "/metrics", "/healthz", "/v1/models"])
        self.client.request("read", "GET", path)


# Fewer adapters kept in memory than the soak makes, so that the cache's eviction is exercised.
ADAPTER_CACHE = 4

ACTIONS = [("upload", 2), ("delete_dataset", 1), ("run", 2), ("events", 2), ("chat", 4), ("read", 3)]


def worker(mix, seed, deadline):
    rng = random.Random(seed)
    names = [name for name, weight in ACTIONS for _ in range(weight)]
    while time.monotonic() < deadline:
        getattr(mix, rng.choice(names))(rng)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True, help="the glmtune binary to serve with")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, help="overrides --minutes (short runs in tests)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the report here as JSON")
    args = parser.parse_args()
    duration = args.seconds if args.seconds is not None else args.minutes * 60
    # Stopped early, it still stops its server and removes its data folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("soak: stopped"))

    data_dir = tempfile.mkdtemp(prefix="glmtune-soak-")
    tail = ""
    try:
        key = subprocess.run(
            [args.binary, "token", "create", "--name", "soak", "--role", "admin", "--data-dir", data_dir],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        server = subprocess.Popen(
            [args.binary, "serve", "--bind", "127.0.0.1:0", "--data-dir", data_dir,
             "--model", f"tiny={os.path.join(FIXTURE, 'model')}", "--rate-limit", "0",
             "--max-concurrent-runs", "2", "--adapter-cache", str(ADAPTER_CACHE),
             "--web-dir", os.path.join(ROOT, "www")],
            stdout=subprocess.PIPE, stderr=open(os.path.join(data_dir, "server.log"), "wb"), text=True,
        )
        line = server.stdout.readline()
        if "listening on" not in line:
            sys.exit(f"soak: the server did not start: {line!r}")
        address = line.strip().rsplit("http://", 1)[1]
        threading.Thread(target=lambda: server.stdout.read(), daemon=True).start()
        try:
            report = soak(server, address, key, args, duration)
        finally:
            server.terminate()
            server.wait(timeout=60)
        report["server_exit_code"] = server.returncode
    finally:
        log = os.path.join(data_dir, "server.log")
        if os.path.exists(log):
            with open(log, errors="replace") as text:
                tail = text.read()[-2000:]
        shutil.rmtree(data_dir, ignore_errors=True)
    print_report(report, tail)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
    if report["errors"] or report["memory"]["growing"] or report["server_exit_code"] != 0:
        sys.exit(1)


def soak(server, address, key, args, duration):
    stats = Stats()
    client = Client(address, key, stats)
    mix = Mix(client)
    started = time.monotonic()
    deadline = started + duration
    samples = []  # (seconds since start, RSS in KiB)

    def sample_memory():
        while time.monotonic() < deadline:
            rss = rss_kib(server.pid)
            if rss is not None:
                samples.append((round(time.monotonic() - started, 1), rss))
            time.sleep(min(5.0, max(duration / 100, 0.5)))

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=worker, args=(mix, args.seed * 1000 + i, deadline), daemon=True) for i in range(args.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sampler.join()
    elapsed = time.monotonic() - started
    metrics = client.request("read", "GET", "/metrics")
    cached_adapters = None
    for line in (metrics[1].decode().splitlines() if metrics else []):
        if line.startswith("glmtune_cached_adapters "):
            cached_adapters = int(line.split()[1])
    if not samples:
        sys.exit("soak: the server's memory could not be read (did it exit?)")

    everything = [s for values in stats.latency.values() for s in values]
    kinds = {
        kind: {
            "requests": len(values),
            "p50_ms": round(1000 * percentile(values, 0.5), 1) if values else None,
            "p99_ms": round(1000 * percentile(values, 0.99), 1) if values else None,
            "max_ms": round(1000 * max(values), 1) if values else None,
        }
        for kind, values in sorted(stats.latency.items())
    }
    # Growth: the least resident size of the last quarter against that of the second (the first is
    # warm-up: the model, the allocator's arenas and SQLite's caches fill then). The least, because
    # the server returns freed memory every 30 s: the troughs are what it holds, the peaks are
    # responses in flight.
    quarter = max(len(samples) // 4, 1)
    early = min(rss for _, rss in samples[quarter:2 * quarter]) if len(samples) > 1 else samples[0][1]
    late = min(rss for _, rss in samples[-quarter:])
    growth = late - early
    memory = {
        "start_mib": round(samples[0][1] / 1024, 1),
        "after_warmup_mib": round(early / 1024, 1),
        "end_mib": round(samples[-1][1] / 1024, 1),
        "max_mib": round(max(rss for _, rss in samples) / 1024, 1),
        "growth_mib": round(growth / 1024, 1),
        # Growing: the troughs up by over a quarter and 64 MiB from the second quarter to the last.
        "growing": growth > max(0.25 * early, 64 * 1024),
        "series": [(t, round(rss / 1024, 1)) for t, rss in samples[:: max(len(samples) // 40, 1)]],
    }
    return {
        "seconds": round(elapsed, 1),
        "workers": args.workers,
        "requests": len(everything),
        "errors": len(stats.errors),
        "error_samples": stats.errors[:20],
        "p50_ms": round(1000 * percentile(everything, 0.5), 1),
        "p99_ms": round(1000 * percentile(everything, 0.99), 1),
        "by_kind": kinds,
        "runs_started": len(mix.runs),
        "runs_succeeded": len(mix.succeeded),
        "events_received": stats.events_received,
        "stream_reconnects": stats.reconnects,
        "adapters_in_memory": cached_adapters,
        "adapter_cache": ADAPTER_CACHE,
        "memory": memory,
    }


def print_report(report, server_log_tail):
    print(f"soak: {report['seconds']} s, {report['workers']} workers: {report['requests']} requests, "
          f"{report['errors']} errors; p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms")
    print(f"  runs: {report['runs_started']} started, {report['runs_succeeded']} succeeded; "
          f"events received: {report['events_received']} over {report['stream_reconnects']} (re)connections; "
          f"adapters in memory at the end: {report['adapters_in_memory']} (cache of {report['adapter_cache']})")
    print(f"  {'kind':24} {'requests':>8} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for kind, row in report["by_kind"].items():
        print(f"  {kind:24} {row['requests']:>8} {row['p50_ms']!s:>9} {row['p99_ms']!s:>9} {row['max_ms']!s:>9}")
    memory = report["memory"]
    print(f"  server RSS: start {memory['start_mib']} MiB, after warm-up {memory['after_warmup_mib']} MiB, "
          f"end {memory['end_mib']} MiB, max {memory['max_mib']} MiB, growth of the troughs {memory['growth_mib']} MiB"
          f"{' (GROWING)' if memory['growing'] else ''}")
    print("  over time (s, MiB): " + " ".join(f"{t:.0f}:{m}" for t, m in memory["series"]))
    for kind, description in report["error_samples"]:
        print(f"  error: {kind}: {description}")
    if report["errors"] or report.get("server_exit_code"):
        print("  server log (end):\n" + server_log_tail)


if __name__ == "__main__":
    main()
