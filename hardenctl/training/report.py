"""The before/after report of a harden run: input vs hardened model, training curves, the saved epoch."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..report.common import format_eps
from ..report.markdown import code_span, escape_markdown
from ..version import __version__
from .trade import trade, trade_lines

SCHEMA_VERSION = "harden-1.0"


def percent(value: float | None, digits: int = 2) -> str:
    """``0.4567`` → ``45.67%``; None → ``n/a`` (a metric that was not measured).

    Args:
        value: an accuracy as a fraction, or None.
        digits: decimals of the percentage.
    """
    return "n/a" if value is None else f"{value:.{digits}%}"


def delta(value: float | None, reference: float | None) -> str:
    """``+3.1`` points of ``value`` over ``reference`` (accuracies as fractions); empty when either is missing.

    Args:
        value: the accuracy.
        reference: the accuracy it is compared with.
    """
    return "" if value is None or reference is None else f"{100 * (value - reference):+.1f}"


def versus_input(record: dict[str, Any]) -> str:
    """``(input 71.0%/0.0%: -3.2/+25.0 points)``: the epoch's held-out clean/robust accuracy against the input
    model's.

    Args:
        record: an epoch's record.
    """
    clean, robust = record.get("input_holdout_clean_accuracy"), record.get("input_holdout_robust_accuracy")
    if clean is None:
        return ""
    return (
        f" (input {percent(clean, 1)}/{percent(robust, 1)}: {delta(record['holdout_clean_accuracy'], clean)}/"
        f"{delta(record['holdout_robust_accuracy'], robust)} points)"
    )


def describe_epoch(record: dict[str, Any]) -> str:
    """One line of an epoch's numbers, with the input model's held-out accuracy beside them (progress lines and
    logs).

    Args:
        record: an epoch's record.
    """
    fgsm = record.get("guard_fgsm_accuracy")
    train = f"{percent(record['train_clean_accuracy'], 1)}/{percent(record['train_robust_accuracy'], 1)}"
    held_out = f"{percent(record['holdout_clean_accuracy'], 1)}/{percent(record['holdout_robust_accuracy'], 1)}"
    return (
        f"loss {record['loss']:.4f}, lr {record['lr']:.3g}, "
        f"train clean/robust {train}, "
        f"held-out clean/robust {held_out}"
        f"{versus_input(record)}"
        + (f", FGSM {percent(fgsm, 1)}" if fgsm is not None else "")
        + (" [COLLAPSED]" if record.get("collapsed") else "")
        + f", {record['seconds']:.1f} s"
    )


@dataclass
class HardenReport:
    """Input model vs hardened model (same attacks, seed and samples), plus the training curves."""

    recipe: str
    recipe_source: str
    recipe_config: dict[str, Any]
    selected: str  # "best" or "last"
    selected_epoch: int
    best_epoch: int
    last_epoch: int
    input: Any  # Report of the input model
    hardened: Any  # Report of the model in model.safetensors
    history: list[dict[str, Any]]
    input_checkpoint: dict[str, Any]
    data: dict[str, Any]
    runtime: dict[str, Any]
    other: Any = None  # Report of the other candidate (last when best is saved, or best) when it differs
    other_label: str | None = None
    interpretation: str | None = None
    notes: list[str] = field(default_factory=list)
    selected_by: str = "robust"  # which held-out accuracy picked the best epoch (Recipe.selection)
    # the epochs the best was chosen among (Recipe.selectable_epochs)
    selectable_epochs: list[int] = field(default_factory=list)
    selectable: str = "every epoch"  # what those epochs are, in words
    monitor_eot: int = 1  # EOT draws of the per-epoch monitor that scored them (Recipe.monitor_eot)
    # label -> Report of the saved model evaluated otherwise (e.g. AToP's BPDA)
    extra_evaluations: dict[str, Any] = field(default_factory=dict)
    profile: str = "custom"  # the recipe profile that ran: finetune, paper, or custom (a flat recipe file)
    decisions: list[str] = field(default_factory=list)  # how each `auto` value was decided (optimizer, lr, decay)
    # lr: auto: the candidates, their held-out scores, the choice and why (lr_sweep.py)
    lr_sweep: dict[str, Any] | None = None
    collapses: list[str] = field(default_factory=list)  # catastrophic-overfitting guard events, one line each
    planned_epochs: int | None = None  # the recipe's epochs (more than last_epoch when the guard stopped the run)
    ema: float = 0.0  # EMA decay of the saved weights (0: the raw weights)
    passed_over: int | None = None  # the collapsed epoch `select` would have saved, when the guard overrode it
    saved_healthy: bool = True  # False only when every epoch collapsed and a collapsed one had to ship
    schema_version: str = SCHEMA_VERSION

    def headline(self) -> str:
        """One line, led by what the recipe aims at: clean accuracy (``selected_by: clean``) or robust accuracy."""
        clean = (
            f"clean accuracy {self.input.clean_accuracy:.2%} → {self.hardened.clean_accuracy:.2%} "
            f"({100 * (self.hardened.clean_accuracy - self.input.clean_accuracy):+.2f} points)"
        )
        robust = (
            f"robust accuracy {self.input.robust_accuracy:.2%} → {self.hardened.robust_accuracy:.2%} "
            f"({100 * (self.hardened.robust_accuracy - self.input.robust_accuracy):+.2f} points)"
        )
        return f"{clean}; {robust}" if self.selected_by == "clean" else f"{robust}; {clean}"

    def trade(self) -> dict[str, Any]:
        """What the run bought and cost (:mod:`.trade`): before/after with intervals, robust points per clean point,
        and whether robust accuracy was still rising at the end."""
        scored = min(int(self.recipe_config.get("monitor_n", 0) or 0), int(self.data.get("holdout_n", 0) or 0))
        return trade(self.input, self.hardened, self.history, scored, self.planned_epochs or self.last_epoch)

    def trade_lines(self) -> list[str]:
        """The trade in words, one statement per line (the report's first lines)."""
        return trade_lines(self.trade())

    def selection_label(self) -> str:
        """How the best epoch was scored and, when not every epoch competed, among which (e.g. AToP's fine-tuning
        epochs)."""
        what = (
            "clean accuracy"
            if self.selected_by == "clean"
            else f"PGD-{self.recipe_config['monitor_steps']} robust accuracy"
        )
        if self.monitor_eot > 1:
            what += f" with EOT over {self.monitor_eot} draws"
        epochs = self.selectable_epochs
        if epochs and epochs != list(range(1, self.last_epoch + 1)):
            span = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}–{epochs[-1]}"
            what += f", among {span} ({self.selectable})"
        return what

    def saved_label(self) -> str:
        """``best``/``last``, ``last healthy`` when the guard passed over a collapsed last epoch, ``collapsed`` when
        every epoch collapsed."""
        if not self.saved_healthy:
            return f"{self.selected} (collapsed: no healthy epoch)"
        return "last healthy" if self.passed_over is not None else self.selected

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; each evaluation through its own ``Report.to_dict`` (per-sample results and
        pictures stay out, intervals go in)."""
        reports = {"input": self.input, "hardened": self.hardened, "other": self.other}
        data = asdict(dataclasses.replace(self, input=None, hardened=None, other=None, extra_evaluations={}))
        data.update({key: report.to_dict() if report is not None else None for key, report in reports.items()})
        data["extra_evaluations"] = {label: report.to_dict() for label, report in self.extra_evaluations.items()}
        data["trade"] = self.trade()
        return data

    def to_json(self) -> str:
        """``report.json``'s text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def columns(self) -> list[tuple[str, Any]]:
        """(label, Report) of every evaluated model, in the order the tables show them."""
        cols = [
            ("input model", self.input),
            (f"hardened ({self.selected}, epoch {self.selected_epoch})", self.hardened),
        ]
        if self.other is not None:
            cols.append((self.other_label or "other", self.other))
        return cols + list(self.extra_evaluations.items())

    def comparison_rows(self) -> list[tuple[str, list[str]]]:
        """(metric, one value per column): clean, after each attack, worst case, checks passed."""
        cols = [report for _, report in self.columns()]
        rows = [("clean", [f"{r.clean_accuracy:.2%}" for r in cols])]
        for name in cols[0].attacks:
            rows.append((f"after {name}", [f"{r.attacks.get(name, float('nan')):.2%}" for r in cols]))
        rows.append(("robust (worst case)", [f"{r.robust_accuracy:.2%}" for r in cols]))
        rows.append(("checks passed", [f"{len(r.checks) - len(r.failed_checks)}/{len(r.checks)}" for r in cols]))
        return rows

    def to_markdown(self) -> str:
        """``report.md``: the headline and trade, what ran and what was saved, before and after, the training curves,
        the checks, the resolved recipe."""
        lines = self._summary_lines() + self._comparison_lines() + self._curve_lines()
        lines += ["", "## Checks", ""]
        for label, report in self.columns():
            failed = report.failed_checks
            lines.append(
                f"- {label}: "
                + ("all passed" if not failed else "FAILED " + "; ".join(f"{c.name} ({c.detail})" for c in failed))
            )
        lines += ["", "## Recipe configuration (resolved)", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.recipe_config.items()]
        lines += [
            "",
            f"Training steps: {self.runtime['train_seconds']:.1f} s (per-epoch monitoring excluded) on "
            f"{self.runtime['device']} × {self.runtime['world_size']} process(es) "
            f"(amp {self.runtime['amp']}, channels_last {self.runtime['channels_last']}); hardenctl {__version__}.",
            "",
        ]
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def _summary_lines(self) -> list[str]:
        """The headline, the trade, what trained on what, which epoch was saved, the decisions."""
        headline = self.headline()
        stopped = (
            f"; training stopped after epoch {self.last_epoch} of {self.planned_epochs}"
            if self.planned_epochs and self.last_epoch < self.planned_epochs
            else ""
        )
        lines = [
            "# hardenctl harden report",
            "",
            f"**{headline[0].upper()}{headline[1:]}**",
            "",
            *[f"- {line}" for line in self.trade_lines()],
            "",
            f"Recipe {code_span(self.recipe)}, profile `{self.profile}` ({escape_markdown(self.recipe_source)}) "
            f"trained on {code_span(self.data['train'])} "
            f"({self.data['train_n']} images; {self.data['holdout_n']} held out to pick the epoch), "
            f"starting from {code_span(self.input_checkpoint['path'])} (sha256 `{self.input_checkpoint['sha256']}`).",
            "",
            f"`model.safetensors` holds the **{self.saved_label()}** epoch: epoch {self.selected_epoch} of "
            f"{self.last_epoch} (best by held-out {self.selection_label()}: epoch {self.best_epoch}; "
            f"last: epoch {self.last_epoch})"
            + stopped
            + (f"; the weights are the EMA (decay {self.ema:g})" if self.ema else "")
            + ".",
            "",
        ]
        if self.decisions:
            lines += ["Resolved: " + "; ".join(escape_markdown(d) for d in self.decisions) + ".", ""]
        if self.interpretation:
            lines += [f"Interpretation (our design, not the paper's): {self.interpretation}", ""]
        return lines

    def _comparison_lines(self) -> list[str]:
        """``## Before and after``: every evaluated model's accuracies side by side."""
        ev = self.hardened
        lines = [
            "## Before and after",
            "",
            f"Same attacks (suite `{ev.suite}`: {', '.join(ev.attack_list)}), seed {ev.seed}, the same n = {ev.n} "
            f"samples of {code_span(ev.data.get('source'))}, {ev.norm} ε = {format_eps(ev.eps)}.",
            "",
            "| metric | " + " | ".join(label for label, _ in self.columns()) + " |",
            "|---" * (len(self.columns()) + 1) + "|",
        ]
        return lines + [f"| {name} | " + " | ".join(values) + " |" for name, values in self.comparison_rows()]

    def _curve_lines(self) -> list[str]:
        """``## Training curves``: one row per epoch beside the input model's row 0."""
        eot = (
            f", EOT over {self.monitor_eot} draws: gradients averaged, clean accuracy the mean over draws, robust only "
            "if correct on every draw"
            if self.monitor_eot > 1
            else ""
        )
        guard_watched = any("guard_fgsm_accuracy" in h for h in self.history)
        lines = [
            "",
            "## Training curves",
            "",
            "Per epoch: mean training loss, learning rate and training ε at the epoch's end, clean and PGD robust "
            f"accuracy (eval mode, ε = {self.recipe_config['eps']:.5g}{eot}) on up to "
            f"{self.recipe_config['monitor_n']} training and held-out images, and the held-out change against the "
            "input model (row 0, measured by the same monitor before epoch 1): the cost of hardening in clean accuracy "
            "and its gain in robust accuracy, in points"
            + (
                "; FGSM: held-out accuracy under FGSM, read by the catastrophic-overfitting guard"
                if guard_watched
                else ""
            )
            + (f"; the EMA weights (decay {self.ema:g}) are scored" if self.ema else "")
            + ".",
            "",
            "| epoch | loss | lr | train ε | train clean | train robust | held-out clean | held-out robust "
            "| Δ clean vs input | Δ robust vs input |" + (" FGSM |" if guard_watched else "") + " seconds | |",
            "|---" * (12 + guard_watched) + "|",
        ]
        first = self.history[0] if self.history else {}
        input_clean, input_robust = (
            first.get("input_holdout_clean_accuracy"),
            first.get("input_holdout_robust_accuracy"),
        )
        lines.append(
            f"| 0 (input) | | | | | | {percent(input_clean)} | {percent(input_robust)} | | |"
            + (" |" if guard_watched else "")
            + " | |"
        )
        return lines + [self._curve_row(h, guard_watched) for h in self.history]

    def _curve_row(self, h: dict[str, Any], guard_watched: bool) -> str:
        """One epoch's row of the training curves, marked best/last/saved/collapsed."""
        marks = (
            ("best", h["epoch"] == self.best_epoch),
            ("last", h["epoch"] == self.last_epoch),
            ("**saved**", h["epoch"] == self.selected_epoch),
            ("**collapsed**", bool(h.get("collapsed"))),
        )
        mark = " ".join(m for m, hit in marks if hit)
        train_eps = h.get("train_eps")
        return (
            f"| {h['epoch']} | {h['loss']:.4f} | {h['lr']:.4g} | {'' if train_eps is None else f'{train_eps:.4g}'} | "
            f"{percent(h['train_clean_accuracy'])} | {percent(h['train_robust_accuracy'])} | "
            f"{percent(h['holdout_clean_accuracy'])} | {percent(h['holdout_robust_accuracy'])} | "
            f"{delta(h['holdout_clean_accuracy'], h.get('input_holdout_clean_accuracy'))} | "
            f"{delta(h['holdout_robust_accuracy'], h.get('input_holdout_robust_accuracy'))} |"
            + (f" {percent(h.get('guard_fgsm_accuracy'))} |" if guard_watched else "")
            + f" {h['seconds']:.1f} | {mark} |"
        )

    def rich_table(self):
        """The before/after table for the terminal (names from data escaped for rich's markup)."""
        from rich.markup import escape
        from rich.table import Table

        ev = self.hardened
        source = Path(str((ev.data or {}).get("source", ""))).name or "the evaluation data"
        table = Table(title=escape(f"{self.recipe} · {source}, n={ev.n} · {ev.norm} ε={ev.eps:.4g} · suite {ev.suite}"))
        table.add_column("metric")
        for label, _ in self.columns():
            table.add_column(label, justify="right")
        for name, values in self.comparison_rows():
            table.add_row(name, *values)
        return table
