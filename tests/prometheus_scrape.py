#!/usr/bin/env python3
"""tests/prometheus_scrape.py RECONCILER PROMETHEUS_YML

examples/reconciler scraped by a real Prometheus server (Debian's
`prometheus` package; PROMETHEUS in the environment names another binary).

The example reads a known key file (200 keys: fail/, flaky/ and plain ones,
in a fixed shuffled order) and lingers, serving its final metrics, until
this script sends it SIGTERM.  A Prometheus server on a loopback port, with
the committed examples/prometheus.yml pointed at the example's port and its
data in a temporary directory, scrapes it every second.  The script waits
on what it can observe (the example's port line and summary line,
Prometheus's /-/ready, the target's health, the timestamps of the scraped
samples; each wait bounded, none a fixed sleep), then queries Prometheus's
HTTP API at the time of a scrape made after the example's summary (its
final values) and checks them against the key file and the summary:

  with F fail/, L flaky/, O other keys, N = F + L + O, m = max_attempts = 3:
  every key is new when read (absent -> queued: one counted add each); a
  fail/ key runs m + 1 times, m of them ending in a rate-limited retry, and
  is given up; a flaky/ key runs twice with one retry; each retry's delayed
  add is counted once when it fires (the key is held or absent then, never
  dirty: nothing else adds it).  So

  processed                    = O + 2 L + (m + 1) F
  retried, retries_total       = L + m F
  workqueue_adds_total         = N + retried
  workqueue_give_ups_total     = F
  queue_duration _count        = adds_total (every counted add was got)
  work_duration _count         = processed
  depth, delayed_items         = 0

and histogram_quantile(0.5, ...) over the queue-duration buckets must be a
finite number >= 0, within the buckets' finite bounds, equal to the same
interpolation computed here from the scraped buckets.

Exit status 0 (passed), 1 (failed), 77 (skipped: no prometheus binary).
"""

import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

SKIP = 77
MAX_ATTEMPTS = 3
N_FAIL, N_FLAKY, N_OK = 20, 30, 150
QUEUE = 'name="reconcile"'
# Every wait together stays under meson's 120 s timeout for the test.
BUDGET_S = 105
DEFAULT_TARGET = "'127.0.0.1:9464'"  # the target in examples/prometheus.yml

# Loopback only: no proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Failure(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def http_get(url, timeout=5.0):
    """(status, content type, body) of a GET; errors other than HTTP
    statuses raise OSError."""
    try:
        with OPENER.open(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, e.headers.get("Content-Type"), body


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class Run:
    def __init__(self, tmp):
        self.tmp = tmp
        self.deadline = time.monotonic() + BUDGET_S
        self.procs = {}  # name -> (Popen, log path)

    def start(self, name, argv, log_path, stdout_path=None):
        out = open(stdout_path or log_path, "w")
        err = open(log_path, "w") if stdout_path else subprocess.STDOUT
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        finally:
            out.close()
            if stdout_path:
                err.close()
        self.procs[name] = (p, log_path)
        return p

    def wait_for(self, what, probe, timeout, watch=()):
        """Poll probe() until it returns something other than None; fail
        after timeout seconds (or the run's budget), or when a process in
        watch exits."""
        end = min(time.monotonic() + timeout, self.deadline)
        delay = 0.02
        last_error = None
        while True:
            for name in watch:
                p, _ = self.procs[name]
                if p.poll() is not None:
                    raise Failure(f"{name} exited ({p.returncode}) while waiting for {what}")
            try:
                v = probe()
            except OSError as e:  # not listening yet, reset, timed out
                v, last_error = None, e
            if v is not None:
                return v
            if time.monotonic() >= end:
                raise Failure(f"timed out waiting for {what}"
                              + (f" (last error: {last_error})" if last_error else ""))
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def stop(self, name, sig=signal.SIGTERM, timeout=30):
        p, _ = self.procs[name]
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def dump_logs(self):
        for name, (_, path) in self.procs.items():
            text = read_text(path)
            lines = text.splitlines()[-25:]
            log(f"--- {name} ({os.path.basename(path)}), last {len(lines)} lines:")
            for line in lines:
                log("    " + line)


def write_keys(path):
    keys = ([f"fail/{i}" for i in range(N_FAIL)] +
            [f"flaky/{i}" for i in range(N_FLAKY)] +
            [f"default/obj-{i}" for i in range(N_OK)])
    random.Random(20240601).shuffle(keys)
    with open(path, "w") as f:
        f.write("".join(k + "\n" for k in keys))
    return keys


def bucket_quantile(q, buckets):
    """Prometheus's histogram_quantile over [(upper bound, cumulative
    count)], the +Inf bucket included (promql/quantile.go)."""
    buckets = sorted(buckets)
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return math.nan
    observations = buckets[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next(i for i, (_, c) in enumerate(buckets) if c >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)


def main():
    if len(sys.argv) != 3:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    example, config_in = sys.argv[1], sys.argv[2]
    prometheus = os.environ.get("PROMETHEUS") or shutil.which("prometheus")
    if not prometheus:
        print("prometheus not found (Debian package prometheus): skipped")
        return SKIP

    # meson's timeout sends SIGTERM: unwind through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    tmp = tempfile.mkdtemp(prefix="kwq-prometheus-")
    run = Run(tmp)
    try:
        check(run, example, config_in, prometheus)
        log("PASS")
        return 0
    except Failure as e:
        log(f"FAIL: {e}")
        run.dump_logs()
        return 1
    finally:
        for name in list(run.procs):
            run.stop(name, timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def check(run, example, config_in, prometheus):
    tmp = run.tmp
    failures = []

    def expect(what, got, want):
        ok = got == want
        log(f"{'ok  ' if ok else 'FAIL'} {what}: {got}" + ("" if ok else f", expected {want}"))
        if not ok:
            failures.append(what)

    # -- the example, on a port of its choosing
    keys = write_keys(os.path.join(tmp, "keys.txt"))
    out_path = os.path.join(tmp, "example.out")
    # the linger outlasts the whole run: the SIGTERM below ends it
    run.start("example", [example, "--listen", "127.0.0.1:0", "--workers", "4",
                          "--work-ms", "1", "--max-attempts", str(MAX_ATTEMPTS),
                          "--linger-ms", str(1000 * (BUDGET_S + 60)),
                          os.path.join(tmp, "keys.txt")],
              os.path.join(tmp, "example.err"), stdout_path=out_path)

    def port_line():
        m = re.search(r"serving http://127\.0\.0\.1:(\d+)/metrics", read_text(out_path))
        return int(m.group(1)) if m else None

    port = run.wait_for("the example's port", port_line, 30, watch=["example"])
    base = f"http://127.0.0.1:{port}"
    log(f"example serving on {base}/metrics")

    # -- Prometheus on the committed config, the target's port replaced
    config = read_text(config_in)
    if config.count(DEFAULT_TARGET) != 1:
        raise Failure(f"{config_in} does not name the target {DEFAULT_TARGET} once")
    config_path = os.path.join(tmp, "prometheus.yml")
    with open(config_path, "w") as f:
        f.write(config.replace(DEFAULT_TARGET, f"'127.0.0.1:{port}'"))
    promtool = (shutil.which("promtool", path=os.path.dirname(prometheus)) or
                shutil.which("promtool"))
    if promtool:
        r = subprocess.run([promtool, "check", "config", config_path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise Failure(f"promtool check config: {r.stdout.strip()}")
        log("ok   promtool check config")

    for attempt in range(3):  # the port picked may be taken before it binds
        pport = free_port()
        api = f"http://127.0.0.1:{pport}"
        plog = os.path.join(tmp, f"prometheus-{attempt}.log")
        run.start("prometheus", [prometheus, f"--config.file={config_path}",
                                 f"--storage.tsdb.path={os.path.join(tmp, 'data')}",
                                 f"--web.listen-address=127.0.0.1:{pport}"], plog)
        try:
            run.wait_for("Prometheus to be ready",
                         lambda: True if http_get(api + "/-/ready", 2)[0] == 200 else None,
                         60, watch=["prometheus"])
            break
        except Failure:
            if attempt < 2 and "address already in use" in read_text(plog):
                run.stop("prometheus")
                continue
            raise
    log(f"Prometheus ready on {api}")

    def query(expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = at
        status, _, body = http_get(api + "/api/v1/query?" + urllib.parse.urlencode(params))
        reply = json.loads(body)
        if status != 200 or reply.get("status") != "success":
            raise Failure(f"query {expr}: HTTP {status}: {body[:300]!r}")
        return reply["data"]["result"]

    def target_up():
        status, _, body = http_get(api + "/api/v1/targets?state=active")
        if status != 200:
            return None
        for t in json.loads(body)["data"]["activeTargets"]:
            if t["labels"].get("job") == "reconciler" and t["health"] == "up":
                return t
        return None

    run.wait_for("the target to be up", target_up, 60, watch=["example", "prometheus"])
    log("ok   target up")

    # -- the example's summary: every key has settled, the values are final
    summary_re = (r"reconciler: (\d+) keys read, (\d+) processed, (\d+) retried, "
                  r"(\d+) given up")

    def summary_line():
        m = re.search(summary_re, read_text(out_path))
        return tuple(int(g) for g in m.groups()) if m else None

    nread, processed, retried, given_up = run.wait_for(
        "the example's summary", summary_line, 60, watch=["example"])

    # -- a scrape that started after the summary was seen.  Scrapes of one
    # target run one after the other, each committed before the next
    # starts: of two samples newer than the latest visible now, the second
    # was scraped after this point.  No clock is compared.
    def sample_ts():
        r = query(f"timestamp(workqueue_adds_total{{{QUEUE}}})")
        return r[0]["value"][1] if r else None

    latest = sample_ts()
    newer = []

    def second_newer():
        ts = sample_ts()
        if ts is not None and (latest is None or float(ts) > float(latest)) and ts not in newer:
            newer.append(ts)
        return newer[1] if len(newer) >= 2 else None

    at = run.wait_for("two scrapes after the summary", second_newer, 60,
                      watch=["example", "prometheus"])
    log(f"final scrape at {at}")

    def scalar(expr):
        r = query(expr, at)
        if len(r) != 1:
            raise Failure(f"{expr}: {len(r)} series at {at}: {r}")
        return float(r[0]["value"][1])

    # -- the numbers
    n = len(keys)
    want_processed = N_OK + 2 * N_FLAKY + (MAX_ATTEMPTS + 1) * N_FAIL
    want_retried = N_FLAKY + MAX_ATTEMPTS * N_FAIL
    expect("summary: keys read", nread, n)
    expect("summary: processed", processed, want_processed)
    expect("summary: retried", retried, want_retried)
    expect("summary: given up", given_up, N_FAIL)

    adds = scalar(f"workqueue_adds_total{{{QUEUE}}}")
    expect("workqueue_adds_total (keys read + retried)", adds, float(nread + retried))
    expect("workqueue_adds_total (from the key file)", adds, float(n + want_retried))
    expect("workqueue_give_ups_total", scalar(f"workqueue_give_ups_total{{{QUEUE}}}"),
           float(N_FAIL))
    expect("workqueue_retries_total", scalar(f"workqueue_retries_total{{{QUEUE}}}"),
           float(want_retried))
    expect("workqueue_depth", scalar(f"workqueue_depth{{{QUEUE}}}"), 0.0)
    expect("workqueue_delayed_items", scalar(f"workqueue_delayed_items{{{QUEUE}}}"), 0.0)
    expect("workqueue_queue_duration_seconds_count",
           scalar(f"workqueue_queue_duration_seconds_count{{{QUEUE}}}"), adds)
    expect("workqueue_work_duration_seconds_count",
           scalar(f"workqueue_work_duration_seconds_count{{{QUEUE}}}"), float(processed))

    buckets = [(float(s["metric"]["le"]), float(s["value"][1]))
               for s in query(f"workqueue_queue_duration_seconds_bucket{{{QUEUE}}}", at)]
    expect("queue duration buckets", len(buckets), 11)
    finite = sorted(le for le, _ in buckets if not math.isinf(le))
    p50 = scalar("histogram_quantile(0.5, sum by (le) "
                 f"(workqueue_queue_duration_seconds_bucket{{{QUEUE}}}))")
    mine = bucket_quantile(0.5, buckets)
    sane = math.isfinite(p50) and 0 <= p50 <= finite[-1]
    log(f"{'ok  ' if sane else 'FAIL'} queue duration p50: {p50} s "
        f"(finite, in [0, {finite[-1]}]; here from the buckets: {mine} s)")
    if not sane:
        failures.append("queue duration p50 range")
    if not (math.isfinite(mine) and math.isclose(p50, mine, rel_tol=1e-9, abs_tol=1e-15)):
        log("FAIL queue duration p50 differs from the buckets' interpolation")
        failures.append("queue duration p50 value")

    # -- the example's own answers
    status, ctype, body = http_get(base + "/metrics")
    expect("GET /metrics status", status, 200)
    expect("GET /metrics content type", ctype, "text/plain; version=0.0.4; charset=utf-8")
    expect("GET /metrics adds line",
           f'workqueue_adds_total{{{QUEUE}}} {int(adds)}\n' in body.decode(), True)
    expect("GET /other status", http_get(base + "/other")[0], 404)
    gave_up = sorted(re.findall(r"giving up on (\S+) after",
                                read_text(run.procs["example"][1])))
    expect(f"give-ups logged ({len(gave_up)}) are the fail/ keys, once each",
           gave_up == sorted(f"fail/{i}" for i in range(N_FAIL)), True)

    # -- stop: SIGTERM ends the linger; the example cleans up and exits 0
    expect("example exit status after SIGTERM", run.stop("example"), 0)
    if failures:
        raise Failure(f"{len(failures)} check(s) failed: {', '.join(failures)}")


if __name__ == "__main__":
    sys.exit(main())
