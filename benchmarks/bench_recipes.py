"""The CIFAR-10 studies on one clean-pretrained model, by name (``--study``, default ``recipes``).

``--study NAME`` runs that study's file with the other options (``--study NAME --help`` lists them). Each study lives in
its own file and runs alone as well (``study_recipes.py``, ``study_cost_sensitive.py``, ``study_advamd.py``,
``study_finetune.py``; ``atop_study.py`` with a given ``--input``); this entry keeps the command lines recorded before
the split (``bench_recipes.py --study cost-sensitive`` ...) working.

    python benchmarks/bench_recipes.py [--study recipes] [OPTIONS OF THE STUDY]
"""

from __future__ import annotations

import argparse
import importlib
import sys

STUDIES = {  # --study → (module, its entry point, what it measures)
    "recipes": (
        "study_recipes",
        "main",
        "standard vs PGD-AT vs TRADES vs MART (and fsr) from one checkpoint, engine overhead (issues 3, 4)",
    ),
    "cost-sensitive": (
        "study_cost_sensitive",
        "main",
        "protecting cat and dog vs PGD-AT; Min-Max without AT (issue 7)",
    ),
    "advamd": ("study_advamd", "main", "AdvAmd vs a clean fine-tune over seeds, and its ablation (issue 5)"),
    "atop": (
        "atop_study",
        "main_from_recipes",
        "classifier vs purifier vs AToP with EOT (issue 6); --eval-n 200 recommended",
    ),
    "finetune": (
        "study_finetune",
        "main",
        "the finetune profile vs the papers' schedules, CIFAR-10 and imagewoof (issue 13)",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        add_help=False,
        epilog="studies: " + "; ".join(f"{name}: {what}" for name, (_, _, what) in STUDIES.items()),
    )
    parser.add_argument("--study", default="recipes", choices=STUDIES)
    known, rest = parser.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        parser.print_help()
        print()
    module, entry, _ = STUDIES[known.study]
    return getattr(importlib.import_module(module), entry)(rest)


if __name__ == "__main__":
    sys.exit(main())
