# Shared by the mpirun test scripts: counting results, and comparing two logits dumps.
# Expects PY (an interpreter with numpy).
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
