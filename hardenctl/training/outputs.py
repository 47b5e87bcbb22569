"""After training: evaluate the input and the saved model alike, write model, recipe, log and report into --out.

Which epoch ships is :func:`.selection.choose_saved_epoch`'s decision (the overfitting guard's verdicts win over
``select``); the notes here say what really happened, so the report never claims a choice that was not made.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from ..data import Dataset
from ..evaluation import EvalConfig, evaluate
from ..files import atomic_write, sha256_file
from ..models import ImageClassifier, save_model, write_config_json
from ..models.provenance import read_provenance
from ..recipes import Recipe
from ..report.card import model_card
from ..version import __version__
from .checkpoints import TrainResult, checkpoint_path, read_checkpoint_state, write_train_log
from .guard import guard_active
from .report import HardenReport
from .runtime import HardenOptions, Log, TrainProgress
from .selection import SavedEpoch, choose_saved_epoch


@dataclass
class HardenResult:
    report: HardenReport
    model_path: Path
    out_dir: Path


@dataclass
class RunFacts:
    """What the training part of a run hands to the writing part."""

    result: TrainResult
    data: dict[str, Any]  # train source, train_n, holdout_n
    runtime: dict[str, Any]  # device, world size, amp, channels_last, train seconds
    no_holdout: bool  # holdout_fraction 0: nothing ranked the epochs
    eval_is_holdout: bool  # no --eval-data: the report evaluates the held-out split that picked the epoch
    decisions: list[str] = field(default_factory=list)  # how each `auto` value was decided
    notes: list[str] = field(default_factory=list)  # said before training (e.g. class names that could not travel)


def same_evaluation(report: Any, info: Any, data: Dataset, config: EvalConfig) -> bool:
    """Whether ``report`` evaluated this model on these samples with these attacks, seed and ε.

    A report does not record APGD steps or Square queries: the caller vouches for those.
    """
    sha = getattr(info, "sha256", None)
    attacks = [repr(a) for a in config.build_attacks(config.eps, report.eot_samples)]
    same_settings = (report.suite, report.attack_list, report.seed, report.eps, report.norm, report.n) == (
        config.suite_name(),
        attacks,
        config.seed,
        config.eps,
        config.norm,
        len(data),
    )
    wanted = {"classes": list(config.protected), "cost": float(config.protected_cost)} if config.protected else None
    has = {k: report.extra["protected"][k] for k in ("classes", "cost")} if "protected" in report.extra else None
    return (
        sha is not None
        and report.model_sha256 == sha
        and report.data_sha256 == data.sha256()
        and same_settings
        and wanted == has
    )


def resolved_recipe_yaml(recipe: Recipe, decisions: list[str] | None = None) -> str:
    """The recipe as it ran: its profile and every value, ``auto`` ones decided; loads again with ``--recipe PATH``."""
    values = recipe.config.to_dict()
    header = (
        f"# resolved recipe written by hardenctl {__version__} (from {recipe.source or recipe.name}, profile "
        f"{values['profile']}, with --profile/--set/--epochs/--batch-size/--lr applied); usable as --recipe PATH\n"
    )
    header += "".join(f"# {line}\n" for line in decisions or [])
    return header + yaml.safe_dump({"recipe": recipe.name, "profile": values.pop("profile"), **values}, sort_keys=False)


def selection_notes(
    saved: SavedEpoch, history: list[dict[str, Any]], no_holdout: bool, guard_watched: bool, monitor_n: int
) -> list[str]:
    """What the report must say about the saved epoch: the guard's events, and every case where it overrode ``select``."""
    notes = [h["guard"] for h in history if h.get("collapsed")]
    if notes and not saved.healthy:
        notes.append(
            "every epoch collapsed: the saved model is a collapsed one; lower eps or lr, or use attack: fgsm-rs or pgd"
        )
    if saved.passed_over is not None:
        why = "holdout_fraction is 0" if no_holdout else "select: last"
        notes.append(
            f"{why} would have saved epoch {saved.passed_over}, which collapsed: the last healthy epoch, "
            f"{saved.epoch}, is saved instead"
        )
    if no_holdout:
        last = "the last healthy epoch" if guard_watched else "the last epoch"
        notes.append(
            f"holdout_fraction is 0: no held-out split, {last} is saved"
            + (
                f"; the overfitting guard read the first {monitor_n} training images instead, with no input-model "
                "reference, so epoch 1 could not be flagged"
                if guard_watched
                else ""
            )
        )
    return notes


def evaluate_and_write(
    input_model: ImageClassifier,
    trained: ImageClassifier,
    recipe: Recipe,
    facts: RunFacts,
    eval_set: Dataset,
    eval_config: EvalConfig,
    options: HardenOptions,
    progress: TrainProgress | None = None,
    log: Log | None = None,
) -> HardenResult:
    """Evaluate input, saved and (when different) other candidate epoch alike; write every output file."""
    out_dir, info, config, result = Path(options.out_dir), input_model.info, recipe.config, facts.result
    device = next(trained.parameters()).device

    def evaluate_model(candidate: nn.Module, label: str):
        if log:
            log(f"evaluating the {label} on {len(eval_set.head(options.eval_n))} images of {eval_set.source}")
        return evaluate(candidate.to(device).eval(), eval_set, eval_config, progress)

    def exported(epoch: int) -> ImageClassifier:
        """The model of a finished epoch as it would ship (``recipe.export``), not yet saved."""
        state = read_checkpoint_state(checkpoint_path(out_dir, epoch), device)
        trained.load_state_dict(
            state["ema"] if "ema" in state else state["model"]
        )  # with `ema` on, the EMA weights ship
        candidate = recipe.export(copy.deepcopy(trained))
        # the info the recipe left on the model (prepare/export may record surgery there), minus the input's identity
        candidate.info = dataclasses.replace(candidate.info, path=None, sha256=None)
        return candidate

    selectable, selectable_label = recipe.selectable_epochs()
    saved = choose_saved_epoch(result.history, config.select, recipe.selection, selectable, not facts.no_holdout)
    reuse = options.input_report
    if reuse is not None and same_evaluation(reuse, info, eval_set.head(options.eval_n), eval_config):
        before = reuse
    else:
        before = evaluate_model(input_model, "input model")
    final = exported(saved.epoch)
    after = evaluate_model(final, f"hardened model (epoch {saved.epoch})")
    report_extra = getattr(
        recipe, "report_extra", None
    )  # recipe-specific sections, e.g. cost-sensitive's Min-Max statistics
    if report_extra is not None:
        after.extra.update(report_extra(input_model, final))
    extra_evaluations = {}  # the saved model evaluated otherwise, e.g. AToP's classifier-only (BPDA) attack
    for label, overrides in getattr(recipe, "extra_evaluations", lambda _: {})(final).items():
        if log:
            log(f"evaluating the hardened model: {label}")
        extra_evaluations[label] = evaluate(
            final.to(device).eval(), eval_set, dataclasses.replace(eval_config, **overrides), progress
        )
    other = other_label = None
    if saved.other != saved.epoch:
        kind = "last" if saved.other == result.last_epoch else "best"
        collapsed = any(h["epoch"] == saved.other and h.get("collapsed") for h in result.history)
        other_label = f"{kind} (epoch {saved.other}{', collapsed' if collapsed else ''})"
        other = evaluate_model(exported(saved.other), f"{other_label} model")

    metadata = {
        "recipe": recipe.name,
        "profile": config.profile,
        "recipe_config": config.to_dict(),
        "recipe_source": recipe.source,
        "input_checkpoint_sha256": info.sha256,
        "epoch": saved.epoch,
        "selected": saved.selected,
        "trained_by": f"hardenctl harden --recipe {recipe.name}",
    }
    model_path = save_model(final, out_dir / "model.safetensors", metadata)
    if not getattr(final, "extra_tensors", None) and not final.info.metadata.get("fsr"):
        write_config_json(final, out_dir)  # --out is a timm model folder where the architecture is unchanged
    after.model_sha256, after.model["path"] = sha256_file(model_path), str(model_path)
    notes = list(facts.notes)
    notes += selection_notes(saved, result.history, facts.no_holdout, guard_active(config), config.monitor_n)
    if facts.eval_is_holdout:
        notes.append(
            "the report evaluates the held-out split that also picked the best epoch (pass --eval-data for an independent set)"
        )
    if after.randomized:
        notes.append(
            f"the hardened model is randomised: its numbers use EOT over {after.eot_samples} draws (clean accuracy is the "
            "mean over draws; a point is robust only if correct on every draw)"
        )
    notes += [
        section["summary"] for section in after.extra.values() if isinstance(section, dict) and "summary" in section
    ]
    report = HardenReport(
        recipe=recipe.name,
        recipe_source=str(recipe.source or recipe.name),
        recipe_config=config.to_dict(),
        selected=saved.selected,
        selected_epoch=saved.epoch,
        best_epoch=result.best_epoch,
        last_epoch=result.last_epoch,
        input=before,
        hardened=after,
        other=other,
        other_label=other_label,
        history=result.history,
        input_checkpoint={"path": info.path, "sha256": info.sha256},
        data={**facts.data, "eval": eval_set.source, "eval_n": after.n},
        runtime=facts.runtime,
        interpretation=recipe.interpretation,
        notes=notes,
        selected_by=recipe.selection,
        extra_evaluations=extra_evaluations,
        selectable_epochs=list(selectable),
        selectable=selectable_label,
        monitor_eot=recipe.monitor_eot(),
        profile=config.profile,
        decisions=list(facts.decisions),
        lr_sweep=dataclasses.asdict(result.lr_sweep) if result.lr_sweep is not None else None,
        collapses=[h["guard"] for h in result.history if h.get("collapsed")],
        planned_epochs=config.epochs,
        ema=config.ema,
        passed_over=saved.passed_over,
        saved_healthy=saved.healthy,
    )
    atomic_write(out_dir / "recipe.yaml", resolved_recipe_yaml(recipe, facts.decisions))
    write_train_log(out_dir / "train_log.jsonl", result.history)
    report_json = report.to_json()
    atomic_write(out_dir / "report.json", report_json)
    atomic_write(out_dir / "report.md", report.to_markdown())
    # the model card the Hub shows when the folder is pushed (`hardenctl card` rewrites it with a repo id or dataset);
    # it keeps the input model's license and names it as the base model where the input declares them
    inherited = read_provenance(before.model.get("path")).card_fields(derived=True)
    atomic_write(out_dir / "README.md", str(model_card(json.loads(report_json), **inherited)))
    return HardenResult(report, model_path, out_dir)
