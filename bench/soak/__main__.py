"""Run the chaos soak: `python -m bench.soak` at full size, `--quick` for the short variant."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, replace

from bench.soak.run import QUICK, Plan, figures, soak, table


def main(argv: list[str]) -> int:
    """Run a soak, print its figures and findings; exit 1 if any invariant broke."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the short variant (about 2 min)")
    parser.add_argument("--json", help="also write the figures and findings to this file")
    parser.add_argument("--keep", action="store_true", help="keep the logs even if it passes")
    parser.add_argument(
        "--seed", type=int, help="seed of the chaos, the faults and the clicks (default: 7)"
    )
    parser.add_argument(
        "--mlflow-url", default="", help="use this MLflow server (never restarted) instead of one"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    plan = QUICK if args.quick else Plan()
    if args.seed is not None:
        plan = replace(plan, seed=args.seed)
    result = soak(plan, mlflow_url=args.mlflow_url, keep=args.keep)
    print(table(result))
    problems = result.findings.problems() + result.chaos.errors
    for line in problems[:50]:
        print(f"- {line}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "plan": asdict(result.plan),
                    "ok": result.ok,
                    "problems": problems,
                    "figures": figures(result),
                    "kills": [asdict(k) for k in result.chaos.kills],
                },
                out,
                indent=2,
            )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
