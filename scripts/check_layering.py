#!/usr/bin/env python3
"""Checks the source tree's floors: every #include of a project header points at the including
file's own folder or a floor below it, protobuf's generated headers are included only at the RPC
edge, and MPI is called only in core/mpi. Prints each violation and exits 1; prints the floors
with their line counts and exits 0 otherwise.

Usage: scripts/check_layering.py [REPO_ROOT]   (default: this script's repository)
"""
import os
import re
import sys

# Lowest first. A folder may include from itself and from any folder listed before it.
FLOORS = [
    "kernels",
    "core/base",
    "core/model",
    "core/placement",
    "core/exchange",
    "core/mpi",
    "core/cli",
    "proto",
    "coordinator/inference",
    "coordinator/http",
    "coordinator/placement",
    "coordinator/telemetry",
    "coordinator/engine",
    "coordinator/server",
    "coordinator/tools",
    "coordinator",
    "coordinator/client",
    "worker",
]
# Where protobuf types may appear: the gRPC services, the client, the worker's reporter.
RPC_EDGE = {"coordinator/server", "coordinator/client", "worker"}
MPI_FOLDER = "core/mpi"
SOURCE_SUFFIXES = (".h", ".cc", ".cu", ".cuh")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
MPI_CALL = re.compile(r"\bMPI_[A-Z][a-z_]+\s*\(")
LINE_COMMENT = re.compile(r"//.*")


def folder_of(path):
    """The floor a repository path belongs to: its deepest folder listed in FLOORS."""
    parts = os.path.dirname(path).split("/")
    for n in range(len(parts), 0, -1):
        candidate = "/".join(parts[:n])
        if candidate in FLOORS:
            return candidate
    return None


def sources(root):
    for top in ("kernels", "core", "coordinator", "worker"):
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for name in sorted(names):
                if name.endswith(SOURCE_SUFFIXES):
                    yield os.path.relpath(os.path.join(dirpath, name), root)


def check(root):
    rank = {f: i for i, f in enumerate(FLOORS)}
    problems = []
    lines = {f: 0 for f in FLOORS}
    for path in sources(root):
        floor = folder_of(path)
        if floor is None:
            problems.append(f"{path}: in no floor (add its folder to FLOORS)")
            continue
        with open(os.path.join(root, path), encoding="utf-8") as f:
            text = f.read()
        lines[floor] += text.count("\n")
        for included in INCLUDE.findall(text):
            if included.endswith(".pb.h"):
                if floor not in RPC_EDGE:
                    problems.append(f"{path}: includes {included} outside the RPC edge")
                continue
            target = folder_of(included)
            if target is None or not os.path.exists(os.path.join(root, included)):
                continue  # a system or third-party header, or a generated one
            if rank[target] > rank[floor]:
                problems.append(f"{path}: includes {included}, a floor above ({target} over {floor})")
        if floor != MPI_FOLDER:
            code = LINE_COMMENT.sub("", text)
            for call in MPI_CALL.findall(code):
                problems.append(f"{path}: calls {call.strip()} outside {MPI_FOLDER}")
    return problems, lines


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    problems, lines = check(root)
    for p in problems:
        print(p)
    if problems:
        print(f"check_layering: {len(problems)} violation(s)")
        return 1
    print("check_layering: every include points down or sideways within a folder; floors, lowest first:")
    for f in FLOORS:
        print(f"  {f:24s} {lines[f]:6d} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
