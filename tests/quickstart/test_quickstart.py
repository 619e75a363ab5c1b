#!/usr/bin/env python3
"""Run share/scripts/quickstart on free ports and check what it printed.

Usage: test_quickstart.py QUICKSTART zeromq|rabbitmq|kafka|nats
"""
import os
import re
import shutil
import socket
import subprocess
import sys


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# meson's exit status for "skipped".
SKIP = 77


def rabbitmq_missing():
    """Why rabbitmq-server cannot run here, or None (as tests/common does:
    TODD_RABBITMQ_BIN_DIR, else PATH and /usr/sbin)."""
    bin_dir = os.environ.get("TODD_RABBITMQ_BIN_DIR")
    if bin_dir is not None:
        found = os.access(os.path.join(bin_dir, "rabbitmq-server"), os.X_OK)
    else:
        path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin"
        found = shutil.which("rabbitmq-server", path=path) is not None
    if found:
        return None
    return ("RabbitMQ is not installed (rabbitmq-server missing): install "
            "the Debian package rabbitmq-server to run the RabbitMQ quickstart")


def kafka_missing(script):
    """Why no Kafka broker can run here, or None: the quickstart's own
    kafka-broker script checks java and resolves (or finds cached) the
    broker's jars, as tests/common/kafka_broker.cpp does."""
    broker = os.path.join(os.path.dirname(os.path.abspath(script)),
                          "kafka-broker")
    if not os.access(broker, os.X_OK):
        return f"the Kafka broker script {broker} is missing"
    try:
        r = subprocess.run([broker, "classpath"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return f"resolving the Kafka broker's jars ('{broker} classpath') " \
               "took more than 300 s"
    if r.returncode == 0:
        return None
    return ("no Kafka broker can run here: " + r.stdout.strip()[-2000:] +
            " (share/scripts/install-deps installs what it needs)")


def nats_missing():
    """Why nats-server cannot run here, or None."""
    if shutil.which("nats-server") is not None:
        return None
    return ("nats-server is not installed: install the Debian package "
            "nats-server to run the NATS quickstart")


def required(variable):
    """True when CI sets variable to anything but "" or "0"."""
    return os.environ.get(variable, "") not in ("", "0")


def main():
    script, comms = sys.argv[1], sys.argv[2]
    missing = {"rabbitmq": (rabbitmq_missing, "TODD_REQUIRE_RABBITMQ"),
               "kafka": (lambda: kafka_missing(script), "TODD_REQUIRE_KAFKA"),
               "nats": (nats_missing, "TODD_REQUIRE_NATS")}
    if comms in missing:
        check, variable = missing[comms]
        if why := check():
            if required(variable):
                print(f"FAIL: {why} ({variable} is set)")
                return 1
            print(f"SKIP: {why}")
            return SKIP
    # The quickstart is a user's script on fixed ports that its CLI then
    # dials, so it cannot be handed bound sockets: the test picks ports and,
    # if one was taken meanwhile (the server or broker says so), runs it
    # again on fresh ones. The Kafka broker's port is left unset: its
    # script picks a free one and retries by itself.
    for attempt in range(3):
        env = dict(os.environ)
        for var in ("API", "STREAM", "ASSETS", "ZMQ", "AMQP", "DIST", "EPMD",
                    "NATS"):
            env[f"TODD_QS_{var}_PORT"] = str(free_port())
        proc = subprocess.run([script, "--comms", comms], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, text=True, timeout=220)
        out = proc.stdout
        taken = re.search(r"Address already in use|eaddrinuse", out)
        if proc.returncode == 0 or not taken:
            break
        print(f"attempt {attempt + 1}: a port was taken meanwhile; again")
    print(out)
    failures = []
    if proc.returncode != 0:
        failures.append(f"quickstart exited {proc.returncode}")
    if "Done." not in out:
        failures.append("no 'Done.' line")
    # Result rows: <agent> <target> <metric> <value>
    rows = re.findall(r"^([0-9a-f]{12})\s+127\.0\.0\.1\s+(\S+)\s+(\S+)$", out,
                      re.MULTILINE)
    agents = {a for a, metric, _ in rows if metric == "avg_latency_ms"}
    if len(agents) != 3:
        failures.append(f"expected ping results from 3 agents, got {len(agents)}")
    for a, metric, value in rows:
        if metric == "packet_loss" and float(value) != 0:
            failures.append(f"agent {a}: packet loss {value} pinging 127.0.0.1")
    leftovers = subprocess.run(["pgrep", "-f", "todd-quickstart"],
                               stdout=subprocess.PIPE, text=True).stdout.split()
    if leftovers:
        failures.append(f"processes left running: {leftovers}")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
