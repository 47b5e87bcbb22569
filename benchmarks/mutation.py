"""A small mutation-testing run: does the test suite notice when the attack and evaluation code is broken?

Mutates one operator or constant at a time in ``hardenctl/attacks/*.py`` and ``hardenctl/evaluation/*.py``
(comparison flips, arithmetic swaps, boolean negation, off-by-one constants), runs the tests that cover that
code, and reports the mutants that survive. Slow (one pytest run per mutant), so not in CI: run it by hand and
record the surviving mutants you judged harmless, and why, in benchmarks/RESULTS.md.

    python benchmarks/mutation.py --sample 60 --seed 0            # a random sample of mutants
    python benchmarks/mutation.py --files hardenctl/attacks/apgd.py --sample 0   # every mutant of one file

It edits files in place (and restores them): run it in a separate clone, not in a tree others are testing.
(A dedicated tool such as mutmut does the same with more operators; this script needs no configuration.)
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = sorted([*ROOT.glob("hardenctl/attacks/*.py"), *ROOT.glob("hardenctl/evaluation/*.py")])
# the tests that cover this code, minus the slow comparison with the reference AutoAttack and subprocess tests
TESTS = [
    "tests/attacks",
    "tests/evaluation",
    "tests/test_evaluate.py",
    "tests/test_gates.py",
    "tests/test_stats.py",
    "--deselect",
    "tests/attacks/test_suites.py",
    "-m",
    "not slow",
]
SWAPS = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.And: ast.Or,
    ast.Or: ast.And,
}


@dataclass
class Mutant:
    path: Path
    line: int
    description: str
    source: str  # the whole mutated file


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def mutants_of(path: Path) -> list[Mutant]:
    """Every single-site mutant of ``path`` (operators swapped, numbers nudged, True/False flipped)."""
    text = path.read_text()
    tree = ast.parse(text)
    skip = _docstring_lines(tree)
    sites = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Compare) and type(node.ops[0]) in SWAPS:
            sites.append((node, "ops", 0))
        elif isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAPS:
            sites.append((node, "op", None))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, (bool, int, float))
            and not isinstance(node.value, str)
        ):
            sites.append((node, "value", None))
    out = []
    for index, (node, attr, position) in enumerate(sites):
        tree = ast.parse(text)  # fresh tree: mutate the index-th site of the same walk
        target = [n for n in ast.walk(tree) if getattr(n, "lineno", None) not in skip and _is_site(n)][index]
        if attr == "ops":
            old = type(target.ops[0])
            target.ops[0] = SWAPS[old]()
            what = f"{old.__name__} → {SWAPS[old].__name__}"
        elif attr == "op":
            old = type(target.op)
            target.op = SWAPS[old]()
            what = f"{old.__name__} → {SWAPS[old].__name__}"
        else:
            value = target.value
            target.value = (not value) if isinstance(value, bool) else value + 1
            what = f"{value!r} → {target.value!r}"
        out.append(Mutant(path, target.lineno, what, ast.unparse(tree)))
    return out


def _is_site(node: ast.AST) -> bool:
    return (
        (isinstance(node, ast.Compare) and type(node.ops[0]) in SWAPS)
        or (isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAPS)
        or (
            isinstance(node, ast.Constant)
            and isinstance(node.value, (bool, int, float))
            and not isinstance(node.value, str)
        )
    )


def killed(mutant: Mutant, timeout: float) -> tuple[bool, float]:
    """Run the tests with ``mutant`` in place; True when they fail (or time out). The file is always restored."""
    original = mutant.path.read_text()
    started = time.perf_counter()
    try:
        mutant.path.write_text(mutant.source)
        try:
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
            }  # this checkout's code, also under an editable install elsewhere
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
                cwd=ROOT,
                capture_output=True,
                timeout=timeout,
                env=env,
            )
            return done.returncode != 0, time.perf_counter() - started
        except subprocess.TimeoutExpired:
            return True, time.perf_counter() - started
    finally:
        mutant.path.write_text(original)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="*", type=Path, help="files to mutate (default: attacks/ and evaluation/)")
    parser.add_argument("--sample", type=int, default=60, help="random mutants to run (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per test run (a timeout counts as killed)")
    args = parser.parse_args()
    files = [ROOT / f for f in args.files] if args.files else TARGETS
    mutants = [m for path in files for m in mutants_of(path)]
    chosen = random.Random(args.seed).sample(mutants, args.sample) if 0 < args.sample < len(mutants) else mutants
    print(f"{len(mutants)} mutants in {len(files)} files; running {len(chosen)}", flush=True)
    survivors = []
    for number, mutant in enumerate(chosen, 1):
        dead, seconds = killed(mutant, args.timeout)
        where = f"{mutant.path.relative_to(ROOT)}:{mutant.line}"
        print(
            f"[{number}/{len(chosen)}] {'killed  ' if dead else 'SURVIVED'} {where} {mutant.description} "
            f"({seconds:.0f} s)",
            flush=True,
        )
        if not dead:
            survivors.append(f"{where} {mutant.description}")
    print(f"\n{len(chosen) - len(survivors)} of {len(chosen)} mutants killed; survivors:")
    for line in survivors:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
