"""The release API: what ``hardenctl compare``, ``card``, ``info`` and ``recipes`` do, for the CLI and for notebooks.

Nothing here runs an attack or imports torch when imported: ``compare`` and ``card`` read reports, ``recipes`` reads
the recipe files and sources; only :func:`describe_model` (``info``) loads a model, and imports torch when called.
Paths are checked before anything is written, and files are written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..compare import Comparison, compare
from ..errors import UserError
from ..files import atomic_write, check_output_dir, check_output_file
from ..models.provenance import LICENSE_ID, Provenance, read_provenance
from ..recipes import Description
from ..report import append_step_summary, comparison_html, comparison_markdown, read_report_json
from ..report.card import CardOptions, is_harden_report, model_card
from ..report.robustbench import check_dataset_key, entry_json, robustbench_entry, write_entry

if TYPE_CHECKING:
    from ..options import ModelOptions

__all__ = [
    "CardOptions",
    "CardRequest",
    "Comparison",
    "Description",
    "compare",
    "describe_lines",
    "describe_model",
    "describe_recipe",
    "model_card",
    "recipes",
    "robustbench_entry",
    "write_card",
    "write_comparison",
    "write_robustbench_entry",
]


def write_comparison(
    comparison: Comparison,
    markdown: str | Path | None = None,
    html: str | Path | None = None,
    report: str | Path | None = None,
    step_summary: bool = False,
) -> list[tuple[Path, BaseException]]:
    """Write the comparison's files, each on its own: one that fails (a full disk, a folder removed meanwhile) does
    not stop the others, and is returned with its error rather than raised, so a caller can name it after the
    verdict and keep the verdict's exit code.

    Args:
        comparison: what :func:`compare` returned.
        markdown: where to write it as Markdown; None for no file.
        html: where to write it as a self-contained HTML page; None for no file.
        report: where to write it as JSON; None for no file.
        step_summary: also append the Markdown to ``$GITHUB_STEP_SUMMARY`` (under GitHub Actions).
    """
    failures: list[tuple[Path, BaseException]] = []
    for path, render in (
        (markdown, lambda: comparison_markdown(comparison)),
        (html, lambda: comparison_html(comparison)),
        (report, comparison.to_json),
    ):
        if path is None:
            continue
        try:
            atomic_write(path, render())
        except Exception as exc:  # noqa: BLE001 - returned: the verdict outranks the files
            failures.append((Path(path), exc))
    if step_summary:
        try:
            append_step_summary(comparison_markdown(comparison))
        except Exception as exc:  # noqa: BLE001 - a courtesy to the run's page
            failures.append((Path("$GITHUB_STEP_SUMMARY"), exc))
    return failures


@dataclass(frozen=True)
class CardRequest:
    """What ``hardenctl card`` was asked for, beyond the report and the folder (each field is the flag of its name;
    :meth:`check` refuses the values the Hub would refuse or a card could not state)."""

    name: str | None = None
    repo_id: str | None = None
    dataset: str | None = None
    dataset_name: str | None = None
    license: str | None = None
    robustbench_json: Path | None = None
    robustbench_dataset: str | None = None
    additional_data: bool | None = None

    def check(self) -> str | None:
        """One-line errors (UserError, exit 2) for flags the Hub would refuse or a card could not state; returns
        RobustBench's dataset key for ``robustbench_dataset`` (None when it was not given)."""
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        ids = (("--repo-id", self.repo_id, "my-org/resnet50-robust"), ("--dataset", self.dataset, "uoft-cs/cifar10"))
        for flag, value, example in ids:
            if value is None:
                continue
            try:
                validate_repo_id(value)
            except HFValidationError as exc:
                problem = str(exc).splitlines()[0].replace("\r", " ")
                raise UserError(
                    f"{flag} {value!r} is not a Hub id ({problem})", f"pass e.g. {flag} {example}"
                ) from None
            if flag == "--repo-id" and value.count("/") != 1:
                raise UserError(f"--repo-id {value!r} is not ORG/NAME", f"pass e.g. --repo-id {example}")
        for flag, value in (("--dataset-name", self.dataset_name), ("--name", self.name)):
            if value is not None and (not value.strip() or not value.isprintable() or value.startswith(("/", "~"))):
                raise UserError(
                    f"{flag} {value!r} is not a name (empty, several lines, or a path)",
                    f"pass a short readable name, e.g. {flag} 'CIFAR-10 test'",
                )
        if self.license is not None and not LICENSE_ID.fullmatch(self.license.lower()):
            raise UserError(
                f"--license {self.license!r} is not a license id",
                "pass a Hub/SPDX license id, e.g. --license apache-2.0, mit, cc-by-nc-4.0 or other",
            )
        return check_dataset_key(self.robustbench_dataset) if self.robustbench_dataset is not None else None


def write_card(report_path: str | Path, out_dir: str | Path, request: CardRequest | None = None) -> list[str]:
    """Write a model card (``README.md`` in ``out_dir``, as the Hugging Face Hub shows it) for a model evaluated or
    hardened by hardenctl, and its RobustBench entry when asked. The report, the flags and every output path are
    checked first: nothing is written when any is wrong (UserError).

    Args:
        report_path: a report.json from ``hardenctl eval --report`` or ``hardenctl harden --out``.
        out_dir: the folder to write README.md into (e.g. the model folder).
        request: the names, ids, license and RobustBench options (:class:`CardRequest`).

    Returns:
        The notes for the user (where the license came from, what the RobustBench entry needs by hand).
    """
    request = request or CardRequest()
    data = read_report_json(report_path)
    rb_key = request.check()
    readme = Path(out_dir) / "README.md"
    check_output_dir(out_dir, "--out")
    check_output_file(readme, "--out")
    if request.robustbench_json is not None:
        check_output_file(request.robustbench_json, "--robustbench-json")
    harden = is_harden_report(data)
    declared = read_provenance(((data["input"] if harden else data).get("model") or {}).get("path"))
    options = _card_options(request, declared.card_fields(derived=harden))
    card = model_card(data, options)
    notes = _license_notes(request.license, options.license, declared)
    entry = None
    if request.robustbench_json is not None:
        fields, entry_notes = robustbench_entry(
            data,
            request.name,
            dataset=rb_key,
            additional=request.additional_data,
            trained_on=declared.trained_on,
            hub_dataset=request.dataset,
        )
        entry, notes = entry_json(fields), notes + entry_notes
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write(readme, str(card))
    if entry is not None:
        atomic_write(request.robustbench_json, entry)
    return notes


def _card_options(request: CardRequest, inherited: dict[str, Any]) -> CardOptions:
    """The card's options: the request's, and the license and lineage the input model declares (``--license``
    replaces the declared license, its name and its link)."""
    if request.license is not None:
        inherited.update(license=request.license.lower(), license_name=None, license_link=None)
    return CardOptions(
        model_name=request.name,
        repo_id=request.repo_id,
        dataset_id=request.dataset,
        dataset_name=request.dataset_name,
        **inherited,
    )


def _license_notes(license_id: str | None, chosen: str | None, declared: Provenance) -> list[str]:
    """What the user should know about the card's license: inherited from where, or missing and how to set it."""
    if license_id is not None:
        return []
    if chosen is not None:
        return [f"license: {chosen}, as {declared.spec}'s {declared.license_from} declares (--license to change it)"]
    why = "; ".join(declared.problems) or f"{declared.spec} declares none"
    return [f"the card has no license ({why}): pass --license (e.g. --license apache-2.0) before publishing it"]


def write_robustbench_entry(report: dict[str, Any], path: str | Path, **options: Any) -> list[str]:
    """Write an evaluation's RobustBench entry (``eval --robustbench-json``), atomically; returns its notes.

    Args:
        report: the evaluation's report, as its JSON dict.
        path: the entry's file (RobustBench keeps it as ``model_info/<dataset>/<threat model>/<Name>.json``).
        options: :func:`robustbench_entry`'s keywords (``name``, ``dataset``, ``additional``); what the model
            declares it was trained on is read from its files here, for ``additional_data``.
    """
    declared = read_provenance((report.get("model") or {}).get("path"))
    return write_entry(report, path, trained_on=declared.trained_on, **options)


def describe_model(path: str | Path, options: ModelOptions | None = None) -> dict[str, Any]:
    """What a checkpoint holds: architecture, input, normalisation, inserted modules (e.g. FSR), parameter counts.

    Args:
        path: the checkpoint (a file, a timm model folder, ``hf-hub:ORG/NAME``).
        options: the architecture and class count when the checkpoint does not say (:class:`ModelOptions`).
    """
    from ..models.info import describe_model as describe

    return describe(path, options)


def describe_lines(description: dict[str, Any]) -> list[str]:
    """:func:`describe_model`'s answer as the lines ``hardenctl info`` prints.

    Args:
        description: what :func:`describe_model` returned.
    """
    from ..models.info import describe_lines as lines

    return lines(description)


def recipes() -> list[dict[str, str]]:
    """Every built-in recipe: its name, class, paper and what it improves, read from the recipe files and sources
    without importing them (or torch), so a listing answers at once."""
    from ..recipes import read_recipe_values, recipe_card, recipe_names, recipe_path

    cards = {name: recipe_card(read_recipe_values(recipe_path(name))[0]) for name in recipe_names()}
    return [
        {"name": name, "class": card["class"], "paper": card["paper"], "improves": card["improves"]}
        for name, card in cards.items()
    ]


def describe_recipe(spec: str | Path) -> Description:
    """Every parameter of a recipe in each profile of its file, with its meaning (the YAML comment on its line).

    Args:
        spec: a built-in recipe's name or a recipe YAML file.
    """
    from ..recipes import describe_profiles

    return describe_profiles(spec)
