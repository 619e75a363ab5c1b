#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Checks of what share/ installs: the systemd units, their users and
directories, and the testlet and fact-collector directories agents scan.

  check_units.py exposure THRESHOLD UNIT...
      systemd-analyze security --offline: each unit's exposure <= THRESHOLD.
  check_units.py install BUILD_DIR MESON UNIT...
      meson install into a temporary root, then there: sysusers.d and
      tmpfiles.d create each unit's user and directories, the unit's
      ExecStart program and --config file exist, systemd-analyze verify
      accepts the unit alone and with the installed rabbitmq drop-in, and
      the installed asset directories hold assets only.
  check_units.py assets TESTLET_DIR COLLECTOR_DIR [BUILD_SHARE_DIR]
      Every entry of the two directories is a working testlet (answers
      `check`) or fact collector (prints one fact as JSON); so is every
      entry of BUILD_SHARE_DIR/{testlets,factcollectors} where they exist.

Exit status 77 (meson's SKIP) only when systemd-analyze is missing.
"""

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile

SKIP = 77
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def need(tool):
    path = shutil.which(tool)
    if path is None:
        print(f"SKIP: {tool} not found (Debian: apt-get install systemd)")
        sys.exit(SKIP)
    return path


def run(argv, **kw):
    print("$ " + shlex.join(argv))
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          **kw)


def unit_entries(path):
    """(section, key) -> [values] of a unit file, continuation lines joined."""
    entries, section, pending = {}, None, ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = pending + raw.rstrip("\n")
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            entries.setdefault((section, key.strip()), []).append(value.strip())
    return entries


def check_exposure(threshold, units):
    analyze = need("systemd-analyze")
    for unit in units:
        # --threshold counts in tenths of the printed level (0-100).
        r = run([analyze, "security", "--offline=yes",
                 f"--threshold={round(float(threshold) * 10)}", "--no-pager",
                 unit])
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
        if m is None:
            fail(f"{unit}: no exposure figure in systemd-analyze's output:\n"
                 + r.stdout + r.stderr)
            continue
        level = float(m.group(1))
        print(f"{os.path.basename(unit)}: exposure {level} "
              f"(threshold {threshold})")
        if r.returncode != 0 or level > float(threshold):
            fail(f"{unit}: exposure {level} is above {threshold} "
                 f"(exit status {r.returncode}); what counts:\n"
                 + "\n".join(l for l in r.stdout.splitlines()
                             if l.startswith("\u2717")))
        # Offline analysis reports unit-file mistakes on stderr only.
        for line in r.stderr.splitlines():
            if os.path.basename(unit) in line or unit in line:
                fail(f"{unit}: systemd-analyze: {line}")


def installed_map(build_dir):
    with open(os.path.join(build_dir, "meson-info", "intro-installed.json"),
              encoding="utf-8") as f:
        return json.load(f)


def under(root, path):
    return os.path.join(root, path.lstrip("/"))


def check_unit_in_root(root, unit_path, analyze, rabbitmq_dropin):
    name = os.path.basename(unit_path)
    e = unit_entries(under(root, unit_path))
    execs = e.get(("Service", "ExecStart"), [])
    if len(execs) != 1:
        fail(f"{name}: expected one ExecStart=, found {execs}")
        return
    argv = shlex.split(execs[0])
    prog = under(root, argv[0])
    if not (os.path.isfile(prog) and os.access(prog, os.X_OK)):
        fail(f"{name}: ExecStart program {argv[0]} is not installed")
    if "--config" not in argv[:-1]:
        fail(f"{name}: ExecStart names no --config file")
    else:
        cfg = argv[argv.index("--config") + 1]
        if not os.path.isfile(under(root, cfg)):
            fail(f"{name}: ExecStart's --config {cfg} is not installed")
        else:
            print(f"{name}: ExecStart's {argv[0]} and {cfg} are installed")

    # The user comes from the installed sysusers.d file, the writable
    # directories from tmpfiles.d (or StateDirectory=, made at start).
    user = e.get(("Service", "User"), [""])[-1]
    uids = {}
    if not user or user == "root":
        fail(f"{name}: runs as root (no User=)")
    else:
        with open(under(root, "/etc/passwd"), encoding="utf-8") as f:
            uids = {l.split(":")[0]: int(l.split(":")[2]) for l in f if ":" in l}
        if user not in uids:
            fail(f"{name}: User={user} is not made by the installed "
                 "sysusers.d files")
    for rw in " ".join(e.get(("Service", "ReadWritePaths"), [])).split():
        path = under(root, rw.lstrip("-+"))
        if not os.path.isdir(path):
            fail(f"{name}: ReadWritePaths={rw} is not made by the installed "
                 "tmpfiles.d files")
        elif os.geteuid() == 0 and user in uids and \
                os.stat(path).st_uid != uids[user]:
            fail(f"{name}: ReadWritePaths={rw} is not owned by {user}")

    verify(analyze, root, name, "")
    # And with the documented drop-in for a broker on this host.
    dropin = under(root, f"/etc/systemd/system/{name}.d/rabbitmq.conf")
    os.makedirs(os.path.dirname(dropin))
    shutil.copy(rabbitmq_dropin, dropin)
    verify(analyze, root, name, " with the rabbitmq drop-in")
    if "rabbitmq-server.service" not in \
            " ".join(unit_entries(dropin).get(("Unit", "After"), [])):
        fail(f"{dropin}: orders {name} after no rabbitmq-server.service")


def verify(analyze, root, name, what):
    r = run([analyze, "verify", "--man=no", f"--root={root}", name])
    out = (r.stdout + r.stderr).strip()
    if out:
        print(out)
    # verify exits 0 on unknown keys and bad values: those lines count too.
    bad = [l for l in out.splitlines() if name in l or "rabbitmq.conf" in l]
    if r.returncode != 0 or bad:
        fail(f"{name}{what}: systemd-analyze verify (exit {r.returncode}):\n"
             + "\n".join(bad))
    else:
        print(f"{name}{what}: systemd-analyze verify: no complaint")


def check_install(build_dir, meson, units):
    analyze = need("systemd-analyze")
    sysusers = need("systemd-sysusers")
    tmpfiles = need("systemd-tmpfiles")
    dests = installed_map(build_dir)
    with tempfile.TemporaryDirectory(prefix="units-root-") as root:
        r = run([meson, "install", "-C", build_dir, "--no-rebuild", "--quiet",
                 "--destdir", root])
        if r.returncode != 0:
            fail("meson install failed:\n" + r.stdout + r.stderr)
            return
        # The host's own units (sysinit.target, network-online.target...)
        # beside ours, as verify --root resolves every dependency there.
        if not os.path.isdir("/usr/lib/systemd/system"):
            fail("no /usr/lib/systemd/system: systemd is not installed")
            return
        os.makedirs(under(root, "/etc"), exist_ok=True)
        if not os.path.lexists(under(root, "/lib")):
            os.symlink("usr/lib", under(root, "/lib"))
        shutil.copytree("/usr/lib/systemd/system",
                        under(root, "/usr/lib/systemd/system"), symlinks=True,
                        dirs_exist_ok=True,
                        copy_function=lambda s, d: os.path.exists(d) or
                        shutil.copy2(s, d))
        confs = {"sysusers.d": [], "tmpfiles.d": []}
        for dest in dests.values():
            for kind, files in confs.items():
                if f"/{kind}/" in dest:
                    files.append(under(root, dest))
        for kind, tool in (("sysusers.d", sysusers), ("tmpfiles.d", tmpfiles)):
            if not confs[kind]:
                fail(f"the install puts nothing in {kind}")
                continue
            r = run([tool, f"--root={root}"]
                    + (["--create"] if tool == tmpfiles else [])
                    + confs[kind])
            # Not root: tmpfiles cannot chown (73); the directories are
            # still made and checked, their owners only as root.
            ok = r.returncode == 0 or (tool == tmpfiles and
                                       os.geteuid() != 0 and
                                       r.returncode == 73)
            if not ok:
                fail(f"{tool} (exit {r.returncode}):\n{r.stdout}{r.stderr}")
            elif r.returncode != 0:
                print(f"note: not root, so directory owners are not checked")
        dropins = [d for d in dests.values()
                   if d.endswith("/systemd/rabbitmq.conf")]
        if len(dropins) != 1:
            fail(f"expected one installed rabbitmq drop-in, got {dropins}")
            return
        dropin = under(root, dropins[0])
        for unit in units:
            unit = os.path.abspath(unit)
            if unit not in dests:
                fail(f"{unit} is not installed")
                continue
            check_unit_in_root(root, dests[unit], analyze, dropin)
        # The installed asset directories: only what meson installs there.
        for kind in ("testlets", "factcollectors"):
            dirs = {os.path.dirname(d) for d in dests.values()
                    if d.split("/")[-2:-1] == [kind] and "/todd/" in d}
            if len(dirs) != 1:
                fail(f"installed {kind}: expected one directory, got {dirs}")
                continue
            check_asset_dir(under(root, dirs.pop()), kind)


def check_asset_dir(path, kind, may_be_empty=False):
    names = sorted(os.listdir(path))
    if not names and not may_be_empty:
        fail(f"{path}: empty")
    for name in names:
        p = os.path.join(path, name)
        st = os.lstat(p)
        if not stat.S_ISREG(st.st_mode) or not os.access(p, os.X_OK):
            # todd-agent runs every regular file of a fact-collector dir.
            fail(f"{p}: not an executable file; {path} is for {kind} only")
            continue
        with open(p, "rb") as f:
            if f.read(2) != b"#!":
                fail(f"{p}: no #! line")
                continue
        if kind == "testlets":
            r = run([p, "check"])
            if r.returncode != 0 or "Check mode PASSED" not in r.stdout:
                fail(f"{p} check: exit {r.returncode}, {r.stdout!r} "
                     f"{r.stderr!r}")
        else:
            r = run([p])
            try:
                d = json.loads(r.stdout)
                good = (r.returncode == 0 and isinstance(d, dict) and
                        len(d) == 1 and isinstance(next(iter(d.values())), list)
                        and all(isinstance(v, str)
                                for v in next(iter(d.values()))))
            except ValueError:
                good = False
            if not good:
                fail(f"{p}: not a fact collector (exit {r.returncode}, "
                     f"output {r.stdout!r} {r.stderr!r})")
    print(f"{path}: {len(names)} {kind}: {', '.join(names)}")


def main(argv):
    if len(argv) >= 3 and argv[1] == "exposure":
        check_exposure(argv[2], argv[3:])
    elif len(argv) >= 4 and argv[1] == "install":
        check_install(argv[2], argv[3], argv[4:])
    elif len(argv) in (4, 5) and argv[1] == "assets":
        check_asset_dir(argv[2], "testlets")
        check_asset_dir(argv[3], "factcollectors")
        # The build tree holds no copy today; a directory left there by an
        # older configure must hold assets only, as agents may be sent there.
        for kind in ("testlets", "factcollectors") if len(argv) == 5 else ():
            d = os.path.join(argv[4], kind)
            if os.path.isdir(d):
                check_asset_dir(d, kind, may_be_empty=True)
            else:
                print(f"{d}: absent from the build tree")
    else:
        print(__doc__)
        return 2
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
