"""The long fuzzing run: thousands of seeded mutants through every reader that takes a user's file.

    python benchmarks/fuzz.py [--mutants 5000] [--seed 0] [--readers recordio bin ...] [--timeout 1800]

Runs ``tests/fuzzing.py`` (the same readers, samples and mutations as the suite's few hundred per reader; see
docs/security.md) with many more mutants, each reader in a child process under a memory limit and a timeout, and
prints the counts of outcomes per reader: ``read`` (a correct read), ``refused`` (a FaceSphereError naming the file)
and any failure (``raw`` exception, ``unnamed`` error, ``relabelled`` data, ``raised`` by ``data verify``,
``crashed``, ``hung``) with the first failing mutant of each kind, kept on disk to reproduce it. Exits 1 when a reader
failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from tests.fuzzing import GOOD, READERS, failures, fuzz  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=5000, help="mutants per reader (default 5000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readers", nargs="+", choices=sorted(READERS), default=list(READERS))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per reader")
    parser.add_argument("--workdir", default=None, help="where mutants and failing files are kept (default: temp)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="facesphere-fuzz-"))
    print(f"{args.mutants} mutants per reader, seed {args.seed}, files under {workdir}")
    print(f"{'reader':<12} {'read':>7} {'refused':>8} {'failed':>7} {'seconds':>8}  failures")
    failed = False
    for reader in args.readers:
        start = time.perf_counter()
        summary = fuzz(reader, args.seed, args.mutants, workdir / reader, timeout=args.timeout)
        outcomes = summary["outcomes"]
        bad = {k: v for k, v in outcomes.items() if k not in GOOD}
        failed |= bool(bad)
        print(f"{reader:<12} {outcomes.get('read', 0):>7} {outcomes.get('refused', 0):>8} {sum(bad.values()):>7} "
              f"{time.perf_counter() - start:>8.1f}  {bad or ''}", flush=True)
        if bad:
            print(failures(summary), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
