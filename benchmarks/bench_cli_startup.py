"""How long does the CLI take to answer when it has no model to load?

`--help`, `--version`, `recipes` and argument errors (a mistyped path) must answer in well under a
second: torch and timm are imported only by the commands that need them. Prints, measured in one run,
the median wall time of each command (a fresh process each time) and, for scale, of a bare
`python -c "import torch, timm"`:

    python benchmarks/bench_cli_startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from common import median_seconds

COMMANDS = {
    "hardenctl --help": ["--help"],
    "hardenctl --version": ["--version"],
    "hardenctl recipes": ["recipes"],
    "hardenctl eval nope.safetensors --data digits (missing file)": ["eval", "nope.safetensors", "--data", "digits"],
    "hardenctl eval m.safetensors --data d --eps abc (bad flag)": [
        "eval",
        "m.safetensors",
        "--data",
        "d",
        "--eps",
        "abc",
    ],
}


def wall(argv: list[str], repeats: int) -> float:
    """Median wall seconds of a fresh process running ``argv`` (the first run counts: start-up is what is measured)."""
    return median_seconds(
        lambda: subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), repeats, warmup=False
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    entry = [sys.executable, "-m", "hardenctl"]
    baseline = wall([sys.executable, "-c", "import torch, timm"], args.repeats)
    print(f"{'command':<66} {'median s':>9} {'/ import torch+timm':>20}")
    label = 'python -c "import torch, timm" (for scale)'
    print(f"{label:<66} {baseline:9.3f} {1.0:20.2f}")
    for label, argv in COMMANDS.items():
        seconds = wall(entry + argv, args.repeats)
        print(f"{label:<66} {seconds:9.3f} {seconds / baseline:20.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
