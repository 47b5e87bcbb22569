"""The evaluation report: one dataclass, rendered as JSON (versioned), Markdown, JUnit and a console table.

JSON is the contract CI gates read, so its keys only ever get added to; a change that
removes or renames one bumps :data:`SCHEMA_VERSION`.
"""
from __future__ import annotations

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
    """A release gate: ``value`` compared with ``threshold``."""

    name: str
    threshold: float
    value: float
    passed: bool


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

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def to_markdown(self, plot_name: str | None = None) -> str:
        lines = [
            "# hardenctl robustness report",
            "",
            f"Model `{self.model.get('arch')}` ({self.model.get('path') or 'in memory'}), data `{self.data.get('source')}`, "
            f"n = {self.n}, {self.norm} ε = {self.eps:.5g}, suite `{self.suite}`, seed {self.seed}.",
            "",
            "| metric | accuracy |",
            "|---|---|",
            f"| clean | {self.clean_accuracy:.2%} |",
        ]
        lines += [f"| after {name} | {acc:.2%} |" for name, acc in self.attacks.items()]
        lines += [f"| **robust (worst case)** | **{self.robust_accuracy:.2%}** |", ""]
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
        lines += ["## Checks", "", "| check | result | detail |", "|---|---|---|"]
        lines += [f"| {c.name} | {'pass' if c.passed else ('FAIL (accepted)' if c.name in self.accepted_checks else '**FAIL**')} "
                  f"| {c.detail} |" for c in self.checks]
        if self.accepted_checks:
            lines += ["", f"Failed checks accepted knowingly (--allow-check / --no-strict): {', '.join(self.accepted_checks)}."]
        if self.gates:
            lines += ["", "## Gates", "", "| gate | threshold | value | result |", "|---|---|---|---|"]
            lines += [f"| {g.name} | {g.threshold:.4f} | {g.value:.4f} | {'pass' if g.passed else '**FAIL**'} |" for g in self.gates]
        protected = self.extra.get("protected")
        if protected:
            clean, robust = (("n/a" if v is None else f"{v:.2%}") for v in (protected["clean_accuracy"], protected["robust_accuracy"]))
            lines += ["", "## Protected classes", "",
                      (f"Classes {', '.join(map(str, protected['classes']))} (cost {protected['cost']:g}), n = {protected['n']}: "
                       f"clean {clean}, robust {robust}; cost-weighted robust error {protected['cost_weighted_robust_error']:.4f}.")]
        lines += ["", "## Per class", "", "| class | n | clean | robust |", "|---|---|---|---|"]
        lines += [f"| {k} {v['name']} | {v['n']} | {v['clean_accuracy']:.2%} | {v['robust_accuracy']:.2%} |" for k, v in self.per_class.items()]
        lines += ["", f"Normalisation from {self.normalization.get('source')}; model sha256 `{self.model_sha256}`; "
                      f"data sha256 `{self.data_sha256}`; {self.seconds:.1f} s on {self.device}; "
                      + ", ".join(f"{k} {v}" for k, v in self.versions.items()) + ".", ""]
        return "\n".join(lines)

    def to_junit(self) -> str:
        cases = []
        for item in [*self.gates, *self.checks]:
            is_gate = isinstance(item, Gate)
            name = f"gate.{item.name}" if is_gate else f"check.{item.name}"
            detail = f"value {item.value:.4f} vs threshold {item.threshold:.4f}" if is_gate else item.detail
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
        table.add_row("clean", f"{self.clean_accuracy:.2%}")
        for name, acc in self.attacks.items():
            table.add_row(f"after {name}", f"{acc:.2%}")
        table.add_row("[bold]robust (worst case)[/bold]", f"[bold]{self.robust_accuracy:.2%}[/bold]")
        for s in self.eps_sweep:
            table.add_row(f"ε = {s['eps']:.4g}", f"{s['robust_accuracy']:.2%}")
        return table


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


def write_outputs(report: Report, json_path=None, markdown_path=None, junit_path=None) -> list[str]:
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
        atomic_write(markdown_path, report.to_markdown(plot_name))
    if junit_path:
        atomic_write(junit_path, report.to_junit())
    return notes
