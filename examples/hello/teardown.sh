#!/bin/sh
# The example's teardown hook: `terraform destroy` of its (local-only) resources
# when terraform is installed, otherwise a note. The state lives in $TF_STATE_DIR
# when set, so tests can look at it.
set -e
if command -v terraform >/dev/null 2>&1 && [ -n "$TF_STATE_DIR" ]; then
    cd "$TF_STATE_DIR"
    terraform destroy -auto-approve -no-color
else
    echo "no terraform state to destroy for $ENVIRONMENT"
fi
