"""After training: evaluate the input and the saved model alike, write model, recipe, log and report into --out.

Which epoch ships is :func:`.selection.choose_saved_epoch`'s decision (the overfitting guard's verdicts win over
``select``); the notes here say what really happened, so the report never claims a choice that was not made.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..files import atomic_write, sha256_file
from ..models import ImageClassifier, save_model, write_config_json
from ..models.provenance import read_provenance
from ..recipes import Recipe
from ..report import Report
from ..report.card import model_card
from ..version import __version__
from .checkpoints import TrainResult, write_train_log
from .final_evaluation import FinalEvaluation, ModelReports, ReportEvaluator, exported_epoch, same_evaluation
from .guard import guard_active
from .report import HardenReport
from .runtime import Feedback, HardenOptions
from .selection import SavedEpoch, choose_saved_epoch


@dataclass
class HardenResult:
    """What ``harden`` returns: the report, and where the model and the folder are."""

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
    decisions: list[str] = field(default_factory=list)  # how each `auto` value was decided
    notes: list[str] = field(default_factory=list)  # said before training (e.g. class names that could not travel)


def resolved_recipe_yaml(recipe: Recipe, decisions: list[str] | None = None) -> str:
    """The recipe as it ran: its profile and every value, ``auto`` ones decided; loads again with ``--recipe PATH``.

    Args:
        recipe: the recipe that ran.
        decisions: how each ``auto`` value was decided (comment lines at the top).
    """
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
    """What the report must say about the saved epoch: the guard's events, and every case where it overrode
    ``select``.

    Args:
        saved: the saved epoch and why.
        history: the epoch records.
        no_holdout: whether there was no held-out split (``holdout_fraction`` 0).
        guard_watched: whether the overfitting guard watched the run.
        monitor_n: the images the monitor scored.
    """
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
    evaluation: FinalEvaluation,
    options: HardenOptions,
    feedback: Feedback | None = None,
) -> HardenResult:
    """Evaluate input, saved and (when different) other candidate epoch alike; write every output file.

    Args:
        input_model: the input model as it was before ``--reinit`` and ``recipe.prepare``.
        trained: the model that trained (its weights are replaced by the saved epoch's, then the other one's).
        recipe: the recipe that ran.
        facts: what the training part of the run hands on.
        evaluation: the images and attacks of the before/after report.
        options: the run's options (``out_dir``, ``eval_n``, ``input_report``).
        feedback: progress of the evaluations and a note before each.
    """
    out_dir, history = Path(options.out_dir), facts.result.history
    evaluator = ReportEvaluator(evaluation, options.eval_n, next(trained.parameters()).device, feedback or Feedback())
    selectable = recipe.selectable_epochs()[0]
    saved = choose_saved_epoch(history, recipe.config.select, recipe.selection, selectable, not facts.no_holdout)
    reuse = options.input_report
    if reuse is not None and same_evaluation(reuse, input_model.info, evaluator.evaluated_images(), evaluation.config):
        before = reuse
    else:
        before = evaluator.report_of(input_model, "input model")
    final = exported_epoch(trained, recipe, out_dir, saved.epoch)
    after = evaluator.report_of(final, f"hardened model (epoch {saved.epoch})")
    report_extra = getattr(recipe, "report_extra", None)  # recipe-specific sections, e.g. cost-sensitive's Min-Max
    if report_extra is not None:
        after.extra.update(report_extra(input_model, final))
    reports = ModelReports(before, after, extra=evaluator.extra_reports(final, recipe))
    if saved.other != saved.epoch:
        reports.other_label = other_label(saved, facts.result)
        other = exported_epoch(trained, recipe, out_dir, saved.other)
        reports.other = evaluator.report_of(other, f"{reports.other_label} model")
    model_path = save_hardened(final, recipe, input_model.info, saved, out_dir)
    after.model_sha256, after.model["path"] = sha256_file(model_path), str(model_path)
    notes = report_notes(recipe.config, facts, saved, evaluation, after)
    report = harden_report(recipe, facts, saved, reports, notes, input_model.info, evaluation)
    write_report_files(report, recipe, out_dir)
    return HardenResult(report, model_path, out_dir)


def other_label(saved: SavedEpoch, result: TrainResult) -> str:
    """The report's name for the other candidate epoch: ``last (epoch 5)``, ``best (epoch 3, collapsed)``.

    Args:
        saved: the saved epoch and the other candidate.
        result: the training's outcome (last epoch, records).
    """
    kind = "last" if saved.other == result.last_epoch else "best"
    collapsed = any(h["epoch"] == saved.other and h.get("collapsed") for h in result.history)
    return f"{kind} (epoch {saved.other}{', collapsed' if collapsed else ''})"


def save_hardened(final: ImageClassifier, recipe: Recipe, input_info: Any, saved: SavedEpoch, out_dir: Path) -> Path:
    """Write ``model.safetensors`` (and timm's ``config.json`` where the architecture is unchanged); its path.

    Args:
        final: the saved epoch's exported model.
        recipe: the recipe that ran (recorded in the metadata).
        input_info: the input model's info (its sha256 is recorded).
        saved: the saved epoch and why.
        out_dir: the run's folder.
    """
    config = recipe.config
    metadata = {
        "recipe": recipe.name,
        "profile": config.profile,
        "recipe_config": config.to_dict(),
        "recipe_source": recipe.source,
        "input_checkpoint_sha256": input_info.sha256,
        "epoch": saved.epoch,
        "selected": saved.selected,
        "trained_by": f"hardenctl harden --recipe {recipe.name}",
    }
    model_path = save_model(final, out_dir / "model.safetensors", metadata)
    if not getattr(final, "extra_tensors", None) and not final.info.metadata.get("fsr"):
        write_config_json(final, out_dir)  # --out is a timm model folder where the architecture is unchanged
    return model_path


def report_notes(
    config: Any, facts: RunFacts, saved: SavedEpoch, evaluation: FinalEvaluation, after: Report
) -> list[str]:
    """The report's notes: what was said before training, the saved epoch's story, what the numbers are.

    Args:
        config: the recipe config.
        facts: what the training part handed on (its notes, records, whether there was a held-out split).
        saved: the saved epoch and why.
        evaluation: the before/after evaluation (whether it is the held-out split).
        after: the saved model's report.
    """
    notes = list(facts.notes)
    notes += selection_notes(saved, facts.result.history, facts.no_holdout, guard_active(config), config.monitor_n)
    if evaluation.is_holdout:
        notes.append(
            "the report evaluates the held-out split that also picked the best epoch (pass --eval-data for an "
            "independent set)"
        )
    if after.randomized:
        notes.append(
            f"the hardened model is randomised: its numbers use EOT over {after.eot_samples} draws (clean accuracy is "
            "the mean over draws; a point is robust only if correct on every draw)"
        )
    notes += [
        section["summary"] for section in after.extra.values() if isinstance(section, dict) and "summary" in section
    ]
    return notes


def harden_report(
    recipe: Recipe,
    facts: RunFacts,
    saved: SavedEpoch,
    reports: ModelReports,
    notes: list[str],
    input_info: Any,
    evaluation: FinalEvaluation,
) -> HardenReport:
    """The run's report, as ``report.json`` and ``report.md`` show it.

    Args:
        recipe: the recipe that ran.
        facts: what the training part handed on.
        saved: the saved epoch and why.
        reports: the reports of the input, saved and other models.
        notes: the report's notes (:func:`report_notes`).
        input_info: the input model's info (its path and sha256).
        evaluation: the before/after evaluation (its data's source).
    """
    config, result = recipe.config, facts.result
    selectable, selectable_label = recipe.selectable_epochs()
    return HardenReport(
        recipe=recipe.name,
        recipe_source=str(recipe.source or recipe.name),
        recipe_config=config.to_dict(),
        selected=saved.selected,
        selected_epoch=saved.epoch,
        best_epoch=result.best_epoch,
        last_epoch=result.last_epoch,
        input=reports.input,
        hardened=reports.hardened,
        other=reports.other,
        other_label=reports.other_label,
        history=result.history,
        input_checkpoint={"path": input_info.path, "sha256": input_info.sha256},
        data={**facts.data, "eval": evaluation.data.source, "eval_n": reports.hardened.n},
        runtime=facts.runtime,
        interpretation=recipe.interpretation,
        notes=notes,
        selected_by=recipe.selection,
        extra_evaluations=reports.extra,
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


def write_report_files(report: HardenReport, recipe: Recipe, out_dir: Path) -> None:
    """Write ``recipe.yaml``, ``train_log.jsonl``, ``report.json``, ``report.md`` and the model card ``README.md``.

    The card keeps the input model's license and names it as the base model where the input declares them.

    Args:
        report: the run's report.
        recipe: the recipe as it ran (its resolved values go into ``recipe.yaml``).
        out_dir: the run's folder.
    """
    atomic_write(out_dir / "recipe.yaml", resolved_recipe_yaml(recipe, report.decisions))
    write_train_log(out_dir / "train_log.jsonl", report.history)
    report_json = report.to_json()
    atomic_write(out_dir / "report.json", report_json)
    atomic_write(out_dir / "report.md", report.to_markdown())
    # the model card the Hub shows when the folder is pushed (`hardenctl card` rewrites it with a repo id or dataset)
    inherited = read_provenance(report.input.model.get("path")).card_fields(derived=True)
    atomic_write(out_dir / "README.md", str(model_card(json.loads(report_json), **inherited)))
