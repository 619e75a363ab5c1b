#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Hold a program's --help against its doc page, both ways.

  check_help.py PAGE SECTION -- PROGRAM [ARGS...]

runs `PROGRAM ARGS...` (ARGS end with --help), takes every option its help
lists, and compares them with the options the doc PAGE documents for
SECTION: the first cell of each table row between
`<!-- options: SECTION -->` and `<!-- end options -->`. Each option in the
help must be documented there, and each option documented there must be in
the help. Exit 0 when both hold, 1 with one line per difference, 77 (skip)
when the program says it lacks the command (todd-comms built without the
checker).

  check_help.py --self-test PAGE SECTION -- PROGRAM [ARGS...]

proves the comparison can fail: it removes one documented option from a copy
of the page, then adds an option the program does not have, and expects each
copy to be refused naming that option.
"""
import os
import re
import subprocess
import sys
import tempfile

# An option token: --long-name or -x (not a value name such as KEY=VALUE).
OPTION = re.compile(r"(?<![\w-])(--[A-Za-z0-9][A-Za-z0-9-]*|-[A-Za-z])(?![\w-])")


def help_options(text):
    """Options of a help text: the first column of lines that start with '-'.

    Understands Boost.Program_options ("-h [ --help ]", "--comms NAME"),
    the todd CLI ("-H, --host HOST") and hand-written lists ("--x N"),
    indented 1 to 8 spaces; the first column ends at the first run of two
    spaces.
    """
    found = set()
    for line in text.splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        # Options sit in the first columns; a wrapped description is
        # indented to its own column even when it starts with a dash.
        if not stripped.startswith("-") or not 1 <= indent <= 8:
            continue
        head = re.split(r"\s{2,}", stripped, maxsplit=1)[0]
        found.update(OPTION.findall(head))
    return found


def page_options(page_text, section, page_name):
    """Options a page documents for SECTION, from its marked table(s)."""
    begin = "<!-- options: %s -->" % section
    found = set()
    regions = 0
    rest = page_text
    while begin in rest:
        regions += 1
        rest = rest.split(begin, 1)[1]
        if "<!-- end options -->" not in rest:
            raise SystemExit("%s: %s has no <!-- end options -->" % (page_name, begin))
        region, rest = rest.split("<!-- end options -->", 1)
        for line in region.splitlines():
            if not line.startswith("|") or set(line) <= set("|-: "):
                continue
            cells = line.split("|")
            if len(cells) > 1:
                found.update(OPTION.findall(cells[1]))
    if regions == 0:
        raise SystemExit("%s: no %s marker" % (page_name, begin))
    return found


def run_help(argv):
    env = dict(os.environ)
    env.setdefault("LC_ALL", "C")
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, text=True, timeout=60,
                       env=env)
    if r.returncode != 0:
        if "unknown command" in r.stderr:
            print("SKIP: %s: %s" % (" ".join(argv), r.stderr.strip()))
            raise SystemExit(77)
        raise SystemExit("%s exited %d: %s" % (" ".join(argv), r.returncode,
                                                r.stderr.strip()))
    return r.stdout


def compare(page_name, page_text, section, help_text, argv):
    """The differences, one line each; empty when page and help agree."""
    in_help = help_options(help_text)
    in_page = page_options(page_text, section, page_name)
    if not in_help:
        return ["%s: its --help lists no options at all" % " ".join(argv)]
    cmd = " ".join(os.path.basename(a) if i == 0 else a
                   for i, a in enumerate(argv))
    out = []
    for o in sorted(in_help - in_page):
        out.append("%s: `%s` lists %s, but the '%s' options table does not "
                   "document it" % (page_name, cmd, o, section))
    for o in sorted(in_page - in_help):
        out.append("%s: the '%s' options table documents %s, which `%s` "
                   "does not list" % (page_name, section, o, cmd))
    return out


def self_test(page_name, page_text, section, help_text, argv):
    """Expect a page with one option removed, or one invented, refused."""
    documented = sorted(page_options(page_text, section, page_name))
    if not documented:
        return ["self-test: '%s' documents no options" % section]
    failures = []
    victim = documented[-1]
    region_start = page_text.index("<!-- options: %s -->" % section)
    head, tail = page_text[:region_start], page_text[region_start:]
    end = tail.index("<!-- end options -->")
    region = tail[:end]
    # Drop every table row of the region whose first cell names the victim.
    kept = []
    for line in region.splitlines(keepends=True):
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 1 and victim in OPTION.findall(cells[1]):
            continue
        kept.append(line)
    removed = head + "".join(kept) + tail[end:]
    diff = compare(page_name, removed, section, help_text, argv)
    if not any(victim in d and "does not document" in d for d in diff):
        failures.append("self-test: removing %s from the page was not noticed"
                        % victim)
    invented = "--no-such-option-anywhere"
    added = head + region + "| `%s` | invented |\n" % invented + tail[end:]
    diff = compare(page_name, added, section, help_text, argv)
    if not any(invented in d and "does not list" in d for d in diff):
        failures.append("self-test: an invented option on the page was not "
                        "noticed")
    if not failures:
        print("self-test: removing %s and inventing %s were both refused"
              % (victim, invented))
    return failures


def main(args):
    selftest = args[:1] == ["--self-test"]
    if selftest:
        args = args[1:]
    if len(args) < 4 or args[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    page, section, argv = args[0], args[1], args[3:]
    with open(page, encoding="utf-8") as f:
        page_text = f.read()
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    page_name = os.path.relpath(os.path.abspath(page), root)
    help_text = run_help(argv)
    check = self_test if selftest else compare
    problems = check(page_name, page_text, section, help_text, argv)
    for p in problems:
        print(p)
    if problems:
        return 1
    if not selftest:
        print("%s: the '%s' options agree with %s (%d options)"
              % (page_name, section, " ".join(argv[1:]) or "--help",
                 len(help_options(help_text))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
