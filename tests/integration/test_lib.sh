# Shared by the mpirun test scripts: their set-up, counting results, and comparing two logits
# dumps. Sourced after BIN (the build's bin/), SRC (the source tree) and WORK (a scratch folder,
# emptied here) are set; PYTHON names an interpreter with numpy.
PY=${PYTHON:-/usr/bin/python3}
export BUILD_DIR=$(dirname "$BIN")
LAUNCH="$SRC/scripts/launch.sh"
rm -rf "$WORK" && mkdir -p "$WORK"
failures=0 passed=0
pass() { passed=$((passed + 1)); echo "ok: $1"; }
fail() { failures=$((failures + 1)); echo "FAIL: $1"; }

# compare A.npy B.npy [BOUND]: same shape, relative error by norm under BOUND (default 1e-5);
# prints it.
compare() {
  "$PY" - "$1" "$2" "${3:-1e-5}" <<'PYEOF'
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
assert a.shape == b.shape, (a.shape, b.shape)
err = np.linalg.norm(a - b) / np.linalg.norm(b)
print(f"rel err {err:.1e}")
sys.exit(0 if err < float(sys.argv[3]) else 1)
PYEOF
}
