"""One ``hardenctl eval`` as the API runs it: the request (every option object, checked as a whole when made) and
its run (baseline refused early, the model and data loaded, the evaluation, the gates)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from ..errors import UserError
from ..evaluation import EvalConfig, Progress
from ..gates import DEFAULT_ALPHA, Baseline, GateOptions, gate, load_baseline, sequential_plan
from ..options import DataOptions, EvalRun, ModelOptions
from ..report import Report
from .evaluation import evaluate, load_data, load_model

__all__ = ["EvalOutcome", "EvalRequest", "run_evaluation"]


@dataclass(frozen=True)
class EvalRequest:
    """Everything one evaluation is asked, built once by the caller; what only makes sense together is checked here.

    Args:
        model: the model to evaluate (a path or spec).
        data: the data spec.
        config: what to measure (:class:`~hardenctl.evaluation.EvalConfig`).
        run: how it runs (:class:`~hardenctl.options.EvalRun`).
        gates: the gates (:class:`~hardenctl.gates.GateOptions`).
        loading: how to read the model (:class:`~hardenctl.options.ModelOptions`).
        reading: how to read the data (:class:`~hardenctl.options.DataOptions`).
        protected: protected classes, ids or the data's class names (resolved against the data).
        protected_cost: the cost of misclassifying a protected class.
        sequential: decide the gates round by round and stop once they are (``alpha``: their error).
        alpha: the chance, at most, that a sequential run's early verdict differs from the full run's.
        fixed_mask: an AToP composite draws one noise and mask from the seed for every image (for debugging).
    """

    model: str
    data: str
    config: EvalConfig = field(default_factory=EvalConfig)
    run: EvalRun = field(default_factory=EvalRun)
    gates: GateOptions = field(default_factory=GateOptions)
    loading: ModelOptions = field(default_factory=ModelOptions)
    reading: DataOptions = field(default_factory=DataOptions)
    protected: tuple[str, ...] | None = None
    protected_cost: float = 10.0
    sequential: bool = False
    alpha: float | None = None
    fixed_mask: bool = False

    def __post_init__(self) -> None:
        if self.gates.max_drop is not None and self.gates.baseline is None:
            raise UserError("--max-drop needs --baseline", "pass --baseline old_report.json")
        if self.gates.baseline_samples is not None and self.gates.baseline is None:
            raise UserError("--baseline-samples needs --baseline", "pass --baseline old_report.json too")
        if self.protected is not None and not self.protected:
            raise UserError("--protected names no class", "pass ids or class names, e.g. --protected 3,5")
        if self.gates.min_protected_robust_acc is not None and self.protected is None:
            raise UserError("--min-protected-robust-acc needs --protected", "pass e.g. --protected 3,5")
        if self.protected_cost < 0:
            raise UserError(
                f"--protected-cost must be >= 0, got {self.protected_cost}", "pass e.g. --protected-cost 10"
            )
        if self.alpha is not None and not self.sequential:
            raise UserError(
                "--alpha is the error allowed to --sequential's early verdicts",
                "pass --sequential too, or drop --alpha",
            )


@dataclass
class EvalOutcome:
    """The gated report, the baseline it was compared with, and an internal error met while gating (the report is
    still written before that error ends the command)."""

    report: Report
    baseline: Baseline | None = None
    gate_error: Exception | None = None


def run_evaluation(
    request: EvalRequest, progress: Progress | None = None, log: Callable[[str], None] | None = None
) -> EvalOutcome:
    """Evaluate and gate as ``hardenctl eval`` does; everything a user can get wrong is refused before the first
    attack (a baseline of other settings before the model is loaded, one of other data before any image is attacked).

    Args:
        request: the evaluation (:class:`EvalRequest`).
        progress: ``(stage, done, total, metrics=None)``.
        log: one line at a time, for notes.
    """
    config = request.config
    names = [a.name for a in config.build_attacks(config.eps, 1)]  # a bad suite or attack name before any loading
    baseline = _baseline(request, names, log)
    if request.sequential:  # refused now: no gate to decide, a bad alpha, an --eps-sweep
        alpha = DEFAULT_ALPHA if request.alpha is None else request.alpha
        config = dataclasses.replace(config, sequential=sequential_plan(request.gates, baseline, alpha))
    model = load_model(request.model, request.loading)
    if request.fixed_mask:
        if not hasattr(model, "set_fixed_mask"):
            raise UserError(
                "--fixed-mask applies only to a model with a random transform (an AToP composite)", "drop --fixed-mask"
            )
        model.set_fixed_mask(config.seed)
    dataset = load_data(request.data, model, n=config.n, options=request.reading)
    if baseline is not None:  # refuse before spending attack time, not after
        baseline.check(n=len(dataset), data_sha256=dataset.sha256())
    if request.protected is not None:
        from ..protected import resolve_protected

        protected = resolve_protected(list(request.protected), dataset.class_names)
        config = dataclasses.replace(config, protected=protected, protected_cost=request.protected_cost)
    report = evaluate(model, dataset, config, run=request.run, progress=progress, log=log)
    outcome = EvalOutcome(report, baseline)
    try:
        gate(report, request.gates, baseline)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a crash while gating: the computed report is still written
        outcome.gate_error = exc
    return outcome


def _baseline(request: EvalRequest, names: list[str], log: Callable[[str], None] | None) -> Baseline | None:
    """The ``--baseline`` report, refused now when made with another ε, norm, suite or attacks."""
    gates, config = request.gates, request.config
    if gates.baseline is None:
        return None
    baseline = load_baseline(gates.baseline, gates.baseline_samples)
    baseline.check(eps=config.eps, norm=config.norm, suite=config.suite_name(), attacks=names)
    if baseline.samples is None and log is not None:
        log(
            f"no per-sample results for the baseline (looked for {', '.join(map(str, baseline.looked_for))}): "
            "the max_drop gates compare rates; pass --baseline-samples for a paired comparison"
        )
    return baseline
