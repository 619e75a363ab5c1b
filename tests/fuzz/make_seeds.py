#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Write the seed corpora of tests/fuzz/corpus/<target>/ from the captured
wire vectors, the shipped object files and configs, and hand-made inputs.
Run from anywhere; rewrites the corpus directories (docs/fuzzing.md)."""
import glob
import json
import os
import shutil
import struct

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(target, paths):
    for p in sorted(paths):
        with open(p, "rb") as f:
            put(target, os.path.basename(p), f.read())


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    vectors = glob.glob(os.path.join(ROOT, "tests", "vectors", "*.json")) + \
        glob.glob(os.path.join(ROOT, "tests", "vectors", "*.txt"))
    yamls = glob.glob(os.path.join(ROOT, "share", "server", "objects", "*.yml")) + \
        glob.glob(os.path.join(ROOT, "tests", "cli", "data", "*.yml"))

    # ToDD messages: every captured vector.
    copy("messages", vectors)

    # INI configs: the shipped ones and the corners of the syntax.
    copy("config", glob.glob(os.path.join(ROOT, "share", "*", "*.cfg")))
    put("config", "quoted.cfg",
        '[Comms]\nPlugin = "zeromq" ; comment\nendpoint = "tcp://127.0.0.1:5555"\n'
        '# comment\n[API]\nHost = "a \\"b\\" \\\\ c"\nPort = 8080\n')
    put("config", "subsection.cfg", '[section "sub"]\nkey\nother = 1\n')

    # REST bodies: the shipped objects as the CLI sends them.
    for p in sorted(yamls):
        obj = yaml.safe_load(open(p))
        put("server_object", os.path.basename(p)[:-4] + ".json",
            json.dumps(obj, separators=(",", ":")))
        put("cli_yaml", os.path.basename(p), open(p).read())
    put("server_object", "bad-regex.json",
        '{"type":"group","label":"x","spec":{"group":"x","matches":[{"hostname":"("}]}}')

    # JSON as the server reads it: bodies, vectors, test data.
    copy("server_json", vectors[:6])
    put("server_json", "testdata.json",
        '{"127.0.0.1":{"avg_latency_ms":0.0094139995,"packet_loss":0},'
        '"::1":{"x":-1.5e-7,"y":1e21,"z":[true,false,null],"s":"<&>\\u2028"}}')
    put("server_json", "run.json", '{"testRunName":"ping-lo","sourceApp":"","sourceArgs":"-c 1"}\n')

    # Testlet and fact-collector output.
    put("testlet_output", "ping.json", '{"avg_latency_ms":0.052,"packet_loss":0}\n')
    put("testlet_output", "pretty.json",
        '{\n  "a": 1.50,\n  "b": "x < y & \xe2\x80\xa8",\n  "c": [1, 2e3]\n}\n')
    put("testlet_output", "notjson.txt", "Check mode PASSED\n")
    put("facts", "hostname.json", '{"Hostname":["todd-agent-1"]}\n')
    put("facts", "addresses.json", '{"Addresses":["127.0.0.1","::1","fe80::1%eth0"]}\n')
    put("facts", "two-keys.json", '{"A":["x"],"B":["y"]}')
    put("facts", "not-strings.json", '{"A":["x",1,null]}')

    # Server replies the CLI reads.
    advert = json.load(open(os.path.join(ROOT, "tests", "vectors", "go-agent-advert-full.json")))
    put("cli_reply", "agents.json", json.dumps([advert]))
    put("cli_reply", "groups.json", '{"a6c65b80665399c5":"red","b0559445e382":"blue"}')
    objs = [yaml.safe_load(open(p)) for p in sorted(yamls)]
    put("cli_reply", "objects.json", json.dumps(objs))
    put("cli_reply", "status.json", '{"a6c65b806653":"ready","b0559445e382":"fail"}')
    put("cli_reply", "testdata.json",
        '{"a6c65b806653":{"127.0.0.1":{"avg_latency_ms":0.05,"packet_loss":0}},"b":"raw"}')

    # ZeroMQ engine commands, in fuzz_zmq_engine.cpp's framing.
    def msg(peer, *frames):
        out = bytes([(peer << 3) | (len(frames) - 1)])
        for f in frames:
            f = f.encode() if isinstance(f, str) else f
            out += struct.pack("<H", len(f)) + f
        return out

    u64 = lambda v: struct.pack("<Q", v)
    hello = lambda p, s=1: msg(p, "HELLO", u64(s))
    sub = lambda p, i, q, pf=1: msg(p, "SUB", u64(i) + struct.pack("<I", pf), q)
    pub = lambda p, seq, q, body, ttl=0: msg(p, "PUB", u64(seq) + struct.pack("<q", ttl), q,
                                              "application/json", body)
    ack = lambda p, *recs: msg(p, "ACK", b"".join(u64(t) + bytes([v]) for t, v in recs))
    tick = lambda steps: bytes([0x80 | steps])
    put("zmq_engine", "local-pub-sub",
        hello(0) + sub(0, 1, "agentadvert") + pub(0, 1, "agentadvert", "{}") + ack(0, (1, 0)))
    put("zmq_engine", "peer-sub-pub-ack",
        hello(1) + sub(1, 7, "q", 2) + hello(2) + pub(2, 1, "q", "a") + pub(2, 2, "q", "b") +
        ack(1, (1, 0), (2, 1)) + msg(1, "HB") + msg(1, "UNSUB", u64(7)) + msg(2, "BYE"))
    put("zmq_engine", "ttl-and-timeout",
        hello(1) + pub(1, 1, "q", "x", ttl=100) + tick(10) + hello(2) + sub(2, 1, "q") +
        tick(127) + tick(127))
    put("zmq_engine", "reconnect",
        hello(1) + sub(1, 1, "q", 5) + pub(0, 1, "q", "m") + hello(1, 2) + sub(1, 1, "q"))
    put("zmq_engine", "unknown-peer", pub(3, 1, "q", "x") + hello(3) + msg(3, "HB"))


if __name__ == "__main__":
    main()
