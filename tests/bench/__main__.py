"""`python -m tests.bench [--quick] [--out FILE] [--keep] [--only PHASE ...] [--profile FILE]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.bench.harness import chosen, run, scenarios
from tests.bench.plan import FULL, QUICK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts, about a minute")
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"))
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (logs, stores)")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="PHASE",
        help="run only these phases, each named by the first words of its name, whole: 1 is phase 1 alone"
        " (not 1s, 10 or 11), 8 both phases 8, '8 redis' the Redis one",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="sample the receiver with py-spy during figure 1 (collapsed stacks to FILE; marks figure 1)",
    )
    args = parser.parse_args(argv)
    names = [name for name, _ in scenarios()]
    if unknown := [key for key in args.only or () if not any(chosen(name, {key}) for name in names)]:
        parser.error(f"no phase named {', '.join(unknown)}; the phases: {'; '.join(names)}")
    try:
        plan = QUICK if args.quick else FULL
        return run(plan, args.out, keep=args.keep, only=set(args.only or ()), profile=args.profile)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
