"""The model card: ``README.md`` in a model folder, which the Hugging Face Hub renders.

Why huggingface_hub's classes: the front matter (``library_name``, tags, ``model-index``) is a schema the Hub
validates and renders as an evaluation widget; ``ModelCardData``/``EvalResult`` write it the way the Hub reads it,
and ``ModelCard`` parses it back (the test checks that round trip). The body is ours: what a person needs to trust
or distrust the numbers (threat model, n, intervals, what the suite does not cover).

Works on report dictionaries (``report.json`` as written), so a card can be made for any report on disk: a harden
report (input and hardened model side by side) or an eval report (one model).
"""
from __future__ import annotations

from typing import Any

from .common import correct_of, format_eps, span
from .markdown import escape_markdown as markdown_text

ROBUSTNESS_TAGS = ["image-classification", "timm", "adversarial-robustness", "hardenctl"]
SUITE_COVERS = {
    "standard": "APGD-CE, APGD-T (9 target classes) and Square (5,000 queries): AutoAttack's standard attacks",
    "quick": "PGD-20 and APGD-CE only: a smoke test, weaker than AutoAttack",
    "autoattack": "the reference AutoAttack package (standard version)",
}


def is_harden_report(report: dict[str, Any]) -> bool:
    return "hardened" in report and "input" in report


def evaluated(report: dict[str, Any]) -> dict[str, Any]:
    """The eval report of the model the card describes: the hardened one, or the report itself."""
    return report["hardened"] if is_harden_report(report) else report


def threat_model(result: dict[str, Any]) -> dict[str, Any]:
    """What a robust-accuracy number means: without these it is not comparable with any other."""
    interval = (result.get("intervals") or {}).get("robust_accuracy")
    return {
        "norm": result.get("norm"), "eps": result.get("eps"), "eps_text": format_eps(result.get("eps")),
        "eps_levels": format_eps(result.get("eps"), decimal=False),
        "suite": result.get("suite"), "n": result.get("n"), "seed": result.get("seed"),
        "interval_95": [round(v, 6) for v in interval] if interval else None,
        "interval_method": result.get("interval_method", "wilson"), "data_sha256": result.get("data_sha256"),
    }


def eval_results(report: dict[str, Any], dataset_name: str, dataset_id: str | None) -> list[Any]:
    from huggingface_hub import EvalResult

    result = evaluated(report)
    threat = threat_model(result)
    clean_interval = (result.get("intervals") or {}).get("clean_accuracy")
    common = dict(task_type="image-classification", task_name="Image Classification",
                  dataset_type=dataset_id or "custom", dataset_name=dataset_name, metric_type="accuracy",
                  verified=False)
    norm_text = "L∞" if threat["norm"] == "linf" else "L2"
    return [
        EvalResult(metric_value=result["clean_accuracy"], metric_name="clean accuracy",
                   metric_args={"n": threat["n"], "interval_95": [round(v, 6) for v in clean_interval] if clean_interval else None},
                   **common),
        EvalResult(metric_value=result["robust_accuracy"],
                   metric_name=f"robust accuracy ({norm_text} ε={threat['eps_levels']}, {threat['suite']} suite)",
                   metric_args={k: v for k, v in threat.items() if k not in ("eps_text",)}, **common),
    ]


def card_data(report: dict[str, Any], model_name: str, dataset_id: str | None = None) -> Any:
    from huggingface_hub import ModelCardData

    result = evaluated(report)
    tags = list(ROBUSTNESS_TAGS)
    if is_harden_report(report):
        tags.append(f"{report['recipe']}")
    dataset_name = (report.get("data") or {}).get("eval") if is_harden_report(report) else (result.get("data") or {}).get("source")
    return ModelCardData(
        library_name="timm", pipeline_tag="image-classification", tags=tags,
        datasets=[dataset_id] if dataset_id else None, model_name=model_name,
        eval_results=eval_results(report, str(dataset_name or "evaluation data"), dataset_id),
    )


def _accuracy(result: dict[str, Any], metric: str) -> str:
    """``63.50% (127/200; 56.6–69.9)``: the rate, the count it was divided from and its 95% interval."""
    value = result.get(metric)
    if value is None:
        return "–"
    count = correct_of(result.get("counts") or {}, metric.removesuffix("_accuracy"))
    interval = span((result.get("intervals") or {}).get(metric), brackets=False)
    details = "; ".join(part for part in (count, interval) if part)
    return f"{100 * float(value):.2f}%" + (f" ({details})" if details else "")


def _results_table(report: dict[str, Any]) -> list[str]:
    threat = threat_model(evaluated(report))
    if is_harden_report(report):
        rows = ["| metric | input model | hardened |", "|---|---|---|"]
        for metric, label in (("clean_accuracy", "clean accuracy"), ("robust_accuracy", "robust accuracy")):
            rows.append(f"| {label} | {_accuracy(report['input'], metric)} | {_accuracy(report['hardened'], metric)} |")
    else:
        rows = ["| metric | value |", "|---|---|"]
        for metric, label in (("clean_accuracy", "clean accuracy"), ("robust_accuracy", "robust accuracy")):
            rows.append(f"| {label} | {_accuracy(report, metric)} |")
    norm_text = "L∞" if threat["norm"] == "linf" else "L2"
    rows += ["", f"Threat model: {norm_text}, ε = {threat['eps_text']}; attacks: `{threat['suite']}` suite "
                 f"({SUITE_COVERS.get(str(threat['suite']), 'a custom list of attacks')}); n = {threat['n']} images, "
                 f"seed {threat['seed']}. Percentages are followed by the count and the 95% Wilson interval. A point counts "
                 "as robust only if it survives every attack (worst case per image)."]
    return rows


def _hardening(report: dict[str, Any]) -> list[str]:
    config = report.get("recipe_config") or {}
    shown = ["epochs", "batch_size", "optimizer", "lr", "weight_decay", "eps", "attack", "attack_steps", "attack_alpha",
             "beta", "schedule", "eps_warmup", "ema", "select"]
    data = report.get("data") or {}
    lines = ["## How it was hardened", "",
             f"Recipe `{report['recipe']}`, profile `{report.get('profile')}`, trained on {markdown_text(str(data.get('train')))} "
             f"({data.get('train_n')} images, {data.get('holdout_n')} held out to select the epoch); the saved weights are "
             f"epoch {report.get('selected_epoch')} of {report.get('last_epoch')} (selected by held-out {report.get('selected_by')} "
             "accuracy).", "", "| parameter | value |", "|---|---|"]
    lines += [f"| `{key}` | {markdown_text(str(config[key]))} |" for key in shown if key in config]
    decisions = report.get("decisions") or []
    if decisions:
        lines += ["", "Resolved automatically: " + "; ".join(markdown_text(d) for d in decisions) + "."]
    lines += ["", "The complete resolved recipe is `recipe.yaml` in this folder; `report.json` holds every number in this card."]
    return lines


def card_markdown(report: dict[str, Any], model_name: str, repo_id: str | None = None) -> str:
    """The card's body (below the front matter)."""
    result = evaluated(report)
    model = result.get("model") or {}
    threat = threat_model(result)
    arch = model.get("arch", "unknown")
    size = "×".join(str(v) for v in model.get("input_size") or []) or "?"
    norm_flag = threat["norm"]
    what = (f"A timm `{arch}` image classifier ({model.get('num_classes')} classes, {size} px input)"
            + (f", adversarially hardened with hardenctl's `{report['recipe']}` recipe." if is_harden_report(report)
               else ", evaluated for adversarial robustness with hardenctl."))
    load_id = f"hf-hub:{repo_id}" if repo_id else "local-dir:PATH/TO/THIS/FOLDER"
    eval_command = (f"hardenctl eval {repo_id and 'hf-hub:' + repo_id or 'PATH/TO/THIS/FOLDER'} --data YOUR_TEST_DATA "
                    f"--eps {threat['eps_levels']} --norm {norm_flag} --suite {threat['suite']} --n {threat['n']} --seed {threat['seed']}")
    lines = [f"# {markdown_text(model_name)}", "", what, "", "## Robustness", ""] + _results_table(report)
    if is_harden_report(report):
        lines += [""] + _hardening(report)
    lines += ["", "## Use it", "", "```python", "import timm", "import torch", "",
              f"model = timm.create_model('{load_id}', pretrained=True).eval()",
              "config = timm.data.resolve_model_data_config(model)",
              "transform = timm.data.create_transform(**config, is_training=False)",
              "# logits = model(transform(pil_image).unsqueeze(0))", "```", "",
              "## Re-evaluate it", "", "```bash", eval_command, "```", "",
              "Use the same data (its sha256 is in `report.json` as `data_sha256`) to reproduce the numbers above exactly.",
              "", "## Limits", "",
              f"- **Sample size.** Measured on {threat['n']} images: the robust accuracy is known to within its 95% "
              "interval, not to the digit.",
              f"- **One seed, one ε.** One run (seed {threat['seed']}) at {norm_flag} ε = {threat['eps_text']}; robustness at "
              "other radii, other norms, to patches, corruptions or distribution shift was not measured.",
              "- **Attacks are an upper bound.** The suite finds adversarial examples; surviving it is evidence, not a "
              "certificate. An attack adapted to this model (Tramèr et al., 2020) could lower the number.",
              "- **Sanity checks** (gradient masking, bounds, Square vs white-box) are in `report.json`: read them before "
              "trusting a high number."]
    return "\n".join(lines) + "\n"


def model_card(report: dict[str, Any], model_name: str | None = None, dataset_id: str | None = None,
               repo_id: str | None = None) -> Any:
    """A ``huggingface_hub.ModelCard`` for this report."""
    from huggingface_hub import ModelCard

    result = evaluated(report)
    name = model_name or (repo_id.split("/")[-1] if repo_id else f"{(result.get('model') or {}).get('arch', 'model')}-hardened")
    data = card_data(report, name, dataset_id)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_markdown(report, name, repo_id)}")
