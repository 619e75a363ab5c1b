#!/bin/bash
# install_template.sh BUILD_ROOT PREFIX LIBDIR INCLUDEDIR DATADIR BINDIR
#                     PLUGINDIR PROGRAMS PLUGINS CHECKER [CHECKER ARGS...]
#
# What a stranger with only the installed SDK does: stage `meson install`
# into a temporary DESTDIR, check the installed layout, build the installed
# template out of tree with Meson and again with plain g++ and pkg-config
# flags (as its README says), then check and load the result with the
# installed programs. PROGRAMS and PLUGINS are comma-separated lists of
# what this build is expected to install.
set -euo pipefail
build=$1 prefix=$2 libdir=$3 includedir=$4 datadir=$5 bindir=$6
plugindir=$7 programs=$8 plugins=$9
shift 9
checker=("$@")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/stage
root=$dest$prefix
case $plugindir in /*) ;; *) plugindir=$prefix/$plugindir ;; esac
case $libdir in /*) ;; *) libdir=$prefix/$libdir ;; esac
case $includedir in /*) ;; *) includedir=$prefix/$includedir ;; esac
case $datadir in /*) ;; *) datadir=$prefix/$datadir ;; esac
case $bindir in /*) ;; *) bindir=$prefix/$bindir ;; esac

fail() { echo "FAIL: $*"; exit 1; }
step() { echo "== $*"; }
need() { [ -e "$1" ] || fail "not installed: ${1#"$dest"}"; }

step "meson install --destdir"
meson install -C "$build" --destdir "$dest" --no-rebuild --quiet

step "installed layout"
need "$dest$includedir/todd-comms-1/todd/comms/plugin.h"
need "$dest$includedir/todd-comms-1/todd/comms/sdk.hpp"
pc=$dest$libdir/pkgconfig/todd-comms-sdk-1.pc
need "$pc"
need "$dest$datadir/todd-comms-1/plugin.map"
for f in meson.build meson_options.txt example.cpp README.md; do
    need "$dest$datadir/todd-comms-1/template/$f"
done
need "$dest$datadir/doc/todd-comms/plugin-abi.md"
need "$dest$datadir/doc/todd-comms/writing-a-plugin.md"
grep -q '^plugindir=' "$pc" || fail "$pc has no plugindir"
grep -q '^versionscript=' "$pc" || fail "$pc has no versionscript"
! grep -q '^Libs:.*-l' "$pc" || fail "$pc links a library; plugins must not"
IFS=, read -ra want_programs <<<"$programs"
for p in "${want_programs[@]}"; do
    [ -n "$p" ] && need "$dest$bindir/$p"
done
IFS=, read -ra want_plugins <<<"$plugins"
for p in "${want_plugins[@]}"; do
    [ -n "$p" ] && need "$dest$plugindir/libtodd-comms-$p.so"
done
echo "ok: headers, todd-comms-sdk-1.pc, plugin.map, template, docs," \
    "programs [$programs], plugins [$plugins]"

step "pkg-config against the staged SDK"
export PKG_CONFIG_PATH=$dest$libdir/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$dest
got=$(pkg-config --variable=plugindir todd-comms-sdk-1)
[ "$got" = "$dest$plugindir" ] || fail "plugindir is '$got', expected '$dest$plugindir'"
map=$(pkg-config --variable=versionscript todd-comms-sdk-1)
[ -f "$map" ] || fail "versionscript '$map' does not exist"
cflags=$(pkg-config --cflags todd-comms-sdk-1)
echo "cflags: $cflags; versionscript: $map"

step "template with Meson, out of tree"
cp -r "$dest$datadir/todd-comms-1/template" "$tmp/src"
meson setup "$tmp/meson-build" "$tmp/src" >"$tmp/setup.log" 2>&1 ||
    { cat "$tmp/setup.log"; fail "meson setup of the template"; }
ninja -C "$tmp/meson-build" >"$tmp/ninja.log" 2>&1 ||
    { cat "$tmp/ninja.log"; fail "building the template with meson"; }
meson_so=$tmp/meson-build/libtodd-comms-example.so
need "$meson_so"

step "template with g++ and pkg-config flags (README recipe)"
mkdir "$tmp/plain"
# shellcheck disable=SC2086
g++ -std=c++17 -O2 -fPIC -shared -fvisibility=hidden \
    -fvisibility-inlines-hidden -Wall -Wextra -Werror \
    $cflags "$tmp/src/example.cpp" -o "$tmp/plain/libtodd-comms-example.so" \
    -pthread -Wl,--no-undefined -Wl,--version-script="$map"
plain_so=$tmp/plain/libtodd-comms-example.so

step "exported symbols"
for so in "$meson_so" "$plain_so"; do
    syms=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' |
        grep -v '^_\(init\|fini\|edata\|end\|_bss_start\)$' || true)
    [ "$syms" = "todd_comms_plugin_entry_v1" ] ||
        fail "$so exports [$syms], expected only todd_comms_plugin_entry_v1"
done
echo "ok: only todd_comms_plugin_entry_v1"

todd_comms=$dest$bindir/todd-comms
if [ -x "$todd_comms" ]; then
    checker=("$todd_comms" check)
fi
step "${checker[*]##*/} $meson_so"
"${checker[@]}" "$meson_so" --timeout-ms 3000 || fail "the template does not conform"
step "${checker[*]##*/} example --plugin-dir $tmp/plain (by name)"
"${checker[@]}" example --plugin-dir "$tmp/plain" --timeout-ms 3000 ||
    fail "the template does not conform"

if [ -x "$todd_comms" ]; then
    step "todd-comms plugins --plugin-dir"
    out=$("$todd_comms" plugins --plugin-dir "$tmp/plain" 2>&1) ||
        { echo "$out"; fail "todd-comms plugins"; }
    echo "$out"
    grep -q 'example' <<<"$out" || fail "todd-comms plugins does not list example"
    # The installed host searches the installed plugin directory by default.
    grep -qF "$plugindir" <<<"$out" ||
        fail "the default search path does not include $plugindir"
else
    echo "SKIPPED: todd-comms plugins (tools/todd-comms is not built)"
    skipped=1
fi

todd_agent=$dest$bindir/todd-agent
if [ -x "$todd_agent" ]; then
    step "todd-agent --comms example --plugin-dir"
    mkdir "$tmp/state"
    "$todd_agent" --comms example --plugin-dir "$tmp/plain" \
        --state-dir "$tmp/state" >"$tmp/agent.log" 2>&1 &
    pid=$!
    # It logs this once the plugin is loaded and the transport started;
    # wait for it (bounded, 30 s) or for the agent to die.
    running="running with transport 'example'"
    for _ in $(seq 1 300); do
        kill -0 $pid 2>/dev/null || break
        grep -q "$running" "$tmp/agent.log" && break
        sleep 0.1
    done
    grep -q "$running" "$tmp/agent.log" ||
        { kill -KILL $pid 2>/dev/null; cat "$tmp/agent.log";
          fail "todd-agent did not start with the example transport"; }
    kill -TERM $pid
    rc=0
    wait $pid || rc=$?
    cat "$tmp/agent.log"
    [ $rc -eq 0 ] || fail "todd-agent exited with $rc after SIGTERM"
else
    echo "SKIPPED: todd-agent --comms example (tools/todd-agent is not built)"
    skipped=1
fi
if [ "${skipped:-0}" = 1 ]; then
    # meson's SKIP: what ran passed, but not everything could run.
    echo "SKIP: install + template: ok, but some steps were skipped"
    exit 77
fi
echo "install + template: ok"
