#!/usr/bin/env python3
"""scripts/check_layering.py on this repository (no violation) and on a small tree with one of
each kind of violation (each reported, by file)."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import check_layering  # noqa: E402

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


class CheckLayeringTest(unittest.TestCase):
    def test_repository_keeps_its_floors(self):
        problems, lines = check_layering.check(REPO)
        self.assertEqual(problems, [])
        self.assertGreater(lines["core/exchange"], 0)
        self.assertGreater(lines["coordinator/engine"], 0)

    def test_each_violation_is_reported(self):
        with tempfile.TemporaryDirectory() as root:
            files = {
                "kernels/ops.h": '#include "coordinator/engine/engine.h"\n',
                "coordinator/engine/engine.h": "// fine: nothing included\n",
                "coordinator/telemetry/rows.cc": '#include "moe/v1/telemetry.pb.h"\n',
                "core/model/load.cc": "void f() { MPI_Barrier(comm); }  // MPI_Send( in a comment is fine\n",
                "core/mpi/ok.cc": "void g() { MPI_Barrier(comm); }\n",
                "coordinator/server/ok.cc": '#include "moe/v1/telemetry.pb.h"\n#include "coordinator/engine/engine.h"\n',
                "worker/stray/loop.cc": "// a folder under worker/ belongs to worker's floor\n",
                "core/loose.cc": "// core itself is no floor\n",
            }
            for path, text in files.items():
                os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
                with open(os.path.join(root, path), "w") as f:
                    f.write(text)
            problems, _ = check_layering.check(root)
            self.assertEqual(len(problems), 4, problems)
            self.assertTrue(any(p.startswith("kernels/ops.h: includes coordinator/engine/engine.h, a floor above")
                                for p in problems), problems)
            self.assertTrue(any(p.startswith("coordinator/telemetry/rows.cc: includes moe/v1/telemetry.pb.h outside")
                                for p in problems), problems)
            self.assertTrue(any(p.startswith("core/model/load.cc: calls MPI_Barrier(") for p in problems), problems)
            self.assertTrue(any(p.startswith("core/loose.cc: in no floor") for p in problems), problems)


if __name__ == "__main__":
    unittest.main()
