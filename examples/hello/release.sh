#!/bin/sh
# The example's release command: it would migrate a database. It refuses to run
# while the URL in $RELEASE_GATE answers (a gate the tests open and close over
# HTTP, so it works for a local process and a container alike), which is how the
# tests make a release fail and then "fix" it.
set -e
echo "migrating $APPLICATION/$ENVIRONMENT to $COMMIT"
# shiplog masks secret values in logs: this prints "using API token ***".
echo "using API token $API_TOKEN"
if [ -n "$RELEASE_GATE" ] && busybox wget -q -T 5 -O /dev/null "$RELEASE_GATE" 2>/dev/null; then
    echo "migration blocked: the gate $RELEASE_GATE is closed" >&2
    exit 3
fi
echo "migration done"
