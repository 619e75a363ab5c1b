#!/usr/bin/env python3
"""Test-run wall time with a server and agents as separate processes.

Starts a todd-server and N todd-agent processes over a transport plugin
(default: the embedded zeromq transport), defines a group and a test run of
an *instant* testlet (prints {} at once), and times `todd run NAME -y -j`
(the whole CLI process: request, status stream, result) over many runs.
Baseline, same run: `todd groups` (one CLI process and one REST round trip).
Also times an agent process from start until the server's group map lists
it, i.e. advert -> registration -> grouping -> SetGroup.

Usage: bench_processes.py [--build-dir build] [--comms zeromq] [--runs 30]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


class Cluster:
    def __init__(self, build, root, comms, work):
        self.build, self.root, self.comms, self.work = build, root, comms, work
        self.procs = []
        self.api = free_port()
        self.stream = free_port()
        self.assets = free_port()
        self.opts = []
        if comms == "zeromq":
            self.opts = ["--comms-opt",
                         f"endpoint=tcp://127.0.0.1:{free_port()}"]
        self.plugin_dir = os.path.join(build, "plugins", comms)
        self.testlets = os.path.join(work, "testlets")
        os.makedirs(self.testlets)
        instant = os.path.join(self.testlets, "instant")
        with open(instant, "w") as f:
            f.write('#!/bin/sh\n[ "$1" = check ] && echo "Check mode PASSED"'
                    ' && exit 0\necho "{}"\n')
        os.chmod(instant, 0o755)
        self.n_agents = 0

    def cfg(self, name, opt_dir, server=False):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            if server:
                f.write(f"[API]\nHost = 127.0.0.1\nPort = {self.api}\n"
                        f"StreamPort = {self.stream}\n[Assets]\n"
                        f"Port = {self.assets}\n")
            f.write(f"[Comms]\nPlugin = {self.comms}\n[LocalResources]\n"
                    f"IPAddrOverride = 127.0.0.1\nOptDir = {opt_dir}\n")
        return path

    def spawn(self, argv, log):
        p = subprocess.Popen(argv, stdout=open(log, "w"),
                             stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def start_server(self):
        opt = os.path.join(self.work, "server")
        os.makedirs(os.path.join(opt, "assets", "testlets"))
        os.makedirs(os.path.join(opt, "assets", "factcollectors"))
        self.spawn([os.path.join(self.build, "tools/todd-server/todd-server"),
                    "--config", self.cfg("server.cfg", opt, server=True),
                    "--plugin-dir", self.plugin_dir] + self.opts,
                   os.path.join(self.work, "server.log"))
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                self.rest("/v1/groups")
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("todd-server did not answer")

    def start_agent(self):
        self.n_agents += 1
        i = self.n_agents
        opt = os.path.join(self.work, f"agent{i}")
        os.makedirs(opt)
        p = self.spawn(
            [os.path.join(self.build, "tools/todd-agent/todd-agent"),
             "--config", self.cfg(f"agent{i}.cfg", opt),
             "--plugin-dir", self.plugin_dir, "--state-dir", opt,
             "--testlet-dir", self.testlets,
             "--factcollector-dir",
             os.path.join(self.root, "share", "factcollectors")] + self.opts,
            os.path.join(self.work, f"agent{i}.log"))
        return p, os.path.join(opt, "agent-uuid")

    def rest(self, path):
        with urllib.request.urlopen(
                f"http://127.0.0.1:{self.api}{path}", timeout=5) as r:
            return r.read().decode()

    def todd(self, *args, check=True):
        cmd = [os.path.join(self.build, "tools/todd/todd"), "-H", "127.0.0.1",
               "-P", str(self.api), "--stream-port", str(self.stream)]
        r = subprocess.run(cmd + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"todd {' '.join(args)}: {r.stdout}")
        return r.stdout

    def create(self, text):
        path = os.path.join(self.work, "obj.yml")
        with open(path, "w") as f:
            f.write(text)
        self.todd("create", path)

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_for(pred, limit=30.0, step=0.002):
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--comms", default="zeromq")
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    build = os.path.abspath(a.build_dir)
    work = tempfile.mkdtemp(prefix="todd-bench-")
    c = Cluster(build, root, a.comms, work)
    rows = []
    try:
        c.start_server()
        c.create("type: group\nlabel: bench\nspec:\n  group: bench\n"
                 "  matches:\n  - within_subnet: 127.0.0.0/8\n")
        c.create("type: testrun\nlabel: instant\nspec:\n"
                 "  targettype: uncontrolled\n  source:\n    name: bench\n"
                 "    app: instant\n    args: ''\n  target:\n  - 127.0.0.1\n")

        def start_grouped():
            t0 = time.perf_counter()
            _, uuid_file = c.start_agent()

            def grouped():
                try:
                    uuid = open(uuid_file).read().strip()
                    return json.loads(c.rest("/v1/groups")).get(uuid) == "bench"
                except (OSError, ValueError):
                    return False
            if not wait_for(grouped):
                raise RuntimeError("an agent never joined its group")
            return time.perf_counter() - t0

        def time_runs(n_agents):
            times = []
            for i in range(a.runs + 2):
                t0 = time.perf_counter()
                out = c.todd("run", "instant", "-y", "-j")
                dt = time.perf_counter() - t0
                res = json.loads(out[out.index("{"):])
                if len(res) != n_agents:
                    raise RuntimeError(f"expected {n_agents} results: {out}")
                if i >= 2:  # two warm-up runs
                    times.append(dt)
            rows.append((f"todd run, instant testlet, {n_agents} agent(s)",
                         times, 0.1 if n_agents == 1 else 0.15))

        baseline = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            c.todd("groups")
            baseline.append(time.perf_counter() - t0)

        starts = [start_grouped()]
        time_runs(1)
        starts += [start_grouped(), start_grouped()]
        time_runs(3)
        rows.append(("agent process start -> in its group", starts, 0.5))
    finally:
        c.stop()
        shutil.rmtree(work, ignore_errors=True)

    b50 = statistics.median(baseline)
    print(f"transport: {a.comms}; separate processes; {a.runs} runs each")
    print(f"baseline `todd groups` (CLI process + REST round trip): "
          f"p50 {b50 * 1e3:.1f} ms, p90 {pct(baseline, 90) * 1e3:.1f} ms")
    print(f"{'measurement':48} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8} "
          f"{'goal ms':>8} {'p50/baseline':>12}")
    ok = True
    for name, v, goal in rows:
        p50 = statistics.median(v)
        print(f"{name:48} {p50 * 1e3:8.1f} {pct(v, 90) * 1e3:8.1f} "
              f"{max(v) * 1e3:8.1f} {goal * 1e3:8.0f} {p50 / b50:12.1f}")
        ok = ok and p50 <= goal
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
