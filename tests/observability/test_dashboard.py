#!/usr/bin/env python3
"""The dashboard page (GET /dashboard) against a real fleet, in headless Chromium.

Usage: test_dashboard.py        (no arguments)

Environment:
  TODD_BUILD_DIR             the meson build directory (default <source>/build)
  TODD_CHROMIUM              the browser (default /usr/bin/chromium)
  TODD_REQUIRE_CHROMIUM=1    no browser is a failure, not a SKIP (exit 77)
  TODD_DASHBOARD_SCREENSHOT  also write a 1280x900 PNG of the live page there
  TODD_KEEP_WORK=1           keep the fleet's temporary directory

A server and two agents over the embedded transport; a group of both and a
testrun "ping-lo" that the server runs by itself every 2 s. Once the API lists
two finished runs, the page is opened in Chromium, driven over the DevTools
protocol (a stdlib websocket client below), and its rendered DOM is checked:
both agents' rows, "ok" run rows, one ping-lo plot with a line per agent of at
least 2 points, a hostile testrun label shown as text only, no error banner.
Then the server is stopped while the page stays open (a page served by the
server cannot be loaded again without it): the page must show "API
unreachable", keep its last data and have thrown nothing.

--dump-dom is not enough here: it gives one snapshot after a virtual-time
budget, with no way to wait on a condition or to stop the server under an
open page.
"""
import base64
import hashlib
import html.parser
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import time
import traceback
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleet  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
WIDTH, HEIGHT = 1280, 900
LABEL = "ping-lo"
TARGET = "127.0.0.1"
# A testrun label is free text stored by anyone who can reach the API.
HOSTILE = '<img src=x onerror="window.__toddPwned=1">"\'&'
REFRESH_MS = 500
# Every wait is capped by what is left of this, so the test ends well
# within meson's timeout whatever hangs.
BUDGET_S = 50
_deadline = time.monotonic() + BUDGET_S


def bound(cap):
    """`cap` seconds, or less if the overall budget is nearly spent."""
    return max(1.0, min(cap, _deadline - time.monotonic()))


class Failure(Exception):
    """The test failed; the message says why."""


# ---- a minimal websocket client (RFC 6455), enough for DevTools ----------------
class WebSocket:
    """Text messages over one websocket connection; client frames masked."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url, timeout=10.0):
        u = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + ("?" + u.query if u.query else "")
        # No Origin header: Chromium refuses websocket origins it was not
        # told to allow (--remote-allow-origins), but not a missing one.
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        self.buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if len(lines[0].split()) < 2 or lines[0].split()[1] != "101":
            raise OSError(f"websocket handshake refused: {lines[0]}")
        headers = {k.strip().lower(): v.strip()
                   for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
        accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise OSError("websocket handshake: wrong Sec-WebSocket-Accept")

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer from Chromium's DevTools in time")
        self.sock.settimeout(left)
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise OSError("Chromium closed the DevTools connection")
        self.buf += chunk

    def _take(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, data, opcode=0x1):
        payload = data.encode() if isinstance(data, str) else data
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def recv(self, deadline):
        """The next text message (fragments joined; pings answered)."""
        parts = []
        while True:
            b0, b1 = self._take(2, deadline)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._take(2, deadline))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._take(8, deadline))[0]
            mask = self._take(4, deadline) if b1 & 0x80 else None
            data = self._take(n, deadline)
            if mask:
                data = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self.send(data, 0xA)
            elif opcode == 0x8:
                raise OSError("Chromium closed the DevTools connection")
            elif opcode in (0x0, 0x1, 0x2):
                parts.append(data)
                if b0 & 0x80:
                    return b"".join(parts).decode("utf-8", "replace")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, chromium):
        self.dir = Path(tempfile.mkdtemp(prefix="todd-chromium."))
        profile = self.dir / "profile"
        profile.mkdir()
        self.proc = fleet.Process(
            "chromium",
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--remote-debugging-port=0", f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            self.dir / "chromium.log")
        self.ws = None
        self.seq = 0
        self.events = []      # DevTools events not looked at yet
        self.exceptions = []  # uncaught errors the page reported
        try:
            # Chromium writes its DevTools port there once it listens.
            port_file = profile / "DevToolsActivePort"
            deadline = time.monotonic() + bound(20)
            while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
                if not self.proc.alive() or time.monotonic() > deadline:
                    raise Failure(f"Chromium did not open its DevTools port "
                                  f"({self.proc.describe_exit()})\n{self.log_tail(20)}")
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            self.ws = WebSocket(self._page_url(port, deadline), timeout=bound(10))
            self.call("Runtime.enable")
            self.call("Page.enable")
            # The screenshot's size, whatever window the headless shell made.
            self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def _page_url(self, port, deadline):
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise Failure(f"Chromium listed no page on its DevTools port {port}\n"
                              f"{self.log_tail(20)}")
            time.sleep(0.1)

    def call(self, method, timeout=10.0, **params):
        """One DevTools command; its result. Events met meanwhile are kept."""
        self.seq += 1
        my = self.seq
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        deadline = time.monotonic() + bound(timeout)
        while True:
            msg = json.loads(self.ws.recv(deadline))
            if msg.get("id") == my:
                if "error" in msg:
                    raise Failure(f"DevTools {method} failed: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg):
        if msg.get("method") == "Runtime.exceptionThrown":
            d = msg["params"]["exceptionDetails"]
            self.exceptions.append(d.get("exception", {}).get("description") or d.get("text"))
        elif msg.get("method"):
            self.events.append(msg)

    def wait_event(self, method, timeout):
        """Until DevTools sends event `method` (or sent it already); its params."""
        deadline = time.monotonic() + bound(timeout)
        while True:
            for i, e in enumerate(self.events):
                if e["method"] == method:
                    del self.events[:i + 1]
                    return e.get("params", {})
            try:
                self._event(json.loads(self.ws.recv(deadline)))
            except TimeoutError:
                raise Failure(f"Chromium sent no {method} within {timeout:g} s") from None

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise Failure(f"evaluating {expression!r} in the page threw: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def navigate(self, url):
        """Load url and wait for its load event (the page's script has run)."""
        self.events.clear()
        r = self.call("Page.navigate", url=url)
        if r.get("errorText"):
            raise Failure(f"Chromium could not load {url}: {r['errorText']}")
        self.wait_event("Page.loadEventFired", 15)

    def dom(self):
        """The rendered DOM, parsed."""
        return parse_html(self.evaluate(
            "document.documentElement ? document.documentElement.outerHTML : ''"))

    def screenshot(self, path):
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        Path(path).write_bytes(png)
        # IHDR: width and height, big-endian, at bytes 16..24.
        return struct.unpack(">II", png[16:24])

    def log_tail(self, lines=15):
        """Chromium's last lines, without its noise about a missing D-Bus."""
        text = [ln for ln in self.proc.tail(400).splitlines() if "dbus" not in ln.lower()]
        return "\n".join(text[-lines:])

    def close(self):
        if self.ws:
            self.ws.close()
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            if exc[0] is not None:
                print(f"---- chromium ({self.proc.describe_exit()}), last lines:\n"
                      f"{self.log_tail()}", file=sys.stderr)
        finally:
            # Even when printing fails (a closed pipe): no browser left behind.
            self.close()
        return False


# ---- the rendered DOM ------------------------------------------------------------
class Element:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def iter(self, tag=None):
        """This element and every element below it (of `tag`), in order."""
        if tag in (None, self.tag):
            yield self
        for c in self.children:
            if isinstance(c, Element):
                yield from c.iter(tag)

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def classes(self):
        return (self.attrs.get("class") or "").split()

    def by_id(self, id_):
        return next((e for e in self.iter() if e.attrs.get("id") == id_), None)

    def within(self, tag):
        p = self.parent
        while p is not None and p.tag != tag:
            p = p.parent
        return p is not None


class _TreeBuilder(html.parser.HTMLParser):
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
            "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Element("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        e = Element(tag, {k: (v if v is not None else "") for k, v in attrs}, self.cur)
        self.cur.children.append(e)
        if tag not in self.VOID:
            self.cur = e

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Element(tag, dict(attrs), self.cur))

    def handle_endtag(self, tag):
        e = self.cur
        while e is not None and e.tag != tag:
            e = e.parent
        if e is not None and e.parent is not None:
            self.cur = e.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse_html(text):
    b = _TreeBuilder()
    b.feed(text)
    b.close()
    return b.root


def banner_text(dom):
    """The error banner's text, '' when it is hidden or absent."""
    b = dom.by_id("banner")
    return "" if b is None or "hidden" in b.attrs else b.text().strip()


def agent_rows(dom):
    table = dom.by_id("agents")
    if table is None:
        return []
    return [tr for tr in table.iter("tr") if "data-agent" in tr.attrs and tr.within("tbody")]


def plots(dom, label):
    return [s for s in dom.iter("svg")
            if "plot" in s.classes() and s.attrs.get("data-label") == label]


def check_live(dom, agents, metric, started_ms):
    """What is wrong with the page of a healthy fleet ([] when nothing)."""
    problems = []
    body = next(dom.iter("body"), None)
    refreshes = int(body.attrs.get("data-refreshes") or 0) if body is not None else 0
    updated = int(body.attrs.get("data-updated") or 0) if body is not None else 0
    if refreshes < 1:
        problems.append(f"body data-refreshes is {refreshes}, expected >= 1")
    elif updated < started_ms:
        problems.append(f"body data-updated {updated} is older than the test ({started_ms})")
    if banner_text(dom):
        problems.append(f"the banner shows {banner_text(dom)!r}")
    rows = agent_rows(dom)
    shown = sorted(r.attrs["data-agent"] for r in rows)
    if shown != agents:
        problems.append(f"#agents rows are {shown}, expected the agents {agents}")
    runs_table = dom.by_id("runs")
    runs = [tr for tr in runs_table.iter("tr") if "data-run" in tr.attrs] if runs_table else []
    outcomes = Counter(tr.attrs.get("data-outcome") for tr in runs)
    if outcomes["ok"] < 2:
        problems.append(f"#runs rows by outcome {dict(outcomes)}, expected >= 2 'ok'")
    if outcomes["failed"] or outcomes["partial"] or set(outcomes) - {"ok", "running"}:
        problems.append(f"#runs rows by outcome {dict(outcomes)}: pinging 127.0.0.1 cannot fail")
    svgs = plots(dom, LABEL)
    if len(svgs) != 1:
        problems.append(f"{len(svgs)} svg.plot with data-label={LABEL!r}, expected 1")
    else:
        svg = svgs[0]
        if svg.attrs.get("data-metric") != metric:
            problems.append(f"the {LABEL} plot shows metric {svg.attrs.get('data-metric')!r}, "
                            f"expected the first in sorted order, {metric!r}")
        paths = [p for p in svg.iter("path") if "series" in p.classes()]
        lines = sorted((p.attrs.get("data-agent"), p.attrs.get("data-target"),
                        int(p.attrs.get("data-points") or 0)) for p in paths)
        if [(a, t) for a, t, _ in lines] != [(a, TARGET) for a in agents]:
            problems.append(f"the {LABEL} plot's lines (agent, target, points) are {lines}, "
                            f"expected one per agent to {TARGET}")
        elif any(n < 2 for _, _, n in lines):
            problems.append(f"the {LABEL} plot's lines (agent, target, points) are {lines}, "
                            f"expected >= 2 points each")
    hostile = plots(dom, HOSTILE)
    if len(hostile) != 1:
        problems.append(f"{len(hostile)} svg.plot for the testrun labelled {HOSTILE!r}, expected 1")
    elif "no results yet" not in hostile[0].text():
        problems.append(f"the never-run testrun's plot does not say 'no results yet': "
                        f"{hostile[0].text()!r}")
    if any(True for _ in dom.iter("img")):
        problems.append("an <img> element is in the page: an API string reached it as markup")
    return problems


def check_down(dom, agents):
    """What is wrong with the page once the server is gone ([] when nothing)."""
    problems = []
    text = banner_text(dom)
    if not text.startswith("API unreachable: "):
        problems.append(f"the banner shows {text!r}, expected 'API unreachable: <reason>'")
    shown = sorted(r.attrs["data-agent"] for r in agent_rows(dom))
    if shown != agents:
        problems.append(f"#agents rows are {shown}: the last good data should stay, {agents}")
    return problems


def wait_page(browser, what, check, cap):
    """Until check(dom) finds nothing wrong (bounded); the final DOM."""
    deadline = time.monotonic() + bound(cap)
    while True:
        dom = browser.dom()
        problems = check(dom)
        if browser.exceptions:
            problems.append(f"the page threw: {browser.exceptions}")
        if not problems:
            return dom
        if time.monotonic() > deadline:
            raise Failure(f"the page never showed {what} within {cap:g} s:\n  - " +
                          "\n  - ".join(problems))
        time.sleep(0.25)


# ---- the test ------------------------------------------------------------------------
def finished_runs(f):
    """Finished ping-lo runs on GET /v1/dashboard/runs; fails at once without it."""
    status, text = f.request("GET", "/v1/dashboard/runs?limit=20")
    if status == 404:
        raise Failure("GET /v1/dashboard/runs answers 404: this todd-server has no "
                      "dashboard backend")
    if status != 200:
        raise fleet.FleetError(f"GET /v1/dashboard/runs: HTTP {status}: {text[:200]}")
    try:
        runs = json.loads(text)["runs"]
        done = [r for r in runs if r.get("label") == LABEL and r.get("done")]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise Failure(f"GET /v1/dashboard/runs: not {{\"runs\": [{{...}}]}} ({e!r}): {text[:300]}")
    if len(done) < 2:
        raise fleet.FleetError(f"{len(done)} finished {LABEL} run(s) of {len(runs)} listed")
    return done


def run(f, chromium):
    started_ms = int(time.time() * 1000)
    agents = f.wait_agents(timeout=bound(20))
    f.create_group("lo", "127.0.0.0/8")
    f.wait_grouped("lo", timeout=bound(20))
    f.create_testrun(LABEL, group="lo", args="-c 2 -i 0.2", targets=[TARGET], interval="2s")
    # Never run (no interval): its plot must say "no results yet", and its
    # label must reach the page as text.
    f.create_testrun(HOSTILE, group="lo")

    status, page = f.request("GET", "/dashboard")
    if status != 200 or '<table id="agents"' not in page:
        raise Failure(f"GET /dashboard answers HTTP {status} "
                      f"{'without the dashboard page' if status == 200 else page.strip()[:100]!r}: "
                      "this todd-server does not serve share/server/dashboard.html")
    done = f.wait_for(f"two finished {LABEL} runs on GET /v1/dashboard/runs "
                      "(the server runs a testrun with an interval by itself)",
                      lambda: finished_runs(f), bound(25), interval=0.5)
    print(f"{len(done)} finished {LABEL} runs: {[r['uuid'][:12] for r in done]}")
    series = f.get(f"/v1/dashboard/series?label={LABEL}&limit=100")["series"]
    metrics = sorted({s["metric"] for s in series})
    if not metrics:
        raise Failure(f"GET /v1/dashboard/series?label={LABEL} has no series after "
                      f"{len(done)} finished runs: {series}")

    url = f"{f.api}/dashboard?refresh={REFRESH_MS}"
    with Browser(chromium) as b:
        b.navigate(url)
        wait_page(b, "the fleet", lambda d: check_live(d, agents, metrics[0], started_ms), 15)
        if b.evaluate("window.__toddPwned") is not None:
            raise Failure("the hostile testrun label ran as script in the page")
        print(f"the page shows both agents, ok runs and the {LABEL} plot ({metrics[0]})")
        shot = os.environ.get("TODD_DASHBOARD_SCREENSHOT")
        if shot:
            # For docs/: without the hostile testrun, after a few more runs.
            status, text = f.request("POST", "/v1/object/delete",
                                     {"label": HOSTILE, "type": "testrun"})
            if status != 200:
                raise Failure(f"deleting the hostile testrun: HTTP {status} {text!r}")
            f.wait_for(f"8 finished {LABEL} runs", lambda: len(finished_runs(f)) >= 8,
                       bound(30), interval=0.5)
            wait_page(b, "the plot without the hostile testrun",
                      lambda d: [] if not plots(d, HOSTILE) else ["hostile plot shown"], 10)
            size = b.screenshot(shot)
            if size != (WIDTH, HEIGHT):
                raise Failure(f"the screenshot {shot} is {size[0]}x{size[1]}, not {WIDTH}x{HEIGHT}")
            print(f"screenshot: {shot}")

        rc = f.stop_server()
        print(f"todd-server stopped (status {rc}); the page stays open")
        wait_page(b, "'API unreachable'", lambda d: check_down(d, agents),
                  10 + 2 * REFRESH_MS / 1000)
        print("the page shows 'API unreachable' and keeps its last data")


def main():
    # Our lines and the fleet's logs (stderr) in the order they happened.
    sys.stdout.reconfigure(line_buffering=True)
    fleet.exit_on_sigterm()
    chromium = os.environ.get("TODD_CHROMIUM") or "/usr/bin/chromium"
    if not os.access(chromium, os.X_OK) and not shutil.which(chromium):
        why = f"{chromium} is not installed (apt-get install chromium; or set TODD_CHROMIUM)"
        if os.environ.get("TODD_REQUIRE_CHROMIUM", "") not in ("", "0"):
            print(f"FAIL: {why} (TODD_REQUIRE_CHROMIUM is set)")
            return 1
        print(f"SKIP: {why}")
        return fleet.SKIP
    t0 = time.monotonic()
    try:
        with fleet.Fleet(agents=2) as f:
            run(f, chromium)
    except (Failure, fleet.FleetError) as e:
        print(f"FAIL: {e}")
        return 1
    except (OSError, ValueError, KeyError) as e:
        # A broken DevTools connection, an answer not shaped as expected.
        traceback.print_exc()
        print(f"FAIL: {e!r}")
        return 1
    print(f"OK ({time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
