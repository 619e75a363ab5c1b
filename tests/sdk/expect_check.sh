#!/bin/bash
# expect_check.sh "EXPECTED FAIL IDS" CHECKER [ARGS...]
# Runs the conformance checker and asserts that exactly the expected rules
# FAIL (none: it must exit 0), that every rule got one line, and that the
# exit status agrees with the verdicts.
set -u
expected=$(tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort)
shift
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
failed=$(grep -E '^FAIL ' <<<"$out" | awk '{print $2}' | sort)
lines=$(grep -cE '^(PASS|FAIL|SKIP) (LOAD|ABI)-[0-9]+ ' <<<"$out")
status=0
if [ "$lines" -ne 22 ]; then
    echo "expect_check: expected 22 rule lines, got $lines"; status=1
fi
if ! grep -qE '^todd-comms check: .*: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' <<<"$out"; then
    echo "expect_check: no summary line"; status=1
fi
if [ "$failed" != "$expected" ]; then
    echo "expect_check: FAILed rules: [$(echo $failed)], expected: [$(echo $expected)]"
    status=1
fi
if [ -z "$expected" ] && [ $rc -ne 0 ]; then
    echo "expect_check: exit status $rc, expected 0"; status=1
fi
if [ -n "$expected" ] && [ $rc -ne 1 ]; then
    echo "expect_check: exit status $rc, expected 1"; status=1
fi
exit $status
