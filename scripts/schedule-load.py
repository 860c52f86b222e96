#!/usr/bin/env python3
"""Schedules under load (issue 13): one release `remedy serve` with SCHEDULES
schedules of EVERY each (default 200 x 12s = 1,000 ticks a minute) on the
hostile test plugin (`behave = ok`: a healthy detection without host calls),
for SECONDS. Reports tick jitter (a run's `started_at` minus the tick it
serves, both in the run record) and missed ticks (ticks that fell inside the
window, per schedule, with no run).

    cargo build --release -p remedy && cargo test -p remedy-e2e --no-run
    scripts/schedule-load.py [SCHEDULES] [EVERY_SECONDS] [SECONDS]
"""
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone

schedules = int(sys.argv[1]) if len(sys.argv) > 1 else 200
every = int(sys.argv[2]) if len(sys.argv) > 2 else 12
seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 65
port = int(os.environ.get("REMEDY_SCHEDULE_PORT", "18484"))
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
wasm = os.path.join(root, "target/wasm-test-plugins/wasm32-wasip2/release/hostile.wasm")
binary = os.path.join(root, "target/release/remedy")

tmp = tempfile.mkdtemp()
entries = ", ".join(f'{{ name = "s{i:04}", every = "{every}s" }}' for i in range(schedules))
with open(os.path.join(tmp, "remedy.toml"), "w") as f:
    f.write(f"""[server]
data_dir = "{tmp}/data"
[plugins.hostile]
path = "{wasm}"
config = {{ behave = "ok" }}
schedules = [{entries}]
""")
server = subprocess.Popen(
    [binary, "serve", "--config", f"{tmp}/remedy.toml", "--listen", f"127.0.0.1:{port}"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz")
        break
    except Exception:
        time.sleep(0.1)
# The window starts one interval after start-up, so every schedule has had
# its first tick, and ends a second before the stop.
begin = time.time() + every
time.sleep(seconds)
end = time.time() - 1
server.terminate()
server.wait()


def parse(t):
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


db = sqlite3.connect(os.path.join(tmp, "data/remedy.db"))
jitter, served = [], {}
for (rec,) in db.execute("select record from runs"):
    r = json.loads(rec)
    tick = parse(r["trigger"]["tick"])
    if begin <= tick < end:
        jitter.append((parse(r["started_at"]) - tick) * 1000)
        served.setdefault(r["trigger"]["schedule"], set()).add(tick)


def phase(key, every_ms):
    """Where in its interval a schedule ticks (as `Every::phase`: FNV-1a of
    `plugin/schedule`), in seconds."""
    h = 0xcbf29ce484222325
    for b in key.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return (h % every_ms) / 1000


# Each schedule ticks at the multiples of `every` since the epoch, shifted
# by its phase: the expected ticks are those inside the window.
expected = 0
for i in range(schedules):
    p = phase(f"hostile/s{i:04}", every * 1000)
    first = math.ceil((begin - p) / every) * every + p
    expected += sum(1 for k in range(1000) if first + k * every < end)
# A run whose tick is not on its schedule's phase would mean replicas (or
# this script) disagree with `Every::phase`.
unexpected = 0
for name, ts in served.items():
    p = phase(f"hostile/{name}", every * 1000)
    unexpected += sum(1 for t in ts if abs(round((t - p) / every) * every + p - t) > 0.0005)
got = sum(len(t) for t in served.values())
jitter.sort()
q = lambda p: jitter[min(len(jitter) - 1, int(p * len(jitter)))]
print(f"{schedules} schedules every {every} s = {schedules * 60 / every:.0f} ticks/min, window {end - begin:.0f} s")
print(f"ticks expected in the window: {expected}, run: {got}, missed: {expected - got}, off their phase: {unexpected}")
if jitter:
    print(f"tick -> run start: p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {jitter[-1]:.2f} ms")
