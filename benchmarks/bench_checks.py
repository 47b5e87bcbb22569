"""Sanity checks on honest vs masked models: does each rule fire on masking, and never on an honest model?

Since the sanity checks fail the release gate by default (``hardenctl/gates.py``), a check that
fires on an honest model blocks a good release and one that misses masking lets a fake robust
number through. This benchmark measures both on real models:

* honest models (trained once, cached under ``--out``): a standard-trained CIFAR-10 ``resnet10t``,
  a PGD-AT fine-tune of it, an FSR model (``stages=[layer3]``, base PGD-AT) fine-tuned from the
  PGD-AT model, the demo's clean digits model and its MART-hardened version (exactly as
  ``hardenctl demo`` makes them);
* masked models built from the clean ones: logits ×1e4 (final layer weight and bias scaled:
  softmax saturates in fp32), input quantisation (the forward pass rounds pixels to a few levels:
  zero gradient everywhere), and a randomised model (Gaussian input noise) evaluated without EOT
  (``eot_samples=1``); for contrast the same randomised model evaluated properly, with EOT.

Each model is evaluated with ``hardenctl.evaluate`` (``standard`` suite: APGD-CE → APGD-T → Square;
L∞ 8/255 on CIFAR-10, ε 0.1 on digits; reduced budgets) and every check's ``passed``, ``value`` and
``limit`` is recorded, plus the gradient counts behind ``input_gradients_nonzero`` (parsed from its
detail: the check's ``value`` is only the worst per-attack zero-gradient share).

    OMP_NUM_THREADS=1 python benchmarks/bench_checks.py [--threads 1] [--n 200] [--apgd-steps 50] ...
    python benchmarks/bench_checks.py --render      # rebuild the RESULTS.md section from --out/results.json

Writes ``--out/results.json`` after every model and the section "## Sanity checks: honest vs masked
models" of ``benchmarks/RESULTS.md`` at the end.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; --threads sets torch's own pool

import argparse  # noqa: E402
import copy  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from bench_checks_report import HEADING, findings, markdown, table, verdicts  # noqa: E402
from common import CIFAR, CIFAR_MEAN, CIFAR_STD, ROOT, minutes_log, update_section  # noqa: E402
from torch import nn  # noqa: E402

import hardenctl  # noqa: E402
from hardenctl import __version__, api  # noqa: E402
from hardenctl.data import load_dataset  # noqa: E402
from hardenctl.demo import DEMO_EPS, harden_demo_model, make_demo_model  # noqa: E402
from hardenctl.files import atomic_write  # noqa: E402
from hardenctl.models import create_timm_model, save_model, wrap_model  # noqa: E402

CIFAR_EPS = 8 / 255

# What each masked model must trip: the check designed for that kind of masking (README "Sanity checks",
# GradientStats' docstring, tests/test_evaluate.py). Other checks firing on a masked model is extra evidence.
EXPECTED = {
    "logits": ("input_gradients_nonzero",),
    "quantised": ("input_gradients_nonzero", "square_not_stronger_than_whitebox"),
    "noise-no-eot": ("eot_used_for_randomized_model",),
}
GRADIENT_DETAIL = re.compile(
    r"(\d+) zero(?: \(worst: ([\w-]+), [\d.]+% of its points[^)]*\))?, (\d+) flat-margin .*? and "
    r"(\d+) NaN/inf input gradients over (\d+) attacked points"
)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=200, help="CIFAR-10 test images evaluated (the first n)")
    parser.add_argument("--digits-n", type=int, default=360, help="digits-test images evaluated (360 = all)")
    parser.add_argument("--apgd-steps", type=int, default=50)
    parser.add_argument("--square-queries", type=int, default=1000)
    parser.add_argument("--large-eps-samples", type=int, default=100)
    parser.add_argument(
        "--eot-samples", type=int, default=10, help="EOT draws of the randomised model's proper evaluation"
    )
    parser.add_argument("--logit-scale", type=float, default=1e4)
    parser.add_argument(
        "--cifar-levels", type=int, default=4, help="input quantisation levels of the masked CIFAR model"
    )
    parser.add_argument(
        "--digits-levels", type=int, default=2, help="input quantisation levels of the masked digits model"
    )
    parser.add_argument("--cifar-sigma", type=float, default=0.1, help="input noise std of the randomised CIFAR model")
    parser.add_argument(
        "--digits-sigma", type=float, default=0.3, help="input noise std of the randomised digits model"
    )
    parser.add_argument("--train-n", type=int, default=10000, help="CIFAR-10 training images (balanced subset)")
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--at-epochs", type=int, default=1)
    parser.add_argument("--fsr-train-n", type=int, default=5000)
    parser.add_argument("--fsr-epochs", type=int, default=1)
    parser.add_argument(
        "--full-budget",
        default="cifar-pgd-at,digits-mart",
        help="honest models evaluated again at the CLI's default budgets (APGD 100 steps, Square 5000 queries), "
        "where Square has the most chance of a false alarm; empty: none",
    )
    parser.add_argument(
        "--logit-sweep",
        default="10,100,1000",
        help="logit scales between honest (×1) and masked (--logit-scale) evaluated as a dose-response (group sweep)",
    )
    parser.add_argument(
        "--quick-sweep",
        default="1,10,30",
        help="logit scales evaluated with --suite quick (PGD-20 + APGD-CE, cross-entropy only), which has no "
        "scale-invariant attack to see through saturation; empty: none",
    )
    parser.add_argument(
        "--only",
        default="",
        help="a regular expression: evaluate only the runs whose name it matches "
        "(results go to --out/results-partial.json, RESULTS.md is left alone)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "checks")
    parser.add_argument("--no-results-md", action="store_true", help="do not touch benchmarks/RESULTS.md")
    parser.add_argument(
        "--render", action="store_true", help="only rebuild the RESULTS.md section from --out/results.json"
    )
    parser.add_argument(
        "--note",
        default=None,
        help="with --render: a paragraph (run conditions, reading) stored in results.json "
        "and printed at the end of the section",
    )
    return parser.parse_args()


# ---------------------------------------------------------------------------------------------
# masked models
# ---------------------------------------------------------------------------------------------
def scaled_logits(model: nn.Module, scale: float) -> nn.Module:
    """A copy whose final layer's weight and bias are multiplied by ``scale``: same predictions, saturated softmax."""
    masked = copy.deepcopy(model)
    head = masked.model.get_classifier()
    with torch.no_grad():
        head.weight.mul_(scale)
        head.bias.mul_(scale)
    return masked


class Quantised(nn.Module):
    """Rounds its input to ``levels`` evenly spaced grey levels: the input gradient is zero everywhere."""

    def __init__(self, model: nn.Module, levels: int):
        super().__init__()
        self.model, self.info, self.levels = model, model.info, levels

    def forward(self, x):
        steps = self.levels - 1
        return self.model(torch.round(x * steps) / steps)


class NoisyInput(nn.Module):
    """Adds Gaussian noise of std ``sigma`` to the input at eval time: a randomised defence."""

    def __init__(self, model: nn.Module, sigma: float):
        super().__init__()
        self.model, self.info, self.sigma = model, model.info, sigma

    def forward(self, x):
        return self.model((x + self.sigma * torch.randn_like(x)).clamp(0, 1))


# ---------------------------------------------------------------------------------------------
# honest models (cached)
# ---------------------------------------------------------------------------------------------
def cheap_eval(test_data) -> dict:
    """The before/after evaluation api.harden always runs: made negligible (its numbers are not used here)."""
    return dict(
        eval_data=test_data,
        eval_n=16,
        eval_options={"suite": "quick", "eps": CIFAR_EPS, "apgd_steps": 5, "large_eps_samples": 0},
    )


def cifar_overrides(epochs: int, lr: float, recipe: str) -> dict:
    attack = {} if recipe == "standard" else {"attack_steps": 10, "attack_alpha": 2 / 255}
    return {
        "epochs": epochs,
        "batch_size": 128,
        "optimizer": "sgd",
        "lr": lr,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "warmup_epochs": 0,
        "augment": "crop-flip",
        "crop_padding": 4,
        "holdout_fraction": 0.05,
        "eps": CIFAR_EPS,
        "monitor_n": 200,
        "monitor_steps": 10,
        "select": "last",
        **attack,
    }


def build_models(args, out: Path, log) -> dict[str, dict]:
    """Train (or reuse) every honest model; returns name -> {path, seconds, clean accuracy on the training monitor}."""
    models: dict[str, dict] = {}
    train_full = load_dataset(str(CIFAR / "train.npz"))
    test_data = load_dataset(str(CIFAR / "test.npz")).head(args.n)

    def trained(name: str, make) -> Path:
        path, timing = out / name / "model.safetensors", out / name / "bench_train_seconds.json"
        if path.is_file():
            seconds = json.loads(timing.read_text())["seconds"] if timing.is_file() else None
            log(
                f"reusing {name}: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
            )  # --out may lie outside the repo
            models[name] = {"path": str(path), "train_seconds": seconds, "cached": True}
            return path
        log(f"training {name}")
        started = time.perf_counter()
        make(out / name)
        models[name] = {"path": str(path), "train_seconds": time.perf_counter() - started, "cached": False}
        atomic_write(timing, json.dumps({"seconds": models[name]["train_seconds"]}) + "\n")
        log(f"{name} done in {models[name]['train_seconds'] / 60:.1f} min")
        return path

    init = out / "cifar-init.safetensors"
    if not init.is_file():
        torch.manual_seed(args.seed)
        net = create_timm_model("resnet10t", num_classes=10, in_chans=3)
        save_model(wrap_model(net, "resnet10t", 10, CIFAR_MEAN, CIFAR_STD, input_size=(32, 32), source="bench"), init)
    train_data = train_full.head(args.train_n)
    standard = trained(
        "cifar-standard",
        lambda d: api.harden(
            init,
            train_data,
            recipe="standard",
            out_dir=d,
            overrides=cifar_overrides(args.pretrain_epochs, 0.1, "standard"),
            seed=args.seed,
            device="cpu",
            channels_last=True,
            resume=True,
            log=log,
            **cheap_eval(test_data),
        ),
    )
    pgd_at = trained(
        "cifar-pgd-at",
        lambda d: api.harden(
            standard,
            train_data,
            recipe="pgd-at",
            out_dir=d,
            overrides=cifar_overrides(args.at_epochs, 0.05, "pgd-at"),
            seed=args.seed,
            device="cpu",
            channels_last=True,
            resume=True,
            log=log,
            **cheap_eval(test_data),
        ),
    )
    trained(
        "cifar-fsr",
        lambda d: api.harden(
            pgd_at,
            train_full.head(args.fsr_train_n),
            recipe="fsr",
            out_dir=d,
            overrides={**cifar_overrides(args.fsr_epochs, 0.05, "fsr"), "stages": ["layer3"]},
            seed=args.seed,
            device="cpu",
            channels_last=True,
            resume=True,
            log=log,
            **cheap_eval(test_data),
        ),
    )
    digits = trained("digits-clean", lambda d: make_demo_model(d, seed=args.seed))
    trained("digits-mart", lambda d: harden_demo_model(digits, d, seed=args.seed, log=log))
    return models


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
def gradient_counts(detail: str) -> dict:
    match = GRADIENT_DETAIL.search(detail)
    if not match:
        return {}
    zero, worst, flat, nonfinite, points = match.groups()
    return {
        "zero": int(zero),
        "worst_attack": worst,
        "flat": int(flat),
        "nonfinite": int(nonfinite),
        "points": int(points),
        "flat_share": int(flat) / max(int(points), 1),
    }


def plan(args, out: Path) -> list[dict]:
    """Every evaluation: name, group (honest / masked / contrast), dataset, how to build the model, its settings."""
    load = lambda name: lambda: api.load_model(out / name / "model.safetensors")  # noqa: E731
    c, d = {"data": "cifar", "eps": CIFAR_EPS}, {"data": "digits", "eps": DEMO_EPS}
    entries = [
        {"name": "cifar standard", "group": "honest", **c, "build": load("cifar-standard")},
        {"name": "cifar pgd-at", "group": "honest", **c, "build": load("cifar-pgd-at")},
        {"name": "cifar fsr (layer3, on pgd-at)", "group": "honest", **c, "build": load("cifar-fsr")},
        {"name": "digits clean (demo input)", "group": "honest", **d, "build": load("digits-clean")},
        {"name": "digits mart (demo)", "group": "honest", **d, "build": load("digits-mart")},
        {
            "name": f"cifar standard, logits ×{args.logit_scale:g}",
            "group": "masked",
            "kind": "logits",
            **c,
            "build": lambda: scaled_logits(load("cifar-standard")(), args.logit_scale),
        },
        {
            "name": f"cifar standard, input quantised to {args.cifar_levels} levels",
            "group": "masked",
            "kind": "quantised",
            **c,
            "build": lambda: Quantised(load("cifar-standard")(), args.cifar_levels),
        },
        {
            "name": f"cifar standard + noise σ={args.cifar_sigma:g}, no EOT",
            "group": "masked",
            "kind": "noise-no-eot",
            **c,
            "build": lambda: NoisyInput(load("cifar-standard")(), args.cifar_sigma),
            "eot_samples": 1,
        },
        {
            "name": f"digits clean, logits ×{args.logit_scale:g}",
            "group": "masked",
            "kind": "logits",
            **d,
            "build": lambda: scaled_logits(load("digits-clean")(), args.logit_scale),
        },
        {
            "name": f"digits clean, input quantised to {args.digits_levels} levels",
            "group": "masked",
            "kind": "quantised",
            **d,
            "build": lambda: Quantised(load("digits-clean")(), args.digits_levels),
        },
        {
            "name": f"digits clean + noise σ={args.digits_sigma:g}, no EOT",
            "group": "masked",
            "kind": "noise-no-eot",
            **d,
            "build": lambda: NoisyInput(load("digits-clean")(), args.digits_sigma),
            "eot_samples": 1,
        },
        {
            "name": f"cifar standard + noise σ={args.cifar_sigma:g}, EOT {args.eot_samples}",
            "group": "contrast",
            **c,
            "build": lambda: NoisyInput(load("cifar-standard")(), args.cifar_sigma),
            "eot_samples": args.eot_samples,
        },
        {
            "name": f"digits clean + noise σ={args.digits_sigma:g}, EOT {args.eot_samples}",
            "group": "contrast",
            **d,
            "build": lambda: NoisyInput(load("digits-clean")(), args.digits_sigma),
            "eot_samples": args.eot_samples,
        },
    ]
    labels = {
        "cifar-standard": "cifar standard",
        "cifar-pgd-at": "cifar pgd-at",
        "cifar-fsr": "cifar fsr (layer3, on pgd-at)",
        "digits-clean": "digits clean (demo input)",
        "digits-mart": "digits mart (demo)",
    }
    for model_name in [m.strip() for m in args.full_budget.split(",") if m.strip()]:
        entries.append(
            {
                "name": f"{labels[model_name]}, APGD 100 / Square 5000",
                "group": "honest",
                **(c if model_name.startswith("cifar") else d),
                "build": load(model_name),
                "budget": {"apgd_steps": 100, "square_queries": 5000},
            }
        )
    for scale in [float(v) for v in args.logit_sweep.split(",") if v.strip()]:
        for base, label, data in (("cifar-standard", "cifar standard", c), ("digits-clean", "digits clean", d)):
            entries.append(
                {
                    "name": f"{label}, logits ×{scale:g}",
                    "group": "sweep",
                    "kind": "logits-sweep",
                    **data,
                    "build": (lambda base=base, scale=scale: scaled_logits(load(base)(), scale)),
                    "unscaled": labels[base],
                    "scale": scale,
                }
            )
    quick = [float(v) for v in args.quick_sweep.split(",") if v.strip()]
    for base, label, data in (("cifar-standard", "cifar standard", c), ("digits-clean", "digits clean", d)):
        for scale in quick:
            entries.append(
                {
                    "name": f"{label}, logits ×{scale:g}, suite quick",
                    "group": "sweep",
                    "kind": "logits-sweep",
                    **data,
                    "suite": "quick",
                    "build": (lambda base=base, scale=scale: scaled_logits(load(base)(), scale)),
                    "unscaled": f"{label}, logits ×{quick[0]:g}, suite quick" if scale != quick[0] else None,
                    "scale": scale,
                }
            )
    return entries


def evaluate_one(args, entry: dict, datasets: dict, log) -> dict:
    model = entry["build"]()
    data = datasets[entry["data"]]
    last = {"stage": None, "time": 0.0}

    def progress(stage: str, done: int, total: int, metrics: dict | None = None) -> None:
        now = time.perf_counter()
        if stage != last["stage"] or done == total or now - last["time"] > 30:
            log(f"  {entry['name']}: {stage} {done}/{total}")
            last.update(stage=stage, time=now)

    torch.manual_seed(args.seed)
    started = time.perf_counter()
    report = hardenctl.evaluate(
        model,
        data,
        progress=progress,
        eps=entry["eps"],
        suite=entry.get("suite", "standard"),
        n=len(data),
        apgd_steps=entry.get("budget", {}).get("apgd_steps", args.apgd_steps),
        square_queries=entry.get("budget", {}).get("square_queries", args.square_queries),
        large_eps_samples=args.large_eps_samples,
        eot_samples=entry.get("eot_samples", args.eot_samples),
        seed=args.seed,
    )
    seconds = time.perf_counter() - started
    checks = {
        c.name: {"passed": bool(c.passed), "value": c.value, "limit": c.limit, "detail": c.detail}
        for c in report.checks
    }
    if "input_gradients_nonzero" in checks:
        checks["input_gradients_nonzero"]["counts"] = gradient_counts(checks["input_gradients_nonzero"]["detail"])
    return {
        "name": entry["name"],
        "group": entry["group"],
        "kind": entry.get("kind"),
        "data": entry["data"],
        "eps": entry["eps"],
        "n": report.n,
        "clean": report.clean_accuracy,
        "robust": report.robust_accuracy,
        "attacks": report.attacks,
        "randomized": report.randomized,
        "eot_samples": report.eot_samples,
        "seconds": seconds,
        "checks": checks,
        "expected": list(EXPECTED.get(entry.get("kind"), ())),
        "budget": entry.get("budget"),
        "unscaled": entry.get("unscaled"),
        "suite": report.suite,
        "scale": entry.get("scale"),
    }


def main() -> int:
    args = arguments()
    out = args.out
    results_path = out / "results.json"
    if args.render:
        saved = json.loads(results_path.read_text())
        saved["meta"]["command"] = saved["meta"]["command"].rstrip()
        if args.note is not None:
            saved["meta"]["reading"] = args.note
            atomic_write(results_path, json.dumps(saved, indent=2) + "\n")
        section = markdown(saved["meta"], saved["rows"])
        if not args.no_results_md:
            update_section(HEADING, section)
        print(section)
        return 0
    torch.set_num_threads(args.threads)
    command = " ".join(["OMP_NUM_THREADS=1 python benchmarks/bench_checks.py"] + [shlex.quote(a) for a in sys.argv[1:]])
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log = minutes_log()

    models = build_models(args, out, log)
    only = re.compile(args.only) if args.only else None
    if only:  # a partial run must not replace the full run's results, which --render reads
        results_path = out / "results-partial.json"
    train_minutes = sum(m["train_seconds"] or 0 for m in models.values()) / 60
    datasets = {
        "cifar": load_dataset(str(CIFAR / "test.npz")).head(args.n),
        "digits": load_dataset("digits-test").head(args.digits_n),
    }
    meta = {
        key: getattr(args, key)
        for key in (
            "threads",
            "seed",
            "n",
            "digits_n",
            "apgd_steps",
            "square_queries",
            "large_eps_samples",
            "eot_samples",
            "logit_scale",
            "cifar_levels",
            "digits_levels",
            "cifar_sigma",
            "digits_sigma",
            "train_n",
            "pretrain_epochs",
            "at_epochs",
            "fsr_train_n",
            "fsr_epochs",
        )
    }
    meta.update(
        command=command,
        date=datetime.date.today().isoformat(),
        version=__version__,
        torch=torch.__version__,
        train_minutes=train_minutes,
        train_cached=any(m["cached"] for m in models.values()),
        models={k: {"train_seconds": v["train_seconds"], "cached": v["cached"]} for k, v in models.items()},
    )
    rows = []
    for entry in plan(args, out):
        if only and not only.search(entry["name"]):
            continue
        log(f"evaluating {entry['name']} ({entry['group']})")
        row = evaluate_one(args, entry, datasets, log)
        rows.append(row)
        failed = [name for name, c in row["checks"].items() if not c["passed"]]
        log(
            f"{row['name']}: clean {row['clean']:.1%}, robust {row['robust']:.1%}, {row['seconds']:.0f} s; "
            f"failed: {', '.join(failed) or 'none'}"
        )
        meta["minutes"] = (time.time() - started) / 60
        atomic_write(results_path, json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")

    meta["minutes"] = (time.time() - started) / 60
    atomic_write(results_path, json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    section = markdown(meta, rows)
    print("\n".join(table(rows)))
    print()
    print("\n".join(verdicts(rows)))
    print("\n".join(findings(rows)))
    if not args.no_results_md and not only:
        update_section(HEADING, section)
    log(f"done: {meta['minutes']:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
