"""The model card: ``README.md`` in a model folder, which the Hugging Face Hub renders.

Why huggingface_hub's classes: the front matter (``library_name``, tags, ``license``, ``base_model``,
``model-index``) is a schema the Hub validates and renders as an evaluation widget; ``ModelCardData``/``EvalResult``
write it the way the Hub reads it (quoting every value in YAML), and ``ModelCard`` parses it back (the tests check
that round trip). The body is ours: what a person needs to trust or distrust the numbers (threat model, n, intervals,
what was evaluated, what the suite does not cover).

Works on report dictionaries (``report.json`` as written), so a card can be made for any report on disk: a harden
report (input and hardened model side by side) or an eval report (one model). A report is data, possibly hostile:
every string from it is escaped for where it lands (Markdown text, a code span, a Python string literal, a shell
word, YAML), and code fences are longer than any run of backticks inside them, so nothing closes them early.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from .card_inputs import DataSource, checked_accuracy, checked_threat, describe_source
from .common import clean_text, correct_of, format_eps, span
from .text import code_span
from .text import escape_markdown as markdown_text

ROBUSTNESS_TAGS = ["image-classification", "timm", "adversarial-robustness", "hardenctl"]
SUITE_COVERS = {
    "standard": "APGD-CE, APGD-T (9 target classes) and Square (5,000 queries): AutoAttack's standard attacks",
    "quick": "PGD-20 and APGD-CE only: a smoke test, weaker than AutoAttack",
    "autoattack": "the reference AutoAttack package (standard version)",
}
NORM_TEXT = {"linf": "L∞", "l2": "L2"}
NOT_A_HUB_DATASET = "custom"  # model-index requires dataset.type; without a Hub id it says the data is the user's own


@dataclass(frozen=True)
class CardOptions:
    """What a card adds to its report. ``dataset_id``: the Hub id of the evaluation data (``datasets`` and
    ``dataset.type``); ``dataset_name``: its readable name (default: the data source's last path component);
    ``license``/``license_name``/``license_link`` and ``base_model``/``base_model_relation``: as the Hub reads them."""

    model_name: str | None = None
    repo_id: str | None = None
    dataset_id: str | None = None
    dataset_name: str | None = None
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    base_model: str | None = None
    base_model_relation: str | None = None


def is_harden_report(report: dict[str, Any]) -> bool:
    return "hardened" in report and "input" in report


def evaluated(report: dict[str, Any]) -> dict[str, Any]:
    """The eval report of the model the card describes: the hardened one, or the report itself."""
    return report["hardened"] if is_harden_report(report) else report


def evaluated_data(report: dict[str, Any]) -> DataSource:
    """What the card's numbers were measured on (a harden report's ``data.eval``, an eval report's ``data.source``)."""
    if is_harden_report(report):
        return describe_source((report.get("data") or {}).get("eval"))
    return describe_source((report.get("data") or {}).get("source"))


def check_report(report: dict[str, Any]) -> None:
    """Refuse (UserError naming the field) a report whose numbers a card would print as ``nan%`` or misstate."""
    harden = is_harden_report(report)
    sides = (("input.", report["input"]), ("hardened.", report["hardened"])) if harden else (("", report),)
    for where, result in sides:
        if not isinstance(result, dict):
            raise UserError(
                f"the report's {where.rstrip('.')} is not an evaluation", "pass a report.json written by hardenctl"
            )
        for metric in ("clean_accuracy", "robust_accuracy"):
            checked_accuracy(result, metric, where)
        checked_threat(result, where)


def hub_name(model_path: Any) -> str | None:
    """NAME of a model loaded as ``hf-hub:ORG/NAME[@rev]``."""
    text = str(model_path or "")
    if not text.startswith(("hf-hub:", "hf_hub:")):
        return None
    return text.split(":", 1)[1].partition("@")[0].rpartition("/")[2] or None


def default_name(report: dict[str, Any], options: CardOptions) -> str:
    """The card's model name: ``--name``, the repo's NAME, else what the model is: an eval card names the model it
    evaluated (its Hub NAME or architecture), a harden card the input model with ``-hardened``."""
    if options.model_name:
        return options.model_name
    if options.repo_id:
        return options.repo_id.split("/")[-1]
    model = evaluated(report).get("model") or {}
    if is_harden_report(report):
        source = report["input"].get("model") or {}
        return f"{hub_name(source.get('path')) or source.get('arch') or model.get('arch') or 'model'}-hardened"
    return hub_name(model.get("path")) or str(model.get("arch") or "model")


def threat_model(result: dict[str, Any]) -> dict[str, Any]:
    """What a robust-accuracy number means: without these it is not comparable with any other."""
    interval = (result.get("intervals") or {}).get("robust_accuracy")
    return {
        "norm": result.get("norm"),
        "eps": result.get("eps"),
        "eps_text": format_eps(result.get("eps")),
        "eps_levels": format_eps(result.get("eps"), decimal=False),
        "suite": result.get("suite"),
        "n": result.get("n"),
        "seed": result.get("seed"),
        "interval_95": [round(v, 6) for v in interval] if interval else None,
        "interval_method": result.get("interval_method", "wilson"),
        "data_sha256": result.get("data_sha256"),
    }


def eval_results(report: dict[str, Any], options: CardOptions) -> list[Any]:
    from huggingface_hub import EvalResult

    result = evaluated(report)
    threat = threat_model(result)
    data = evaluated_data(report)
    clean_interval = (result.get("intervals") or {}).get("clean_accuracy")
    common = dict(
        task_type="image-classification",
        task_name="Image Classification",
        dataset_type=options.dataset_id or NOT_A_HUB_DATASET,
        dataset_name=options.dataset_name or data.name,
        dataset_split=data.split,
        metric_type="accuracy",
        verified=False,
    )
    clean_args = {"n": threat["n"], "interval_95": [round(v, 6) for v in clean_interval] if clean_interval else None}
    return [
        EvalResult(
            metric_value=result["clean_accuracy"], metric_name="clean accuracy", metric_args=clean_args, **common
        ),
        EvalResult(
            metric_value=result["robust_accuracy"],
            metric_name=f"robust accuracy ({NORM_TEXT[threat['norm']]} ε={threat['eps_levels']}, "
            f"{clean_text(threat['suite'])} suite)",
            metric_args={k: v for k, v in threat.items() if k not in ("eps_text",)},
            **common,
        ),
    ]


def card_data(report: dict[str, Any], model_name: str, options: CardOptions) -> Any:
    from huggingface_hub import ModelCardData

    tags = list(ROBUSTNESS_TAGS)
    if is_harden_report(report):
        tags.append(clean_text(report["recipe"]))
    relation = options.base_model_relation if options.base_model else None
    lineage = {"base_model_relation": relation} if relation else {}
    return ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        tags=tags,
        license=options.license,
        license_name=options.license_name,
        license_link=options.license_link,
        base_model=options.base_model,
        datasets=[options.dataset_id] if options.dataset_id else None,
        model_name=clean_text(model_name),
        eval_results=eval_results(report, options),
        **lineage,
    )


def _accuracy(result: dict[str, Any], metric: str) -> str:
    """``63.50% (127/200; 56.6–69.9)``: the rate, the count it was divided from and its 95% interval."""
    value = checked_accuracy(result, metric)
    count = correct_of(result.get("counts") or {}, metric.removesuffix("_accuracy"))
    interval = span((result.get("intervals") or {}).get(metric), brackets=False)
    details = "; ".join(part for part in (count, interval) if part)
    return f"{100 * value:.2f}%" + (f" ({markdown_text(details)})" if details else "")


def _what_was_evaluated(report: dict[str, Any], options: CardOptions) -> str:
    """One sentence: which images the numbers come from, and the split the front matter names."""
    data, n = evaluated_data(report), markdown_text(evaluated(report).get("n"))
    name = markdown_text(options.dataset_name or data.name)
    if data.held_out is not None:
        train = markdown_text(describe_source((report.get("data") or {}).get("train")).name)
        return (
            f"Evaluated on {n} images of {name}: of the {data.held_out} images held out from the training data "
            f"{train} (a seeded split that also selected the saved epoch; `validation` in the front matter), "
            "not an independent test set."
        )
    return f"Evaluated on the first {n} images of {name} (the `{data.split}` split in the front matter)."


def _results_table(report: dict[str, Any], options: CardOptions) -> list[str]:
    threat = threat_model(evaluated(report))
    if is_harden_report(report):
        rows = ["| metric | input model | hardened |", "|---|---|---|"]
        for metric, label in (("clean_accuracy", "clean accuracy"), ("robust_accuracy", "robust accuracy")):
            rows.append(f"| {label} | {_accuracy(report['input'], metric)} | {_accuracy(report['hardened'], metric)} |")
    else:
        rows = ["| metric | value |", "|---|---|"]
        for metric, label in (("clean_accuracy", "clean accuracy"), ("robust_accuracy", "robust accuracy")):
            rows.append(f"| {label} | {_accuracy(report, metric)} |")
    suite = str(threat["suite"])
    rows += [
        "",
        f"Threat model: {NORM_TEXT[threat['norm']]}, ε = {threat['eps_text']}; attacks: {code_span(suite)} "
        f"suite ({SUITE_COVERS.get(suite, 'a custom list of attacks')}); n = {markdown_text(threat['n'])} "
        f"images, seed {markdown_text(threat['seed'])}. Percentages are followed by the count and the 95% "
        "Wilson interval. A point counts as robust only if it survives every attack (worst case per image).",
        "",
        _what_was_evaluated(report, options),
    ]
    return rows


def _hardening(report: dict[str, Any]) -> list[str]:
    config = report.get("recipe_config") or {}
    shown = [
        "epochs",
        "batch_size",
        "optimizer",
        "lr",
        "weight_decay",
        "eps",
        "attack",
        "attack_steps",
        "attack_alpha",
        "beta",
        "schedule",
        "eps_warmup",
        "ema",
        "select",
    ]
    data = report.get("data") or {}
    facts = {key: markdown_text(report.get(key)) for key in ("selected_epoch", "last_epoch", "selected_by")}
    lines = [
        "## How it was hardened",
        "",
        f"Recipe {code_span(report['recipe'])}, profile {code_span(report.get('profile'))}, trained on "
        f"{markdown_text(describe_source(data.get('train')).name)} ({markdown_text(data.get('train_n'))} images, "
        f"{markdown_text(data.get('holdout_n'))} held out to select the epoch); the saved weights are epoch "
        f"{facts['selected_epoch']} of {facts['last_epoch']} (selected by held-out {facts['selected_by']} "
        "accuracy).",
        "",
        "| parameter | value |",
        "|---|---|",
    ]
    lines += [f"| `{key}` | {markdown_text(str(config[key]))} |" for key in shown if key in config]
    decisions = report.get("decisions") or []
    if decisions:
        lines += ["", "Resolved automatically: " + "; ".join(markdown_text(d) for d in decisions) + "."]
    lines += [
        "",
        "The complete resolved recipe is `recipe.yaml` in this folder; `report.json` holds every number in this card.",
    ]
    return lines


def fenced(language: str, lines: list[str]) -> list[str]:
    """A fenced code block whose fence is longer than any backtick run inside, so no line of it can close the fence."""
    longest = max((len(run) for run in re.findall(r"`+", "\n".join(lines))), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + language, *lines, fence]


def usage_snippets(report: dict[str, Any], repo_id: str | None) -> tuple[list[str], list[str]]:
    """The Python that loads the model and the shell command that re-evaluates it: the model id is a Python string
    literal (``repr``), every value from the report one shell word (``shlex.quote``)."""
    threat = threat_model(evaluated(report))
    load_id = f"hf-hub:{repo_id}" if repo_id else "local-dir:PATH/TO/THIS/FOLDER"
    python = [
        "import timm",
        "import torch",
        "",
        f"model = timm.create_model({load_id!r}, pretrained=True).eval()",
        "config = timm.data.resolve_model_data_config(model)",
        "transform = timm.data.create_transform(**config, is_training=False)",
        "# logits = model(transform(pil_image).unsqueeze(0))",
    ]
    words = [
        "hardenctl",
        "eval",
        f"hf-hub:{repo_id}" if repo_id else "PATH/TO/THIS/FOLDER",
        "--data",
        "YOUR_TEST_DATA",
        "--eps",
        threat["eps_levels"],
        "--norm",
        threat["norm"],
        "--suite",
        threat["suite"],
        "--n",
        threat["n"],
        "--seed",
        threat["seed"],
    ]
    return python, [" ".join(shlex.quote(clean_text(word)) for word in words)]


def _limits(threat: dict[str, Any]) -> list[str]:
    n, seed = markdown_text(threat["n"]), markdown_text(threat["seed"])
    return [
        "## Limits",
        "",
        f"- **Sample size.** Measured on {n} images: the robust accuracy is known to within its 95% "
        "interval, not to the digit.",
        f"- **One seed, one ε.** One run (seed {seed}) at {threat['norm']} ε = {threat['eps_text']}; robustness "
        "at other radii, other norms, to patches, corruptions or distribution shift was not measured.",
        "- **Attacks are an upper bound.** The suite finds adversarial examples; surviving it is evidence, not a "
        "certificate. An attack adapted to this model (Tramèr et al., 2020) could lower the number.",
        "- **Sanity checks** (gradient masking, bounds, Square vs white-box) are in `report.json`: read them "
        "before trusting a high number.",
    ]


def card_markdown(report: dict[str, Any], model_name: str, options: CardOptions | None = None) -> str:
    """The card's body (below the front matter)."""
    options = options or CardOptions()
    check_report(report)
    result = evaluated(report)
    model = result.get("model") or {}
    threat = threat_model(result)
    size = "×".join(str(v) for v in model.get("input_size") or []) or "?"
    what = (
        f"A timm {code_span(model.get('arch', 'unknown'))} image classifier "
        f"({markdown_text(model.get('num_classes'))} classes, {markdown_text(size)} px input)"
        + (
            f", adversarially hardened with hardenctl's {code_span(report['recipe'])} recipe."
            if is_harden_report(report)
            else ", evaluated for adversarial robustness with hardenctl."
        )
    )
    if options.base_model:
        relation = markdown_text(options.base_model_relation or "declared")
        what += f" Base model: {markdown_text(options.base_model)} ({relation})."
    python, shell = usage_snippets(report, options.repo_id)
    lines = [f"# {markdown_text(model_name)}", "", what, "", "## Robustness", ""] + _results_table(report, options)
    if is_harden_report(report):
        lines += [""] + _hardening(report)
    lines += [
        "",
        "## Use it",
        "",
        *fenced("python", python),
        "",
        "## Re-evaluate it",
        "",
        *fenced("bash", shell),
        "",
        "Use the same data (its sha256 is in `report.json` as `data_sha256`) to reproduce the numbers above exactly.",
        "",
        *_limits(threat),
    ]
    return "\n".join(lines) + "\n"


def model_card(report: dict[str, Any], options: CardOptions | None = None, **fields: Any) -> Any:
    """A ``huggingface_hub.ModelCard`` for this report (``fields``: :class:`CardOptions`' when ``options`` is None).
    Raises UserError for a report whose accuracies, norm or ε are not numbers a card can state.

    Args:
        report: a report's JSON dict (``eval --report`` or ``harden``'s report.json).
        options: the card's names, ids and license (:class:`CardOptions`).
        **fields: CardOptions fields, when ``options`` is None.
    """
    from huggingface_hub import ModelCard

    options = options or CardOptions(**fields)
    check_report(report)
    name = default_name(report, options)
    data = card_data(report, name, options)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_markdown(report, name, options)}")
