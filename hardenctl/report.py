"""The evaluation report: one dataclass, rendered as JSON (versioned), Markdown, JUnit and a console table.

JSON is the contract CI gates read, so its keys only ever get added to; a change that
removes or renames one bumps :data:`SCHEMA_VERSION`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from .errors import UserError
from .files import atomic_path, atomic_write

SCHEMA_VERSION = "1.0"


@dataclass
class Check:
    """A sanity check against false robustness; a failure is evidence of gradient masking or a bug."""

    name: str
    passed: bool
    detail: str
    value: float | None = None  # the measured statistic the rule compares ...
    limit: float | None = None  # ... with this limit (see hardenctl.evaluate), so benchmarks can tabulate them


@dataclass
class Gate:
    """A release gate: ``value`` compared with ``threshold``.

    ``basis`` says what ``value`` is: ``point`` (the measured accuracy), ``lower95`` (the lower bound of its 95%
    Wilson interval, ``--gate-on lower``), ``paired`` (a drop measured sample by sample against the baseline's
    per-sample results), ``rates`` (a drop measured between the two reports' rates); None for ``sanity_checks``.
    """

    name: str
    threshold: float
    value: float
    passed: bool
    basis: str | None = None


@dataclass
class SampleResults:
    """Per-sample results in evaluation order: what ``--samples`` writes, shards merge and paired gates compare.

    Rates are derived from these, never the other way round: shards merge by index, gates compare pairs.
    ``broken_by`` is the attack that broke the sample, None when it stayed robust or was wrong before any attack.
    """

    index: list[int]
    source_id: list[str]  # the file path for folders, "row N" for arrays
    label: list[int]
    clean_prediction: list[int]
    clean_correct: list[float]  # fraction of draws correct (0 or 1 for deterministic models)
    robust: list[bool]
    broken_by: list[str | None]
    adversarial_prediction: list[int]  # the prediction at the worst-case point (the clean one when never broken)

    def __len__(self) -> int:
        return len(self.index)

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.__dataclass_fields__, values)) for values in zip(*(getattr(self, f) for f in self.__dataclass_fields__))]


@dataclass
class Report:
    schema_version: str
    clean_accuracy: float
    robust_accuracy: float
    attacks: dict[str, float]  # attack -> accuracy after it (cumulative worst case, in run order)
    per_class: dict[str, dict[str, Any]]
    n: int
    eps: float
    norm: str
    suite: str
    seed: int
    model_sha256: str | None
    data_sha256: str
    versions: dict[str, str]
    normalization: dict[str, Any]
    seconds: float
    checks: list[Check] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    attack_list: list[str] = field(default_factory=list)
    randomized: bool = False
    eot_samples: int = 1
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    eps_sweep: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # recipe-specific sections
    accepted_checks: list[str] = field(default_factory=list)  # failed checks accepted by --no-strict / --allow-check
    samples: SampleResults | None = field(default=None, repr=False, compare=False)  # per sample; not in the JSON report
    pictures: Any = field(default=None, repr=False, compare=False)  # a hardenctl.pictures.Gallery; drawn, not in the JSON
    gate_on: str = "point"  # what --min-*-acc gates compared: "point" estimates or "lower" 95% bounds
    samples_file: str | None = None  # where --samples wrote this report's per-sample results (relative to the report)
    # what the rates were divided from: {"n", "clean_correct", "robust_correct", "attacks": {name: correct after it}};
    # clean_correct is a sum of per-sample fractions for a randomised model (mean over EOT draws), an int otherwise
    counts: dict[str, Any] = field(default_factory=dict)

    # -- 95% intervals (derived from the accuracies and n, so they can never disagree with them) ---------------
    def interval(self, metric: str) -> tuple[float, float] | None:
        """95% Wilson interval of ``clean_accuracy``, ``robust_accuracy``, ``protected_robust_accuracy``,
        ``protected_clean_accuracy`` or an attack's accuracy (its name); None when there is no such accuracy."""
        from .stats import wilson_interval

        if metric in ("clean_accuracy", "robust_accuracy"):
            value, n = getattr(self, metric), self.n
        elif metric.startswith("protected_"):
            section = self.extra.get("protected") or {}
            value, n = section.get(metric[len("protected_"):]), section.get("n", 0)
        else:
            value, n = self.attacks.get(metric), self.n
        return None if value is None else wilson_interval(min(1.0, max(0.0, float(value))), int(n))

    def intervals(self) -> dict[str, Any]:
        return {"clean_accuracy": _pair(self.interval("clean_accuracy")), "robust_accuracy": _pair(self.interval("robust_accuracy")),
                "attacks": {name: _pair(self.interval(name)) for name in self.attacks}}

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        # per-sample results go to their own file (--samples) and images into files: left out before asdict,
        # which would otherwise deep-copy every row and picture only to drop them
        data = asdict(dataclasses.replace(self, samples=None, pictures=None))
        data.pop("samples")
        data.pop("pictures")
        data["interval_method"], data["intervals"] = "wilson", self.intervals()  # 95%; see hardenctl.evaluate.stats
        for entry in data["per_class"].values():
            entry["clean_interval"], entry["robust_interval"] = (_class_interval(entry, key) for key in ("clean_accuracy", "robust_accuracy"))
        protected = data["extra"].get("protected")
        if isinstance(protected, dict) and "n" in protected:
            protected["clean_interval"], protected["robust_interval"] = (
                _pair(self.interval(f"protected_{key}")) for key in ("clean_accuracy", "robust_accuracy"))
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def to_markdown(self, plot_name: str | None = None, pictures_name: str | None = None) -> str:
        lines = [
            "# hardenctl robustness report",
            "",
            f"Model `{self.model.get('arch')}` ({self.model.get('path') or 'in memory'}), data `{self.data.get('source')}`, "
            f"n = {self.n}, {self.norm} ε = {self.eps:.5g}, suite `{self.suite}`, seed {self.seed}.",
            "",
            "| metric | accuracy (95% interval) |",
            "|---|---|",
            f"| clean | {self.clean_accuracy:.2%} {_span(self.interval('clean_accuracy'))} |",
        ]
        lines += [f"| after {name} | {acc:.2%} {_span(self.interval(name))} |" for name, acc in self.attacks.items()]
        lines += [f"| **robust (worst case)** | **{self.robust_accuracy:.2%}** {_span(self.interval('robust_accuracy'))} |", "",
                  f"Intervals: 95% Wilson score over n = {self.n}"
                  + (" (clean accuracy of a randomised model: its mean over draws taken as the proportion)." if self.randomized else "."), ""]
        if self.randomized:
            lines += [f"The model is randomised: gradients are averaged over {self.eot_samples} EOT draws and a point "
                      f"counts as robust only if it is correct on all {self.eot_samples} re-scoring draws.", ""]
        lines += [f"Note: {section['summary']}." for section in self.extra.values() if isinstance(section, dict) and "summary" in section]
        if lines[-1].startswith("Note: "):
            lines.append("")
        if self.eps_sweep:
            lines += ["## Accuracy vs ε", "", "| ε | robust accuracy |", "|---|---|"]
            lines += [f"| {s['eps']:.5g} | {s['robust_accuracy']:.2%} |" for s in self.eps_sweep]
            if plot_name:
                lines += ["", f"![accuracy vs eps]({plot_name})"]
            lines.append("")
        if pictures_name:
            lines += ["## Adversarial examples", "", f"![clean, adversarial and amplified perturbation]({pictures_name})", ""]
        lines += ["## Checks", "", "| check | result | detail |", "|---|---|---|"]
        lines += [f"| {c.name} | {'pass' if c.passed else ('FAIL (accepted)' if c.name in self.accepted_checks else '**FAIL**')} "
                  f"| {c.detail} |" for c in self.checks]
        if self.accepted_checks:
            lines += ["", f"Failed checks accepted knowingly (--allow-check / --no-strict): {', '.join(self.accepted_checks)}."]
        if self.gates:
            lines += ["", "## Gates", "", "| gate | threshold | value | compared | result |", "|---|---|---|---|---|"]
            lines += [f"| {g.name} | {g.threshold:.4f} | {g.value:.4f} | {GATE_BASIS.get(g.basis, g.basis or '')} | "
                      f"{'pass' if g.passed else '**FAIL**'} |" for g in self.gates]
        lines += _paired_markdown(self.extra.get("paired"))
        protected = self.extra.get("protected")
        if protected:
            clean, robust = (("n/a" if v is None else f"{v:.2%} {_span(self.interval('protected_' + key))}")
                             for key, v in (("clean_accuracy", protected["clean_accuracy"]), ("robust_accuracy", protected["robust_accuracy"])))
            lines += ["", "## Protected classes", "",
                      (f"Classes {', '.join(map(str, protected['classes']))} (cost {protected['cost']:g}), n = {protected['n']}: "
                       f"clean {clean}, robust {robust}; cost-weighted robust error {protected['cost_weighted_robust_error']:.4f}.")]
        lines += ["", "## Per class", "", "| class | n | clean | robust |", "|---|---|---|---|"]
        lines += [f"| {k} {v['name']} | {v['n']} | {v['clean_accuracy']:.2%} {_span(_class_interval(v, 'clean_accuracy'))} "
                  f"| {v['robust_accuracy']:.2%} {_span(_class_interval(v, 'robust_accuracy'))} |" for k, v in self.per_class.items()]
        lines += ["", f"Normalisation from {self.normalization.get('source')}; model sha256 `{self.model_sha256}`; "
                      f"data sha256 `{self.data_sha256}`; {self.seconds:.1f} s on {self.device}; "
                      + ", ".join(f"{k} {v}" for k, v in self.versions.items()) + ".", ""]
        return "\n".join(lines)

    def to_junit(self) -> str:
        cases = []
        for item in [*self.gates, *self.checks]:
            is_gate = isinstance(item, Gate)
            name = f"gate.{item.name}" if is_gate else f"check.{item.name}"
            detail = (f"value {item.value:.4f} vs threshold {item.threshold:.4f}"
                      + (f" ({GATE_BASIS.get(item.basis, item.basis)})" if item.basis not in (None, "point") else "")) if is_gate else item.detail
            body = "" if item.passed else f"<failure message={quoteattr(detail)}>{escape(detail)}</failure>"
            cases.append(f'  <testcase classname="hardenctl" name={quoteattr(name)}>{body}</testcase>')
        failures = sum(1 for g in self.gates if not g.passed) + sum(1 for c in self.checks if not c.passed)
        return ('<?xml version="1.0" encoding="utf-8"?>\n'
                f'<testsuite name="hardenctl-eval" tests="{len(cases)}" failures="{failures}" time="{self.seconds:.3f}">\n'
                + "\n".join(cases) + "\n</testsuite>\n")

    def rich_table(self):
        from rich.table import Table

        table = Table(title=f"{self.model.get('arch')} · {self.norm} ε={self.eps:.4g} · n={self.n} · suite {self.suite}",
                      caption=f"randomised model: EOT over {self.eot_samples} draws" if self.randomized else None)
        table.add_column("metric")
        table.add_column("accuracy", justify="right")
        table.add_column("95% interval", justify="right")
        table.add_row("clean", f"{self.clean_accuracy:.2%}", _span(self.interval("clean_accuracy"), brackets=False))
        for name, acc in self.attacks.items():
            table.add_row(f"after {name}", f"{acc:.2%}", _span(self.interval(name), brackets=False))
        table.add_row("[bold]robust (worst case)[/bold]", f"[bold]{self.robust_accuracy:.2%}[/bold]",
                      _span(self.interval("robust_accuracy"), brackets=False))
        for s in self.eps_sweep:
            table.add_row(f"ε = {s['eps']:.4g}", f"{s['robust_accuracy']:.2%}", "")
        return table


GATE_BASIS = {"point": "point estimate", "lower95": "95% lower bound", "paired": "paired, per sample", "rates": "rates"}
REGRESSED_SHOWN = 50  # regressed samples listed in a report; the count is always complete


def _pair(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [interval[0], interval[1]]


def _class_interval(entry: dict[str, Any], key: str) -> list[float] | None:
    """The 95% Wilson interval of one per-class accuracy (``entry`` has ``n`` and the accuracy)."""
    from .stats import wilson_interval

    value = entry.get(key)
    return None if value is None else _pair(wilson_interval(min(1.0, max(0.0, float(value))), int(entry["n"])))


def _span(interval, brackets: bool = True) -> str:
    """``(41.9–48.1)``: an interval in percent, one decimal."""
    if interval is None:
        return ""
    text = f"{100 * interval[0]:.1f}–{100 * interval[1]:.1f}"
    return f"({text})" if brackets else f"{text}%"


def _paired_markdown(paired: dict[str, Any] | None) -> list[str]:
    """The paired comparison with the baseline (``extra.paired``): counts, McNemar p-value, the regressed samples."""
    if not paired:
        return []
    robust = paired["robust"]
    lines = ["", "## Paired comparison with the baseline", "",
             f"Same {paired['n']} samples as `{paired['baseline']}` (per-sample results `{paired['baseline_samples']}`): "
             f"**{robust['regressed']} regressed** (robust before, not now), {robust['improved']} improved; paired change in "
             f"robust accuracy {0.0 - robust['difference']:+.2%}; exact McNemar p = {robust['mcnemar_p']:.4g}."]
    clean = paired.get("clean")
    if clean:
        p = "" if clean.get("mcnemar_p") is None else f"; McNemar p = {clean['mcnemar_p']:.4g}"
        lines += ["", f"Clean: {clean['regressed']} samples regressed (less often correct than before), {clean['improved']} improved; "
                      f"paired change {0.0 - clean['difference']:+.2%}{p}."]
    shown = paired.get("regressed_samples") or []
    if shown:
        lines += ["", "| index | source | label | adversarial prediction | broken by |", "|---|---|---|---|---|"]
        lines += [f"| {r['index']} | {r['source_id']} | {r['label']} | {r['adversarial_prediction']} | {r['broken_by'] or ''} |"
                  for r in shown]
        if robust["regressed"] > len(shown):
            lines += ["", f"… and {robust['regressed'] - len(shown)} more ({robust['regressed']} regressed in all; "
                          "every one is in the per-sample results, `--samples`)."]
    return lines


def report_from_dict(data: dict[str, Any]) -> Report:
    """Rebuild a report (e.g. a ``--baseline``) from its JSON form."""
    data = dict(data)
    checks, gates = Check.__dataclass_fields__, Gate.__dataclass_fields__
    data["checks"] = [Check(**{k: v for k, v in c.items() if k in checks}) for c in data.get("checks", [])]
    data["gates"] = [Gate(**{k: v for k, v in g.items() if k in gates}) for g in data.get("gates", [])]
    known = Report.__dataclass_fields__
    return Report(**{k: v for k, v in data.items() if k in known})


def load_report(path: str | Path) -> Report:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"baseline report not found: {path}", "pass the report.json of an earlier `hardenctl eval --report`")
    try:
        return report_from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a hardenctl report ({type(exc).__name__})", "pass a report.json written by hardenctl") from None


def write_plot(report: Report, path: str | Path) -> bool:
    """Accuracy-vs-ε PNG; False when matplotlib (the ``[plot]`` extra) is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    ax.plot([s["eps"] for s in report.eps_sweep], [s["robust_accuracy"] for s in report.eps_sweep], marker="o")
    ax.set_xlabel(f"{report.norm} ε")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(f"{report.model.get('arch')} · suite {report.suite}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return True


def write_outputs(report: Report, json_path=None, markdown_path=None, junit_path=None, html_path=None) -> list[str]:
    """Write the requested files atomically; returns notes (e.g. plot skipped)."""
    notes = []
    if json_path:
        atomic_write(json_path, report.to_json())
    if markdown_path:
        plot_name = None
        if report.eps_sweep:
            plot_path = Path(markdown_path).with_suffix(".eps_sweep.png")
            if write_plot(report, plot_path):
                plot_name = plot_path.name
            else:
                notes.append("accuracy-vs-eps plot skipped: install the [plot] extra (pip install 'hardenctl[plot]')")
        from .report_html import write_pictures  # lazy, like the matplotlib it may import

        pictures_name, more = write_pictures(report, Path(markdown_path).with_suffix(".pictures.png"))
        notes += more
        atomic_write(markdown_path, report.to_markdown(plot_name, pictures_name))
    if junit_path:
        atomic_write(junit_path, report.to_junit())
    if html_path:
        from .report_html import write_html

        notes += write_html(report, html_path)
    return list(dict.fromkeys(notes))
