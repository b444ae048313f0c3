#!/bin/sh
# The example's release command: it would migrate a database. It refuses to run
# while the gate at $RELEASE_GATE (host:port) says "closed": a TCP server the tests
# open and close, reachable from a local process and a container alike, which is
# how they make a release fail and then "fix" it.
set -e
echo "migrating $APPLICATION/$ENVIRONMENT to $COMMIT"
# shiplog masks secret values in logs: this prints "using API token ***".
echo "using API token $API_TOKEN"
if [ -n "$RELEASE_GATE" ] &&
    [ "$(busybox nc -w 5 "${RELEASE_GATE%:*}" "${RELEASE_GATE##*:}" </dev/null 2>/dev/null)" = closed ]; then
    echo "migration blocked: the gate $RELEASE_GATE is closed" >&2
    exit 3
fi
echo "migration done"
