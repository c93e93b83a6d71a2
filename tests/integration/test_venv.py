"""The tests that drive PyPI packages run under .venv-test's python (scripts/install-python-deps.sh
makes it; MOE_TEST_VENV names another): ctest starts them with Debian's python3, and they
re-execute themselves there first."""
import os
import sys


def reexec_under_test_venv(src_dir):
    """Returns the venv's directory, once this script runs under its python; exits with a FAIL line
    when the venv is missing."""
    venv = os.path.abspath(os.environ.get("MOE_TEST_VENV", os.path.join(src_dir, ".venv-test")))
    python = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) != os.path.realpath(venv):
        if not os.path.exists(python):
            print(f"FAIL: {python} is missing: run scripts/install-python-deps.sh (the test's PyPI packages)")
            sys.exit(1)
        os.execv(python, [python] + sys.argv)
    return venv
