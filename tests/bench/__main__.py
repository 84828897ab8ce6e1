"""`python -m tests.bench [--quick] [--out FILE] [--keep] [--only PHASE ...] [--profile FILE]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.bench.harness import run
from tests.bench.plan import FULL, QUICK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts, about a minute")
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"))
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (logs, stores)")
    parser.add_argument(
        "--only", nargs="+", metavar="PHASE", help="run only the phases whose names start with these"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="sample the receiver with py-spy during figure 1 (collapsed stacks to FILE; marks figure 1)",
    )
    args = parser.parse_args(argv)
    try:
        plan = QUICK if args.quick else FULL
        return run(plan, args.out, keep=args.keep, only=set(args.only or ()), profile=args.profile)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
