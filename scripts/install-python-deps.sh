#!/usr/bin/env bash
# Installs the Python packages the tests take from PyPI (tests/integration/requirements-test.txt:
# the official `openai` client, lm-eval, aiperf and transformers' tokenizers, which Debian 12 does
# not package) into .venv-test/ (ignored by git), over Debian's python3 and its packages (grpcio,
# lxml, yaml), and downloads the newest protobuf
# wheel (tests/integration/requirements-client-protobuf.txt) into .venv-test/wheels for
# python_client_test to install offline. Every wheel is pinned by its
# sha256 (--require-hashes), so what is installed is exactly what was pinned whoever serves it.
# Idempotent: nothing to do when the pinned set is already there. MOE_TEST_VENV overrides the
# directory.
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; }
set -euo pipefail
cd "$(dirname "$0")/.."
REQUIREMENTS=tests/integration/requirements-test.txt
WHEELS=tests/integration/requirements-client-protobuf.txt
VENV=${MOE_TEST_VENV:-.venv-test}
if [[ -x $VENV/bin/python ]] && cat "$REQUIREMENTS" "$WHEELS" | cmp -s - "$VENV/.requirements"; then
  echo "install-python-deps.sh: $VENV already holds $REQUIREMENTS"
  exit 0
fi
rm -rf "$VENV"
/usr/bin/python3 -m venv --system-site-packages "$VENV"
pip_pinned() {  # pip_pinned COMMAND [ARGS]
  # The arguments last: a --no-binary there must follow --only-binary=:all:, which would clear it.
  local command=$1
  shift
  local PIP=("$VENV/bin/python" -m pip "$command" --quiet --disable-pip-version-check --only-binary=:all:
             --require-hashes "$@")
  if ! "${PIP[@]}" 2>"$VENV/pip.log"; then
    # Behind a TLS-intercepting proxy whose CA this machine does not trust (a fresh machine in a
    # sandboxed network), pip cannot verify pypi.org. The hashes still pin every byte, so the
    # download is retried without certificate verification for PyPI's two hosts only.
    if grep -q CERTIFICATE_VERIFY_FAILED "$VENV/pip.log"; then
      echo "install-python-deps.sh: pip cannot verify PyPI's certificate (an intercepting proxy?);" \
           "retrying with the sha256 pins as the only check" >&2
      "${PIP[@]}" --trusted-host pypi.org --trusted-host files.pythonhosted.org
    else
      cat "$VENV/pip.log" >&2
      exit 1
    fi
  fi
}
# sqlitedict and word2number (lm-eval's) exist only as sdists: built here with Debian's setuptools
# and wheel rather than an isolated build environment fetched unpinned.
pip_pinned install -r "$REQUIREMENTS" --no-binary sqlitedict,word2number --no-build-isolation
pip_pinned download --no-deps --dest "$VENV/wheels" -r "$WHEELS"
cat "$REQUIREMENTS" "$WHEELS" > "$VENV/.requirements"
echo "install-python-deps.sh: installed $REQUIREMENTS into $VENV, $WHEELS into $VENV/wheels"
