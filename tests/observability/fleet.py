"""A throwaway ToDD fleet for the observability tests (stdlib only).

One todd-server and N todd-agent processes from the build tree, over the
embedded zeromq transport, every port a free one on 127.0.0.1, every file in
a fresh temporary directory; as share/scripts/quickstart does, but driven
through the REST API instead of the `todd` CLI.

    with fleet.Fleet(agents=2) as f:
        f.wait_agents()
        f.create_group("lo", "127.0.0.0/8")
        f.wait_grouped()
        f.create_testrun("ping-lo", group="lo", interval="2s")
        runs = f.get("/v1/dashboard/runs?limit=20")

Leaving the `with` block stops every process (SIGTERM, SIGKILL after 5 s)
and, when the block raised (or a test set `f.failed`), then prints the last
lines of every log. Every wait is bounded and its FleetError names what did
not happen, the last answer and the logs' last lines. A test calls
exit_on_sigterm() first so that meson's timeout still cleans up, and exits
SKIP (77) for "cannot run here".
Environment: TODD_BUILD_DIR (default <source>/build); TODD_KEEP_WORK=1
keeps the temporary directory (its path is printed).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# meson's exit status for "skipped".
SKIP = 77

SRC_DIR = Path(__file__).resolve().parents[2]


class FleetError(Exception):
    """Something the fleet waited for did not happen (the message says what).

    has_logs: the message already ends with the processes' last log lines."""

    def __init__(self, message, has_logs=False):
        super().__init__(message)
        self.has_logs = has_logs


def build_dir():
    """The meson build directory: TODD_BUILD_DIR, else <source>/build."""
    return Path(os.environ.get("TODD_BUILD_DIR") or SRC_DIR / "build").resolve()


def free_ports(n):
    """n distinct ports that were free on 127.0.0.1 a moment ago.

    All sockets are held open together so that the n ports differ; another
    process may still take one before we bind it, which Fleet.start notices
    (the server says "in use") and retries with fresh ports."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def exit_on_sigterm():
    """Make SIGTERM (meson's timeout) raise SystemExit, so that every `with`
    block still stops what it started: the fleet's processes run in their
    own sessions and would otherwise outlive the test."""
    def handler(signum, frame):
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


def tail(path, lines=30):
    """The last `lines` lines of a text file ('' when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Process:
    """A started program, its log file and how to stop it."""

    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log:
            # Its own session: a ^C meant for the test does not hit it first,
            # and stop() can end what it started, by process group id.
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True)

    def alive(self):
        return self.popen.poll() is None

    def describe_exit(self):
        """'running', or how it ended."""
        rc = self.popen.poll()
        if rc is None:
            return "running"
        if rc < 0:
            return f"killed by signal {-rc}"
        return f"exited with status {rc}"

    def stop(self, grace=5.0):
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit status.

        Signals go to its whole process group (what it started, e.g. a
        testlet's ping, goes too), and only while it is not yet reaped, so
        the group id cannot belong to anybody else."""
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode

    def _signal_group(self, sig):
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            self.popen.send_signal(sig)

    def tail(self, lines=30):
        return tail(self.log_path, lines)


class Fleet:
    """todd-server plus `agents` todd-agents; a context manager."""

    def __init__(self, agents=2, build=None, log_lines=40, agent_metrics=False):
        self.n_agents = agents
        # With agent_metrics each agent serves /metrics on a port of its own.
        self.agent_metrics = agent_metrics
        self.agent_metrics_ports = []
        self.build = Path(build).resolve() if build else build_dir()
        self.log_lines = log_lines
        self.work = None
        self.server = None
        self.agents = []
        self.failed = False  # set by a test that failed without raising
        self.api_port = self.stream_port = self.assets_port = self.zmq_port = None

    # ---- context manager ---------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        try:
            if (exc_type is not None and not getattr(exc, "has_logs", False)) or self.failed:
                self.print_logs()
        finally:
            # Even when printing fails (a closed pipe): no directory left behind.
            if self.work:
                if os.environ.get("TODD_KEEP_WORK", "") not in ("", "0"):
                    print(f"fleet: kept {self.work}", file=sys.stderr)
                else:
                    shutil.rmtree(self.work, ignore_errors=True)
                self.work = None
        return False

    # ---- starting and stopping ---------------------------------------------
    def program(self, name):
        """Path of a built program; FleetError when it was not built."""
        p = self.build / "tools" / name / name
        if not os.access(p, os.X_OK):
            raise FleetError(f"{p} is not built (TODD_BUILD_DIR={self.build}; "
                             f"run ninja -C {self.build})")
        return p

    @property
    def plugin_dir(self):
        return self.build / "plugins" / "zeromq"

    @property
    def api(self):
        """Base URL of the server's REST API."""
        return f"http://127.0.0.1:{self.api_port}"

    def comms_args(self):
        return ["--plugin-dir", str(self.plugin_dir),
                "--comms-opt", f"endpoint=tcp://127.0.0.1:{self.zmq_port}"]

    def start(self, attempts=3):
        """Start the server (until its API answers), then the agents."""
        server, agent = self.program("todd-server"), self.program("todd-agent")
        if not (self.plugin_dir / "libtodd-comms-zeromq.so").exists():
            raise FleetError(f"the zeromq plugin is not built in {self.plugin_dir}")
        self.work = Path(tempfile.mkdtemp(prefix="todd-observability."))
        self.work.chmod(0o755)
        for attempt in range(1, attempts + 1):
            self._start_server(server)
            try:
                self.wait_api()
                break
            except FleetError:
                # The ports were free when picked; if one was taken
                # meanwhile the server says so and exits: pick again.
                log = self.server.tail(200)
                taken = not self.server.alive() and (
                    "in use" in log.lower() or "eaddrinuse" in log.lower())
                if not taken or attempt == attempts:
                    raise
                print(f"fleet: a port was taken meanwhile (attempt {attempt}); again",
                      file=sys.stderr)
                self.server.stop()
        for i in range(1, self.n_agents + 1):
            d = self.work / f"agent{i}"
            d.mkdir()
            cfg = self.work / f"agent{i}.cfg"
            cfg.write_text("[LocalResources]\nIPAddrOverride = 127.0.0.1\n"
                           f"OptDir = {d}\n")
            metrics = []
            if self.agent_metrics:
                (port,) = free_ports(1)
                self.agent_metrics_ports.append(port)
                metrics = ["--metrics-port", str(port)]
            self.agents.append(Process(
                f"agent{i}",
                [str(agent), "--config", str(cfg), *self.comms_args(), *metrics,
                 "--state-dir", str(d),
                 "--testlet-dir", str(SRC_DIR / "share" / "testlets"),
                 "--factcollector-dir", str(SRC_DIR / "share" / "factcollectors")],
                self.work / f"agent{i}.log"))

    def _start_server(self, program):
        (self.api_port, self.stream_port, self.assets_port,
         self.zmq_port) = free_ports(4)
        opt = self.work / "server"
        for sub in ("assets/testlets", "assets/factcollectors"):
            (opt / sub).mkdir(parents=True, exist_ok=True)
        # No [Comms] section: the embedded default (zeromq), endpoint below.
        cfg = self.work / "server.cfg"
        cfg.write_text(f"[API]\nHost = 127.0.0.1\nPort = {self.api_port}\n"
                       f"StreamPort = {self.stream_port}\n\n"
                       f"[Assets]\nPort = {self.assets_port}\n\n"
                       f"[LocalResources]\nIPAddrOverride = 127.0.0.1\nOptDir = {opt}\n")
        self.server = Process("todd-server",
                              [str(program), "--config", str(cfg), *self.comms_args()],
                              self.work / "server.log")

    def stop_server(self):
        """Stop only the server (SIGTERM, SIGKILL after 5 s); its exit status."""
        return self.server.stop() if self.server else None

    def stop(self):
        """Stop every process this fleet started, agents first."""
        for p in self.agents + ([self.server] if self.server else []):
            try:
                p.stop()
            except OSError as e:  # one that cannot be stopped must not spare the rest
                print(f"fleet: stopping {p.name}: {e}", file=sys.stderr)

    def processes(self):
        return ([self.server] if self.server else []) + self.agents

    def print_logs(self, lines=None):
        """The last lines of every process's log, on stderr."""
        for p in self.processes():
            print(f"---- {p.name} ({p.describe_exit()}), last lines of {p.log_path.name}:",
                  file=sys.stderr)
            print(p.tail(lines or self.log_lines), file=sys.stderr)

    # ---- REST ----------------------------------------------------------------
    def request(self, method, path, body=None, timeout=3.0):
        """(status, text) of one HTTP request to the API; raises OSError
        (urllib.error.URLError) when nothing answers."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def get(self, path, timeout=3.0):
        """The JSON an API GET answers; FleetError on a non-200 answer."""
        status, text = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise FleetError(f"GET {path}: HTTP {status}: {text.strip()[:300]}")
        try:
            return json.loads(text)
        except ValueError as e:
            raise FleetError(f"GET {path}: not JSON ({e}): {text[:300]!r}") from None

    def create(self, obj):
        """POST /v1/object/create with the JSON form of a ToDD YAML object,
        as `todd create FILE` does."""
        status, text = self.request("POST", "/v1/object/create", obj)
        if status != 200:
            raise FleetError(f"creating {obj.get('type')}/{obj.get('label')} "
                             f"was refused: HTTP {status}: {text.strip()[:300]}")

    def create_group(self, label, subnet="127.0.0.0/8"):
        self.create({"type": "group", "label": label,
                     "spec": {"group": label, "matches": [{"within_subnet": subnet}]}})

    def create_testrun(self, label, group, app="ping", args="-c 2 -i 0.2",
                       targets=("127.0.0.1",), interval=None):
        """An uncontrolled testrun; with `interval` ("2s") the server runs it
        itself that often."""
        spec = {"targettype": "uncontrolled",
                "source": {"name": group, "app": app, "args": args},
                "target": list(targets)}
        if interval is not None:
            spec["interval"] = interval
        self.create({"type": "testrun", "label": label, "spec": spec})

    # ---- waiting ---------------------------------------------------------------
    def wait_for(self, what, probe, timeout, interval=0.2, who=None):
        """Call probe() until it returns something true, at most `timeout` s;
        return that. probe may raise OSError or FleetError meaning "not yet".
        Fails early when a process of `who` (default: all) has ended, and the
        error names what did not happen, the last answer and the logs' ends."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        watched = self.processes() if who is None else who
        while True:
            try:
                result = probe()
                if result:
                    return result
                last = f"last answer: {result!r}"
            except (OSError, FleetError, ValueError) as e:
                last = f"last error: {e}"
            dead = [p for p in watched if not p.alive()]
            if dead or time.monotonic() >= deadline:
                why = (", ".join(f"{p.name} {p.describe_exit()}" for p in dead)
                       if dead else f"timed out after {timeout:g} s")
                logs = "\n".join(f"---- {p.name} ({p.describe_exit()}), last lines:\n"
                                 f"{p.tail(self.log_lines)}" for p in self.processes())
                raise FleetError(f"{what} did not happen ({why}; {last})\n{logs}",
                                 has_logs=True)
            time.sleep(interval)

    def wait_api(self, timeout=15):
        """Until GET /v1/agent answers 200."""
        def probe():
            status, text = self.request("GET", "/v1/agent", timeout=1)
            if status != 200:
                raise FleetError(f"HTTP {status}: {text.strip()[:200]}")
            return True
        return self.wait_for(f"the server's REST API answering on {self.api}",
                             probe, timeout, who=[self.server])

    def agent_uuids(self):
        return sorted(a["Uuid"] for a in self.get("/v1/agent"))

    def wait_agents(self, timeout=20):
        """Until all agents are registered; their UUIDs, sorted."""
        def probe():
            ids = self.agent_uuids()
            if len(ids) < self.n_agents:
                raise FleetError(f"{len(ids)} of {self.n_agents} registered")
            return ids
        return self.wait_for(f"{self.n_agents} agent(s) registering (GET /v1/agent)",
                             probe, timeout)

    def wait_grouped(self, group=None, timeout=20):
        """Until every registered agent is in a group (`group` if given);
        returns GET /v1/groups."""
        def probe():
            groups = self.get("/v1/groups")
            ids = self.agent_uuids()
            ok = [i for i in ids if i in groups and group in (None, groups[i])]
            if len(ids) < self.n_agents or len(ok) < len(ids):
                raise FleetError(f"{len(ok)} of {len(ids)} registered agent(s) grouped: "
                                 f"{json.dumps(groups)}")
            return groups
        return self.wait_for(f"all {self.n_agents} agent(s) joining "
                             f"{'group ' + group if group else 'a group'} (GET /v1/groups)",
                             probe, timeout)
