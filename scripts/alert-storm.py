#!/usr/bin/env python3
"""Alert storm: 10,000 alerts in 100 Alertmanager posts against a
release `remedy serve`, every tenth alert a repeat. Checks that every alert
was stored once, that every new one started (or skipped) a run, and reports
receipt → run start latency from the store, how fast the queue drained, the
same latency for 20 `severity=critical` alerts posted among the storm, and
the server's peak RSS.

    cargo build --release -p remedy && cargo test -p remedy-e2e --no-run
    scripts/alert-storm.py [POSTS] [ALERTS_PER_POST]

With REMEDY_BENCH_PG=postgres://postgres@127.0.0.1:5432 (psql needed) the
store is PostgreSQL: a database of the run's own, dropped at the end.
REMEDY_BIN=path measures another build (a baseline) instead of this one's.
REMEDY_STORM_HA=1 sends every post twice, as a pair of Alertmanagers in HA
does: each alert of the twin is a repeat.
"""
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime

posts = int(sys.argv[1]) if len(sys.argv) > 1 else 100
per_post = int(sys.argv[2]) if len(sys.argv) > 2 else 100
port = int(os.environ.get("REMEDY_STORM_PORT", "18383"))
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
wasm = os.path.join(root, "target/wasm-test-plugins/wasm32-wasip2/release/hostile.wasm")
binary = os.environ.get("REMEDY_BIN", os.path.join(root, "target/release/remedy"))

tmp = tempfile.mkdtemp()
pg_server = os.environ.get("REMEDY_BENCH_PG")
pg_db = f"remedy_storm_{os.getpid()}"
store_line = ""
if pg_server:
    subprocess.run(["psql", f"{pg_server}/postgres", "-qc", f"CREATE DATABASE {pg_db}"], check=True)
    store_line = f'store = "{pg_server}/{pg_db}"'
with open(os.path.join(tmp, "remedy.toml"), "w") as f:
    f.write(f"""[server]
data_dir = "{tmp}/data"
{store_line}
[plugins.hostile]
path = "{wasm}"
config = {{ behave = "ok" }}
alerts = ["StormAlert"]
""")
server = subprocess.Popen(
    [binary, "serve", "--config", f"{tmp}/remedy.toml", "--listen", f"127.0.0.1:{port}"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
base = f"http://127.0.0.1:{port}"
for _ in range(100):
    try:
        urllib.request.urlopen(base + "/healthz")
        break
    except Exception:
        time.sleep(0.1)
# A cold start serves quick code until the optimised code is compiled in the
# background (host/src/runtime/tiers.rs): storm the steady state, once the
# cache holds every plugin's optimised code (the bundled ones and hostile).
for _ in range(600):
    compiled = os.path.join(tmp, "data", "compiled")
    if os.path.isdir(compiled) and sum(n.endswith(".cwasm") for n in os.listdir(compiled)) >= 9:
        break
    time.sleep(0.1)


def alert(i):
    # Every tenth alert repeats the one before it (same fingerprint, start).
    n = i - 1 if i % 10 == 9 else i
    return {"status": "firing", "labels": {"alertname": "StormAlert", "instance": f"host-{n}"},
            "annotations": {}, "startsAt": "2026-11-27T03:10:00Z", "fingerprint": f"storm-{n}"}


statuses = []


answer_ms = []


def post(p):
    body = {"version": "4", "status": "firing", "receiver": "remedy",
            "alerts": [alert(p * per_post + j) for j in range(per_post)]}
    req = urllib.request.Request(base + "/v1/alerts", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    t0 = time.time()
    with urllib.request.urlopen(req) as r:
        statuses.append((r.status, json.load(r)))
    answer_ms.append((time.time() - t0) * 1000)


CRITICAL = 20


def post_critical(k):
    """One critical alert, posted among the storm's posts (CRITICAL of them,
    spread over the storm)."""
    body = {"version": "4", "status": "firing", "receiver": "remedy", "alerts": [
        {"status": "firing", "labels": {"alertname": "StormAlert", "instance": f"critical-{k}",
                                        "severity": "critical"},
         "annotations": {}, "startsAt": "2026-11-27T03:10:00Z", "fingerprint": f"critical-{k}"}]}
    req = urllib.request.Request(base + "/v1/alerts", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        r.read()


ha = os.environ.get("REMEDY_STORM_HA") == "1"
started = time.time()
threads = [threading.Thread(target=post, args=(p,)) for p in range(posts) for _ in range(1 + ha)]
for k in reversed(range(CRITICAL)):
    threads.insert((1 + ha) * posts * k // CRITICAL + 1, threading.Thread(target=post_critical, args=(k,)))
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.time() - started
# Receipt is durable at the 202 (runs stored `queued`); wait for the queue
# to drain before reading run start times.
for _ in range(600):
    with urllib.request.urlopen(base + "/v1/runs?status=queued&limit=1") as r:
        if not json.load(r)["runs"]:
            break
    time.sleep(0.1)
time.sleep(1)
# The most memory the server held, start-up (and its plugin compiles) included.
try:
    with open(f"/proc/{server.pid}/status") as f:
        peak_kb = next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
except (OSError, StopIteration):
    peak_kb = None
server.terminate()
server.wait()



def rows(sql):
    """The rows of a query, from whichever store the server used."""
    if pg_server:
        out = subprocess.run(["psql", f"{pg_server}/{pg_db}", "-AtF", "\t", "-c", sql],
                             check=True, capture_output=True, text=True).stdout
        return [tuple(line.split("\t")) for line in out.splitlines() if line]
    return list(sqlite3.connect(os.path.join(tmp, "data/remedy.db")).execute(sql))


total = posts * per_post
unique = len({alert(i)["fingerprint"] for i in range(total)})
stored = int(rows("select count(*) from alerts where fingerprint not like 'critical-%'")[0][0])
received = {fp: at for fp, at in rows("select fingerprint, received_at from alerts")}
lat = []
critical_ms = []
first_receipt = last_start = None
for (rec,) in rows("select record from runs where status not in ('queued', 'skipped')"):
    r = json.loads(rec)
    fp = r["trigger"]["alert"]["fingerprint"]
    t0 = datetime.fromisoformat(received[fp].replace("Z", "+00:00"))
    t1 = datetime.fromisoformat(r["started_at"].replace("Z", "+00:00"))
    first_receipt = t0 if first_receipt is None else min(first_receipt, t0)
    last_start = t1 if last_start is None else max(last_start, t1)
    if fp.startswith("critical-"):
        critical_ms.append((t1 - t0).total_seconds() * 1000)
        continue
    lat.append((t1 - t0).total_seconds() * 1000)
lat.sort()
dups = sum(s[1]["duplicates"] for s in statuses)
answer_ms.sort()
print(f"posts: {len(statuses)} (all 202: {all(s[0] == 202 for s in statuses)}) in {elapsed:.2f} s")
print(f"answer to Alertmanager: p50 {answer_ms[len(answer_ms) // 2]:.1f} ms, p99 {answer_ms[min(len(answer_ms) - 1, int(0.99 * len(answer_ms)))]:.1f} ms")
print(f"alerts sent: {total}, distinct: {unique}, stored: {stored}, answered duplicate: {dups}")
print(f"runs recorded: {len(lat)} (one per distinct alert: {len(lat) == unique})")
if lat:
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(f"receipt -> run start: p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {lat[-1]:.1f} ms")
    span = (last_start - first_receipt).total_seconds()
    print(f"queue drained: {len(lat)} runs started {span:.2f} s after the first receipt "
          f"({len(lat) / span:.0f} runs/s)")
if peak_kb is not None:
    print(f"server peak RSS: {peak_kb // 1024} MiB")
critical_ms.sort()
if len(critical_ms) == CRITICAL:
    c = lambda p: critical_ms[min(len(critical_ms) - 1, int(p * len(critical_ms)))]
    print(f"critical alerts posted mid-storm ({CRITICAL}): receipt -> run start p50 {c(0.5):.1f} ms, "
          f"p99 {c(0.99):.1f} ms")
else:
    print(f"critical alerts posted mid-storm: {len(critical_ms)} of {CRITICAL} runs recorded")
if pg_server:
    subprocess.run(["psql", f"{pg_server}/postgres", "-qc", f"DROP DATABASE IF EXISTS {pg_db} WITH (FORCE)"], check=True)
