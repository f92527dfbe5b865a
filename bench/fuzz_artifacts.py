"""Run the hostile-file property test with many cases and print the tally for
docs/reliability.md: per file kind and mutation, how many cases each command saw and how each
ended (exit 2 = refused with one line; exit 0 = a still-valid ONNX/TOML file ran).

    python bench/fuzz_artifacts.py --examples 2000 --json bench/results/fuzz.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="Write the tally here too.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "tally.json"
        env = {
            **os.environ,
            "SLT_FUZZ_EXAMPLES": str(args.examples),
            "SLT_FUZZ_REPORT": str(report),
        }
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             str(ROOT / "tests" / "test_hostile_files.py"), "-k", "every_command"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        if done.returncode:
            sys.exit(f"the property test failed (exit {done.returncode}); see above")
        rows = json.loads(report.read_text())
    by_kind: dict[str, Counter] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], Counter())[(row["mutation"], row["exit"])] += row["cases"]
    mutations = sorted({m for c in by_kind.values() for m, _ in c})
    print(f"{args.examples} generated files, {sum(r['cases'] for r in rows)} command runs, "
          f"{seconds:.0f} s; cells: runs refused with exit 2 / runs that exited 0")  # fmt: skip
    print("| kind | " + " | ".join(mutations) + " | total |")
    print("|---|" + "---|" * (len(mutations) + 1))
    for kind, counts in sorted(by_kind.items()):
        cells = [f"{counts[(m, 2)]} / {counts[(m, 0)]}" for m in mutations]
        refused = sum(v for (_, code), v in counts.items() if code == 2)
        ran = sum(v for (_, code), v in counts.items() if code == 0)
        total = f"{refused} / {ran}"
        print(f"| {kind} | " + " | ".join(cells) + f" | {total} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
