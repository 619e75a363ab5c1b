#!/bin/bash
# check_usage.sh PLUGIN CHECKER [ARGS...]: the checker's own error handling.
# Usage errors exit 2 with a message; configuration the host refuses is a
# FAIL ABI-1 naming the key; an unknown plugin name is a FAIL LOAD-1.
set -u
plugin=$1
shift
status=0
expect() { # expect RC PATTERN ARGS...
    local want=$1 pattern=$2
    shift 2
    local out rc
    out=$("$@" 2>&1)
    rc=$?
    if [ $rc -ne "$want" ] || ! grep -qE -- "$pattern" <<<"$out"; then
        echo "FAILED: $* -> exit $rc (want $want), output:"
        echo "$out"
        status=1
    else
        echo "ok: exit $rc, '$pattern': $*"
    fi
}
expect 2 'usage: todd-comms check' "$@"
expect 0 'usage: todd-comms check' "$@" --help
expect 2 "expected KEY=VALUE" "$@" "$plugin" --comms-opt novalue
expect 2 "timeout-ms" "$@" "$plugin" --timeout-ms 5
expect 2 "unknown option" "$@" "$plugin" --bogus
expect 1 "^FAIL ABI-1 .*no_such_key" "$@" "$plugin" --comms-opt no_such_key=1
expect 1 "^FAIL ABI-1 .*max_held" "$@" "$plugin" --comms-opt max_held=lots
expect 1 "^FAIL LOAD-1 .*no plugin named 'nosuchplugin'" "$@" nosuchplugin \
    --plugin-dir "$(dirname "$plugin")"
# The global parser must not take a command's options for its own.
if [ "${2:-}" = check ]; then
    expect 0 "^name" "$1" info --plugin "$plugin"
    expect 2 "--version takes no command" "$1" info --version
fi
exit $status
