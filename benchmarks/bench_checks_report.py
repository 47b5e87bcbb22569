"""The reading of ``bench_checks.py``'s results: the table, each check's verdict (does it fire on the masking it is
meant for, and never on an honest model?), the limit proposals and the RESULTS.md section.

Kept apart from the run (``bench_checks.py``, which trains and evaluates the models) so that each file stays readable;
``bench_checks.py --render`` needs only this and ``results.json``.
"""

from __future__ import annotations

from hardenctl.evaluation import FLAT_GRADIENT_LIMIT, ZERO_GRADIENT_LIMIT

HEADING = "## Sanity checks: honest vs masked models"

# The checks in report order, with the short column label used in the table.
CHECKS = (
    ("perturbations_in_bounds", "in bounds"),
    ("input_gradients_nonzero", "gradients nonzero"),
    ("eot_used_for_randomized_model", "EOT used"),
    ("square_not_stronger_than_whitebox", "Square ≤ white-box"),
    ("near_zero_accuracy_at_large_eps", "acc. at ε=0.5"),
    ("eval_mode_and_buffers_unchanged", "buffers unchanged"),
)


# ---------------------------------------------------------------------------------------------
# the table and the verdicts
# ---------------------------------------------------------------------------------------------
def cell(row: dict, name: str) -> str:
    check = row["checks"].get(name)
    if check is None:
        return "–"
    value = check["value"]
    if name == "input_gradients_nonzero":
        counts = check.get("counts") or {}
        shown = f"{value:.3f}" if value is not None else "?"
        if counts:
            shown += f" / {counts['flat_share']:.3f}" + (f" / {counts['nonfinite']} NaN" if counts["nonfinite"] else "")
    elif value is None:
        shown = "n/a"
    elif isinstance(value, float) and not float(value).is_integer():
        shown = f"{value:.3f}"
    else:
        shown = f"{value:g}"
    return f"{shown} pass" if check["passed"] else f"**{shown} FAIL**"


def limits_line(rows: list[dict]) -> str:
    parts = []
    for name, label in CHECKS:
        limits = {
            r["checks"][name]["limit"] for r in rows if name in r["checks"] and r["checks"][name]["limit"] is not None
        }
        if name == "input_gradients_nonzero":
            parts.append(
                f"{label}: worst per-attack zero-gradient share ≤ {ZERO_GRADIENT_LIMIT} / "
                f"flat-margin share ≤ {FLAT_GRADIENT_LIMIT} / no NaN"
            )
        elif name == "eot_used_for_randomized_model":
            parts.append(
                f"{label}: EOT draws ≥ {', '.join(f'{v:g}' for v in sorted(limits)) or 2} for a randomised model"
            )
        elif limits:
            parts.append(f"{label}: value ≤ {', '.join(f'{v:g}' for v in sorted(limits))}")
    return "; ".join(parts)


def table(rows: list[dict]) -> list[str]:
    head = ["model", "group", "clean", "robust", "s"] + [label for _, label in CHECKS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append(
            "| "
            + " | ".join(
                [row["name"], row["group"], f"{row['clean']:.1%}", f"{row['robust']:.1%}", f"{row['seconds']:.0f}"]
                + [cell(row, name) for name, _ in CHECKS]
            )
            + " |"
        )
    return lines


def rule_values(row: dict, name: str):
    """The statistic a rule compares with its limit; the gradient check's sub-rules are named ``zero`` and ``flat``."""
    if name in ("zero", "flat"):
        check = row["checks"]["input_gradients_nonzero"]
        return check["value"] if name == "zero" else (check.get("counts") or {}).get("flat_share")
    return row["checks"][name]["value"]


def separation(rows: list[dict], rule: str, check: str, limit: float, kinds: tuple[str, ...] | None = None) -> str:
    """Largest honest value vs smallest value of the masked models meant to trip ``check`` (of ``kinds``), against
    ``limit``."""
    honest = [(r["name"], rule_values(r, rule)) for r in rows if r["group"] in ("honest", "contrast")]
    masked = [
        (r["name"], rule_values(r, rule))
        for r in rows
        if r["group"] == "masked" and check in r["expected"] and (kinds is None or r["kind"] in kinds)
    ]
    honest = [(n, v) for n, v in honest if v is not None]
    masked = [(n, v) for n, v in masked if v is not None]
    if not honest:
        return ""
    top = max(honest, key=lambda t: t[1])
    same = all(v == top[1] for _, v in honest)
    text = f"honest max {fmt(top[1])} ({'all ' + str(len(honest)) + ' honest and contrast runs' if same else top[0]})"
    if not masked:
        return text + f", limit {fmt(limit)}"
    low = min(masked, key=lambda t: t[1])
    text += f", masked min {fmt(low[1])} ({low[0]}), limit {fmt(limit)}"
    if top[1] <= limit < low[1]:
        text += f": separates them (margin {fmt(limit - top[1])} above honest, {fmt(low[1] - limit)} below masked)"
    elif top[1] < low[1]:
        text += (
            f": does NOT separate them; a limit in [{fmt(top[1])}, {fmt(low[1])}) would, "
            f"e.g. {fmt((top[1] + low[1]) / 2)}"
        )
    else:
        text += ": the values overlap, no limit separates them"
    return text


def verdicts(rows: list[dict]) -> list[str]:
    judged_rows = [r for r in rows if r["group"] != "sweep"]
    lines = []
    for name, _ in CHECKS:
        judged = [r for r in judged_rows if name in r["checks"]]
        if not judged:
            continue
        false_alarms = [r for r in judged if r["group"] in ("honest", "contrast") and not r["checks"][name]["passed"]]
        should = [r for r in judged if name in r["expected"]]
        missed = [r for r in should if r["checks"][name]["passed"]]
        extra = [
            r
            for r in judged
            if r["group"] == "masked" and name not in r["expected"] and not r["checks"][name]["passed"]
        ]
        text = f"- **`{name}`**: "
        if should:
            text += f"fires on {len(should) - len(missed)}/{len(should)} masked models it is meant for"
            if missed:
                text += (
                    " (MISSES " + ", ".join(f"{r['name']} = {fmt(r['checks'][name]['value'])}" for r in missed) + ")"
                )
        else:
            text += "no masked model here is meant to trip it"
        text += "; false alarms on honest or properly evaluated models: " + (
            ", ".join(f"{r['name']} = {fmt(r['checks'][name]['value'])}" for r in false_alarms)
            if false_alarms
            else "none"
        )
        if extra:
            text += "; also fires on " + ", ".join(f"{r['name']} ({fmt(r['checks'][name]['value'])})" for r in extra)
        limit = judged[0]["checks"][name]["limit"]
        if name == "eot_used_for_randomized_model":
            text += (
                "; structural rule (value = EOT draws of a randomised model, n/a for a deterministic one): the "
                "randomised models had 1 draw without EOT and "
                + ", ".join(sorted({fmt(r["checks"][name]["value"]) for r in judged if r["group"] == "contrast"}))
                + " with it"
            )
        elif name == "input_gradients_nonzero":
            text += (
                ". Sub-rule zero-gradient share (worst attack): "
                f"{separation(judged_rows, 'zero', name, ZERO_GRADIENT_LIMIT)}. Sub-rule flat-margin share (meant for "
                "the quantised models only: scaled logits keep a non-zero margin gradient): "
                f"{separation(judged_rows, 'flat', name, FLAT_GRADIENT_LIMIT, ('quantised',))}"
            )
        elif limit is not None:
            text += f". {separation(judged_rows, name, name, limit)}"
            if not should:
                fired = [
                    rule_values(r, name)
                    for r in judged_rows
                    if r["group"] == "masked" and not r["checks"][name]["passed"]
                ]
                if fired:
                    text += f"; the masked models it fired on had ≥ {fmt(min(fired))}"
        lines.append(text + ".")
    sweep = sorted(
        (r for r in rows if r["group"] == "sweep"),
        key=lambda r: (r.get("suite", "standard") != "standard", r["data"], r["scale"]),
    )
    if sweep:
        lines += [
            "",
            "Logit-scale dose-response (group sweep, not judged: the clean models' logits scaled between the honest "
            "×1 and the masked ×1e4; the zero-gradient share against how far the cross-entropy attacks are actually "
            "fooled):",
            "",
        ]
        by_name = {r["name"]: r for r in rows}
        for r in sweep:
            base = by_name.get(r["unscaled"]) if r["unscaled"] else None
            check = r["checks"]["input_gradients_nonzero"]
            failed = [name for name, c in r["checks"].items() if not c["passed"]]
            ce = "apgd-ce"
            text = (
                f"- {r['name']}: zero-gradient share {fmt(check['value'])}, after APGD-CE "
                f"{r['attacks'].get(ce, float('nan')):.1%}, robust {r['robust']:.1%}"
            )
            if base:
                text += f" (unscaled: {base['attacks'].get(ce, float('nan')):.1%} and {base['robust']:.1%})"
            text += f"; failed checks: {', '.join(failed) or 'none'}"
            lines.append(text)
    return lines


def findings(rows: list[dict]) -> list[str]:
    """Sweep runs whose reported robust accuracy is inflated over the unscaled model under the same suite, and what
    caught them."""
    by_name = {r["name"]: r for r in rows}
    honest_zero = max(
        [r["checks"]["input_gradients_nonzero"]["value"] or 0 for r in rows if r["group"] in ("honest", "contrast")],
        default=0.0,
    )
    inflated = []
    for r in rows:
        base = by_name.get(r.get("unscaled") or "")
        if r["group"] != "sweep" or base is None or r["robust"] - base["robust"] <= 0.02:
            continue
        check = r["checks"]["input_gradients_nonzero"]
        others = [name for name, c in r["checks"].items() if not c["passed"] and name != "input_gradients_nonzero"]
        inflated.append((r, base, check, others))
    if not inflated:
        return [
            "No sweep run reported a robust accuracy more than 2 points above its unscaled model under the same suite."
        ]
    lines = [
        "False robustness that reaches the reported number (sweep runs more than 2 points above the unscaled model, "
        "same suite):",
        "",
    ]
    missed = []
    for r, base, check, others in inflated:
        caught = "caught by the gradient rule" if not check["passed"] else "MISSED by the gradient rule"
        lines.append(
            f"- {r['name']}: robust {base['robust']:.1%} → {r['robust']:.1%}, zero-gradient share "
            f"{fmt(check['value'])}: {caught}; other checks that fired: {', '.join(others) or 'none'}"
        )
        if check["passed"]:
            missed.append((r, check["value"] or 0.0, others))
    if missed:
        separable = [v for _, v, _ in missed if v > honest_zero]
        unguarded = [r["name"] for r, _, others in missed if not others]
        text = (
            f"Limit proposal for ZERO_GRADIENT_LIMIT (now {ZERO_GRADIENT_LIMIT}): the honest and contrast runs' "
            f"largest zero-gradient share is {fmt(honest_zero)}; the runs the gradient rule missed had "
            f"{', '.join(fmt(v) for _, v, _ in missed)}"
            + (f", and {len(unguarded)} of them ({', '.join(unguarded)}) passed every check" if unguarded else "")
            + ". "
        )
        if separable:
            candidates = [c for c in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4) if honest_zero < c < min(separable)]
            middle = (honest_zero + min(separable)) / 2  # the round value nearest the middle of the gap
            limit = min(candidates, key=lambda c: abs(c - middle)) if candidates else middle
            caught = sum(v > limit for v in separable)
            text += (
                f"A limit of {fmt(limit)} would catch {caught} of the {len(missed)} (margin {fmt(limit - honest_zero)} "
                f"above the honest maximum, {fmt(min(separable) - limit)} below the smallest missed share); our honest "
                "models are small and not very confident, so a lower limit needs checking on a well-trained confident "
                "model before it ships. "
            )
        if len(separable) < len(missed):
            text += (
                f"{len(missed) - len(separable)} had no more exact zeros than the honest runs: no limit on this "
                "statistic catches them (the statistic, counting exactly zero gradients, is the gap, not the limit)."
            )
        lines += ["", text.rstrip()]
    return lines


def fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not float(value).is_integer():
        return f"{value:.3f}"
    return f"{value:g}"


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        HEADING,
        "",
        f"Command ({meta['date']}; hardenctl {meta['version']}, torch {meta['torch']}, {meta['threads']} CPU "
        f"thread(s), {meta['minutes']:.0f} min wall"
        + (
            f" for the evaluations; training the models took {meta['train_minutes']:.0f} min in an earlier run of the "
            "same command, whose cache under `benchmarks/out/checks/` this run reused"
            if meta.get("train_cached")
            else f", of which {meta['train_minutes']:.0f} min training"
        )
        + "):",
        "",
        f"    {meta['command']}",
        "",
        "Honest models: `resnet10t` (timm, random init, CIFAR mean/std folded in) trained cleanly with `--recipe "
        f"standard` for {meta['pretrain_epochs']} epochs (lr 0.1 cosine, batch 128, crop+flip) on the first "
        f"{meta['train_n']} images of `../shared/data/cifar10/train.npz`; PGD-AT fine-tuned from it for "
        f"{meta['at_epochs']} epoch(s) (lr 0.05 cosine, PGD-10 2/255 at L∞ 8/255); FSR (`stages=[layer3]`, base "
        f"PGD-AT) fine-tuned from the PGD-AT model for {meta['fsr_epochs']} epoch(s) on {meta['fsr_train_n']} images; "
        "the digits models are exactly `hardenctl demo`'s (timm `test_resnet`, clean Adam training on digits-train, "
        f"then MART at ε 0.1). Masked models wrap the clean ones: logits ×{meta['logit_scale']:g} (final layer weight "
        f"and bias scaled), input rounded to {meta['cifar_levels']} (CIFAR) / {meta['digits_levels']} (digits) grey "
        f"levels, Gaussian input noise σ {meta['cifar_sigma']:g} (CIFAR) / {meta['digits_sigma']:g} (digits) evaluated "
        "with `eot_samples=1`, and for "
        f'contrast the noisy models evaluated properly with EOT {meta["eot_samples"]} (group "contrast": these should '
        'pass). Rows ending "APGD 100 / Square 5000" repeat an honest model at the CLI\'s default budgets, where '
        'Square has the most room for a false alarm; group "sweep" scales the clean models\' logits by intermediate '
        "factors, with the standard suite and with `--suite quick` (PGD-20 → APGD-CE, both on cross-entropy, so "
        "nothing scale-invariant).",
        "",
        "Evaluation: `hardenctl.evaluate`, suite `standard` (APGD-CE → APGD-T → Square) with APGD "
        f"{meta['apgd_steps']} steps, Square {meta['square_queries']} queries, `large_eps_samples` "
        f"{meta['large_eps_samples']}, seed {meta['seed']}; CIFAR-10 at L∞ 8/255 on the first {meta['n']} test images, "
        f"digits at L∞ 0.1 on the first {meta['digits_n']} of digits-test. Cells: the check's `value`, then pass/FAIL "
        "against its `limit`. Gradient column: worst per-attack zero-gradient share / flat-margin share (parsed from "
        f"the check's detail; the rule also fails on any NaN/inf). Limits: {limits_line(rows)}. "
        "`robust_accuracy_non_increasing_in_eps` needs `--eps-sweep` and was not run.",
        "",
        *table(rows),
        "",
        "Verdicts (masked models are meant to trip: logits → `input_gradients_nonzero`; quantised → "
        "`input_gradients_nonzero` and `square_not_stronger_than_whitebox`; noise without EOT → "
        "`eot_used_for_randomized_model`; honest and contrast models should trip nothing):",
        "",
        *verdicts(rows),
        "",
        *findings(rows),
        "",
    ]
    if meta.get("reading"):
        lines += [meta["reading"], ""]
    return "\n".join(lines)
