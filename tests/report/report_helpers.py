"""A report whose every name is hostile markup, for the renderers' escaping tests (no model needed)."""

from __future__ import annotations

import torch

from hardenctl.report import Check, Gallery, Gate, Report

# class folders as users name them: math for matplotlib, a pipe for Markdown tables, emphasis, HTML, rich markup,
# and a file name with a newline, a bell and a byte that is not UTF-8 (os.fsdecode gives a lone surrogate)
NAMES = [
    "a $\\frac$ b",
    "x | y",
    "**x**",
    "<script>alert(1)</script>",
    "[bold]red[/bold] [/x]",
    "two\nlines\x07 \udcff",
]
SHOWN = [
    "a $\\frac$ b",
    "x | y",
    "**x**",
    "<script>alert(1)</script>",
    "[bold]red[/bold] [/x]",
    "two\\nlines\\x07 \\xff",
]


def hostile_gallery() -> Gallery:
    """Two broken and one robust sample whose true, clean and adversarial classes are hostile names."""
    gallery = Gallery(size=3, class_names=list(NAMES), eps=0.1, norm="linf")
    torch.manual_seed(0)
    x = torch.rand(3, 1, 4, 4)
    worst = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    y, clean, adversarial = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([3, 4, 2])
    gallery.offer(
        0, x, worst, y, clean, adversarial, torch.ones(3, dtype=torch.bool), torch.tensor([True, True, False])
    )
    return gallery


def hostile_report(counts: bool = True) -> Report:
    per_class = {
        str(i): {"name": name, "n": 10, "clean_accuracy": 0.9, "robust_accuracy": 0.5} for i, name in enumerate(NAMES)
    }
    paired = {
        "n": 60,
        "baseline": "old | `base`.json",
        "baseline_samples": "old.samples.jsonl",
        "robust": {"regressed": 2, "improved": 0, "difference": 0.033, "mcnemar_p": 0.5},
        "regressed_samples": [
            {
                "index": i,
                "source_id": f"photos/{name}/1.png",
                "label": i,
                "adversarial_prediction": 0,
                "broken_by": "pgd",
            }
            for i, name in enumerate(NAMES[:2])
        ],
    }
    return Report(
        schema_version="1.0",
        clean_accuracy=0.9,
        robust_accuracy=0.5,
        attacks={"fgsm": 0.6, "[bold]pgd": 0.5},
        per_class=per_class,
        n=60,
        eps=0.1,
        norm="linf",
        suite="quick",
        seed=0,
        model_sha256="m",
        data_sha256="d",
        versions={"torch": "2"},
        normalization={"source": "config"},
        seconds=1.0,
        checks=[Check("input_gradients_nonzero", False, f"class {name} is odd") for name in NAMES],
        gates=[Gate("sanity_checks", 0.0, 0.0, False)],
        model={"arch": NAMES[0] + " " + NAMES[4], "path": "m|odel"},
        data={"source": "photos/*x*|y"},
        eps_sweep=[{"eps": 0.05, "robust_accuracy": 0.7}, {"eps": 0.1, "robust_accuracy": 0.5}],
        extra={"paired": paired, "recipe": {"summary": "class **x** | <b>"}},
        pictures=hostile_gallery(),
        counts={"n": 60, "clean_correct": 54, "robust_correct": 30, "attacks": {"fgsm": 36, "[bold]pgd": 30}}
        if counts
        else {},
    )
