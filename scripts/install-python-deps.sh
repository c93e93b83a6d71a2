#!/usr/bin/env bash
# Installs the Python packages the tests take from PyPI (tests/integration/requirements-test.txt:
# the official `openai` client, pinned, which Debian 12 does not package) into .venv-test/ (ignored
# by git), over Debian's python3 and its packages (grpcio, numpy). Idempotent: nothing to do when
# the pinned set is already there. MOE_TEST_VENV overrides the directory.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUIREMENTS=tests/integration/requirements-test.txt
VENV=${MOE_TEST_VENV:-.venv-test}
if [[ -x $VENV/bin/python ]] && cmp -s "$REQUIREMENTS" "$VENV/.requirements"; then
  echo "install-python-deps.sh: $VENV already holds $REQUIREMENTS"
  exit 0
fi
/usr/bin/python3 -m venv --system-site-packages "$VENV"
# Wheels only: nothing is compiled, and what is installed is exactly what was pinned.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: -r "$REQUIREMENTS"
cp "$REQUIREMENTS" "$VENV/.requirements"
echo "install-python-deps.sh: installed $REQUIREMENTS into $VENV"
