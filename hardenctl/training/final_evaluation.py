"""The before/after evaluation: the input model, the saved epoch and any other candidate attacked alike — the same
images, attacks, seed and ε — so their numbers compare; an earlier report of the input is reused only when nothing
that changes its numbers differs.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import Dataset
from ..evaluation import EvalConfig, evaluate
from ..models import ImageClassifier
from ..recipes import Recipe
from ..report import Report
from .checkpoints import checkpoint_path, read_checkpoint_state
from .runtime import Feedback


@dataclass(frozen=True)
class FinalEvaluation:
    """The before/after evaluation: the images and attack settings both models get, and whether those images are the
    held-out split that also picked the epoch (no ``--eval-data``)."""

    data: Dataset
    config: EvalConfig
    is_holdout: bool = False


def same_evaluation(report: Any, info: Any, data: Dataset, config: EvalConfig) -> bool:
    """Whether ``report`` evaluated this model on these samples with these attacks, seed and ε.

    Why: an earlier report of the input model (``input_report``) saves its evaluation, but only when nothing that
    changes the numbers differs. Its ``attack_list`` names every attack setting (steps, queries, restarts), so a
    report made with other settings, or by a version that recorded only eps and norm, is not reused.

    Args:
        report: the earlier report.
        info: the input model's info (its sha256).
        data: the images this run evaluates.
        config: this run's evaluation settings.
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


@dataclass(frozen=True)
class ReportEvaluator:
    """Evaluates every model of the report alike: the same images and attacks, on the training device, each
    announced in the log."""

    evaluation: FinalEvaluation
    eval_n: int | None  # images evaluated (the report's n)
    device: torch.device
    feedback: Feedback

    def evaluated_images(self) -> Dataset:
        """The images each model is evaluated on (the first ``eval_n``)."""
        return self.evaluation.data.head(self.eval_n)

    def report_of(self, model: nn.Module, label: str) -> Report:
        """The report of ``model``, noted as ``label`` first.

        Args:
            model: the model (moved to the device, eval mode).
            label: what it is, for the note (``input model``, ``hardened model (epoch 3)``).
        """
        data = self.evaluation.data
        self.feedback.note(f"evaluating the {label} on {len(self.evaluated_images())} images of {data.source}")
        return evaluate(model.to(self.device).eval(), data, self.evaluation.config, self.feedback.progress)

    def extra_reports(self, model: nn.Module, recipe: Recipe) -> dict[str, Report]:
        """The saved model evaluated as the recipe also asks, e.g. AToP's classifier-only (BPDA) attack, by label.

        Args:
            model: the saved model.
            recipe: the recipe (its ``extra_evaluations``: label → EvalConfig changes).
        """
        reports = {}
        for label, overrides in getattr(recipe, "extra_evaluations", lambda _: {})(model).items():
            self.feedback.note(f"evaluating the hardened model: {label}")
            config = dataclasses.replace(self.evaluation.config, **overrides)
            reports[label] = evaluate(
                model.to(self.device).eval(), self.evaluation.data, config, self.feedback.progress
            )
        return reports


@dataclass
class ModelReports:
    """The reports the run compares: input model, saved model, the other candidate epoch (when it differs) and the saved
    model evaluated otherwise (by label)."""

    input: Report
    hardened: Report
    other: Report | None = None
    other_label: str | None = None
    extra: dict[str, Report] = field(default_factory=dict)


def exported_epoch(trained: ImageClassifier, recipe: Recipe, out_dir: Path, epoch: int) -> ImageClassifier:
    """The model of a finished epoch as it would ship (``recipe.export``), not yet saved.

    Args:
        trained: the model that trained (takes the epoch's weights: the EMA ones when ``ema`` is on).
        recipe: the recipe (its ``export``).
        out_dir: the run's folder (its checkpoints).
        epoch: the epoch (1-based).
    """
    state = read_checkpoint_state(checkpoint_path(out_dir, epoch), next(trained.parameters()).device)
    trained.load_state_dict(state["ema"] if "ema" in state else state["model"])  # with `ema` on, the EMA weights ship
    candidate = recipe.export(copy.deepcopy(trained))
    # the info the recipe left on the model (prepare/export may record surgery there), minus the input's identity
    candidate.info = dataclasses.replace(candidate.info, path=None, sha256=None)
    return candidate
