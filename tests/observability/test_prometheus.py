#!/usr/bin/env python3
"""A real Prometheus scrapes a ToDD fleet running a repeated ping test.

Starts todd-server and two todd-agents (each agent serving /metrics) over
the embedded transport, a testrun `ping-lo` that the server runs every 2 s,
and Debian's prometheus on 127.0.0.1 scraping the server and both agents
every second. Then it asks Prometheus' HTTP API for:
  - every target up, with no scrape error (so the exposition parses);
  - todd_agents == 2, and todd_agent_info for both agents;
  - todd_testrun_result{testrun="ping-lo",metric="avg_latency_ms"}: one
    series per agent, target 127.0.0.1, a latency in milliseconds;
  - several samples of one series over time: the repeated runs keep it fresh;
  - todd_testruns_total{outcome="ok"} rising, todd_testrun_duration_seconds.

Usage: test_prometheus.py   (TODD_BUILD_DIR names the build directory)
Exit status 77 (SKIP) when prometheus is not installed, unless
TODD_REQUIRE_PROMETHEUS=1 (CI), which makes that a failure.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleet  # noqa: E402


def prometheus_binary():
    return os.environ.get("TODD_PROMETHEUS") or shutil.which("prometheus")


class Prometheus:
    """A private prometheus on 127.0.0.1 with its data in `work`."""

    def __init__(self, binary, work, targets):
        (self.port,) = fleet.free_ports(1)
        self.work = work
        cfg = work / "prometheus.yml"
        jobs = "".join(
            f"  - job_name: {job}\n"
            f"    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in addrs)}]\n"
            for job, addrs in targets.items())
        cfg.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
                       f"scrape_configs:\n{jobs}")
        self.proc = fleet.Process(
            "prometheus",
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={work / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            work / "prometheus.log")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, path, **params):
        q = ("?" + urllib.parse.urlencode(params)) if params else ""
        with urllib.request.urlopen(self.url(path + q), timeout=3) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise fleet.FleetError(f"Prometheus {path}: {body}")
        return body["data"]

    def query(self, expr):
        return self.api("/api/v1/query", query=expr)["result"]

    def stop(self):
        self.proc.stop()


def main():
    fleet.exit_on_sigterm()
    binary = prometheus_binary()
    if not binary:
        why = ("prometheus is not installed: install the Debian package "
               "prometheus (share/scripts/install-deps does)")
        if os.environ.get("TODD_REQUIRE_PROMETHEUS", "") not in ("", "0"):
            print("FAIL: " + why, file=sys.stderr)
            return 1
        print("SKIP: " + why)
        return fleet.SKIP

    with fleet.Fleet(agents=2, agent_metrics=True) as f:
        uuids = f.wait_agents()
        f.create_group("lo", "127.0.0.0/8")
        f.wait_grouped("lo")
        f.create_testrun("ping-lo", group="lo", interval="2s")
        prom = Prometheus(binary, f.work, {
            "todd-server": [f"127.0.0.1:{f.api_port}"],
            "todd-agent": [f"127.0.0.1:{p}" for p in f.agent_metrics_ports]})
        try:
            check(f, prom, uuids)
        except BaseException:
            print("---- prometheus, last lines of its log:", file=sys.stderr)
            print(prom.proc.tail(30), file=sys.stderr)
            raise
        finally:
            prom.stop()
    print("OK: Prometheus scraped the server and both agents; latency series "
          "per agent, agent count and run outcomes are queryable")
    return 0


def check(f, prom, uuids):
    who = f.processes() + [prom.proc]

    def ready():
        with urllib.request.urlopen(prom.url("/-/ready"), timeout=1) as r:
            return r.status == 200
    f.wait_for("prometheus answering /-/ready", ready, 30, who=who)

    def targets_up():
        active = prom.api("/api/v1/targets")["activeTargets"]
        bad = [(t["scrapeUrl"], t["health"], t.get("lastError", ""))
               for t in active if t["health"] != "up" or t.get("lastError")]
        if len(active) != 3 or bad:
            raise fleet.FleetError(f"{len(active)} target(s), not up: {bad}")
        return active
    f.wait_for("all 3 targets (server, 2 agents) up with no scrape error",
               targets_up, 30, who=who)

    def agents_counted():
        r = prom.query("todd_agents")
        return r and float(r[0]["value"][1]) == 2
    f.wait_for("todd_agents == 2 in Prometheus", agents_counted, 20, who=who)

    def agents_identified():
        r = prom.query("todd_agent_info")
        found = sorted(s["metric"]["uuid"] for s in r)
        if found != uuids:
            raise fleet.FleetError(f"todd_agent_info uuids {found}, want {uuids}")
        return True
    f.wait_for("todd_agent_info for both agents", agents_identified, 20, who=who)

    series = 'todd_testrun_result{testrun="ping-lo",metric="avg_latency_ms"}'

    def latency():
        r = prom.query(series)
        agents = sorted(s["metric"]["agent"] for s in r)
        if agents != uuids:
            raise fleet.FleetError(f"series for agents {agents}, want {uuids}")
        for s in r:
            v = float(s["value"][1])
            if s["metric"]["target"] != "127.0.0.1" or not 0 <= v < 1000:
                raise fleet.FleetError(f"unexpected sample {s}")
        return r
    got = f.wait_for(f"{series}: one series per agent", latency, 30, who=who)
    print("latency series:", json.dumps([(s["metric"]["agent"][:12], s["value"][1])
                                         for s in got]))

    # Each run stamps its results with the time they arrived, so samples of
    # distinct times pile up as the schedule repeats the run.
    def fresh():
        r = prom.query(f"count_over_time({series}[2m])")
        counts = [float(s["value"][1]) for s in r]
        if len(counts) != 2 or min(counts) < 3:
            raise fleet.FleetError(f"samples per series over 2m: {counts}")
        return counts
    f.wait_for("3 or more latency samples per agent (the schedule repeats the run)",
               fresh, 40, who=who)

    r = prom.query('todd_testruns_total{outcome="ok"}')
    if not r or float(r[0]["value"][1]) < 3:
        raise fleet.FleetError(f"todd_testruns_total{{outcome=\"ok\"}}: {r}")
    r = prom.query('todd_testruns_started_total{origin="schedule"}')
    if not r or float(r[0]["value"][1]) < 3:
        raise fleet.FleetError(f"todd_testruns_started_total{{origin=\"schedule\"}}: {r}")
    r = prom.query("todd_testrun_duration_seconds_count")
    if not r or float(r[0]["value"][1]) < 3:
        raise fleet.FleetError(f"todd_testrun_duration_seconds_count: {r}")
    r = prom.query('sum by (job) (process_resident_memory_bytes)')
    jobs = sorted(s["metric"]["job"] for s in r)
    if jobs != ["todd-agent", "todd-server"]:
        raise fleet.FleetError(f"process_resident_memory_bytes jobs: {jobs}")


if __name__ == "__main__":
    sys.exit(main())
