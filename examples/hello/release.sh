#!/bin/sh
# The example's release command: it would migrate a database. It refuses to run
# while the file named by $RELEASE_GATE exists, which is how the tests make a
# release fail and then "fix" it.
set -e
echo "migrating $APPLICATION/$ENVIRONMENT to $COMMIT"
# shiplog masks secret values in logs: this prints "using API token ***".
echo "using API token $API_TOKEN"
if [ -n "$RELEASE_GATE" ] && [ -e "$RELEASE_GATE" ]; then
    echo "migration blocked: $RELEASE_GATE exists" >&2
    exit 3
fi
echo "migration done"
