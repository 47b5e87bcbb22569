"""What an eval report and a harden report hold, field by field: the checks :mod:`hardenctl.report.reader` applies.

Required are the fields every report hardenctl has written holds (``Report``'s fields without a default); the rest
were added later and are checked when present, so older reports stay readable. Keys this hardenctl does not know are
left alone (a newer writer adds keys without bumping the schema version). Counts are whole numbers in [0, n] (a
randomised model's clean count is a sum of fractions of draws, so a number), accuracies are numbers in [0, 1],
intervals pairs in [0, 1] with low <= high.
"""

from __future__ import annotations

from typing import Any, Callable

from .fields import (
    ACCURACY,
    FLAG,
    INTERVAL,
    NAMES,
    OBJECT,
    TEXT,
    Fields,
    integer_in,
    is_integer,
    list_of,
    maybe,
    number_in,
    one_of,
)

COUNT = integer_in(0)
SHORT_NUMBER = number_in(-1e12, 1e12, "a number")  # gate values, check statistics: finite, printable
LARGEST_L2_EPS = 1e6  # an L2 radius in [0, 1] pixel units is at most sqrt(pixels): 1e6 covers any image
NORMS = ("linf", "l2")


def check_eval_report(data: dict[str, Any], name: str, where: str = "") -> None:
    """Refuse (UserError naming ``name`` and the field) an eval report whose fields are not what hardenctl writes."""
    fields = Fields(data, name, where)
    n = fields.get("n", integer_in(1), required=True)
    for key in ("clean_accuracy", "robust_accuracy"):
        fields.get(key, ACCURACY, required=True)
    norm = fields.get("norm", one_of(*NORMS), required=True)
    fields.get("eps", number_in(0, 1 if norm == "linf" else LARGEST_L2_EPS), required=True)
    for key, kind in (
        ("suite", TEXT),
        ("seed", integer_in()),
        ("model_sha256", maybe(TEXT)),
        ("data_sha256", TEXT),
        ("seconds", number_in(0, 1e12)),
    ):
        fields.get(key, kind, required=True)
    fields.values_of("attacks", ACCURACY, "attack names")
    fields.get("attacks", OBJECT, required=True)
    fields.values_of("versions", maybe(TEXT), "package names")
    fields.get("versions", OBJECT, required=True)
    fields.get("normalization", OBJECT, required=True)
    _per_class(fields, n)
    for key, kind in (
        ("attack_list", NAMES),
        ("randomized", FLAG),
        ("eot_samples", integer_in(1)),
        ("device", TEXT),
        ("accepted_checks", NAMES),
        ("gate_on", one_of("point", "lower")),
        ("samples_file", maybe(TEXT)),
        ("interval_method", TEXT),
    ):
        fields.get(key, kind)
    _checks_and_gates(fields)
    _sections(fields)
    _counts(fields, n)
    _intervals(fields)
    _extra(fields, n)
    _sequential(fields.child("sequential"), n)


def _per_class(fields: Fields, n: int) -> None:
    """``per_class``: class id -> its name, n, accuracies, counts and intervals; the classes' n add up to at most n."""
    total = 0
    for _, entry in fields.entries("per_class", "class id to {name, n, clean_accuracy, robust_accuracy}"):
        size = entry.get("n", integer_in(0, n), required=True)
        total += size
        entry.get("name", TEXT, required=True)
        for key in ("clean_accuracy", "robust_accuracy"):
            entry.get(key, ACCURACY, required=True)
        entry.get("clean_correct", number_in(0, size, f"a number in [0, {size}] (the class's n)"))
        entry.get("robust_correct", integer_in(0, size))
        entry.get("display_name", TEXT)
        for key in ("clean_interval", "robust_interval"):
            entry.get(key, maybe(INTERVAL))
    fields.get("per_class", OBJECT, required=True)
    if total > n:
        fields.refuse(f"{fields.path('per_class')} counts {total} samples in all, more than the report's n = {n}")


def _checks_and_gates(fields: Fields) -> None:
    for check in fields.items("checks", "sanity checks"):
        check.get("name", TEXT, required=True)
        check.get("passed", FLAG, required=True)
        check.get("detail", TEXT, required=True)
        for key in ("value", "limit"):
            check.get(key, maybe(SHORT_NUMBER))
    for gate in fields.items("gates", "gates"):
        gate.get("name", TEXT, required=True)
        gate.get("passed", FLAG, required=True)
        for key in ("threshold", "value"):
            gate.get(key, SHORT_NUMBER, required=True)
        gate.get("basis", maybe(TEXT))
    for point in fields.items("eps_sweep", "{eps, robust_accuracy}"):
        point.get("eps", number_in(0, LARGEST_L2_EPS), required=True)
        point.get("robust_accuracy", ACCURACY, required=True)


def _sections(fields: Fields) -> None:
    """The model, data, normalisation, execution and work sections: the values the renderers and the card print."""
    model = fields.child("model")
    if model is not None:
        for key, kind in (
            ("arch", maybe(TEXT)),
            ("path", maybe(TEXT)),
            ("num_classes", maybe(integer_in(1))),
            ("input_size", maybe(list_of(integer_in(1), "whole numbers >= 1"))),
        ):
            model.get(key, kind)
    data = fields.child("data")
    if data is not None:
        data.get("source", maybe(TEXT))
    normalization = fields.child("normalization")
    if normalization is not None:
        normalization.get("source", maybe(TEXT))
        for key in ("mean", "std"):
            normalization.get(key, maybe(list_of(SHORT_NUMBER, "numbers")))
    fields.child("execution")
    for _, work in fields.entries("work", "attack name to {seconds, forward_passes, ...}"):
        work.get("seconds", number_in(0, 1e12), required=True)
        for key in ("forward_passes", "backward_passes", "attacked", "broken"):
            work.get(key, COUNT, required=True)


def _counts(fields: Fields, n: int) -> None:
    """``counts``: what the rates were divided from; its n is the report's, every count is in [0, n]."""
    counts = fields.child("counts")
    if counts is None:
        return
    same_n = ((lambda value: is_integer(value) and value == n), f"{n} (the report's n)")
    counts.get("n", same_n, required="clean_correct" in counts.data or "robust_correct" in counts.data)
    counts.get("clean_correct", number_in(0, n, f"a number in [0, {n}] (the report's n)"))
    counts.get("robust_correct", integer_in(0, n))
    counts.values_of("attacks", integer_in(0, n), "attack names")


def _intervals(fields: Fields) -> None:
    intervals = fields.child("intervals")
    if intervals is not None:
        for key in ("clean_accuracy", "robust_accuracy"):
            intervals.get(key, maybe(INTERVAL))
        intervals.values_of("attacks", maybe(INTERVAL), "attack names")


def _extra(fields: Fields, n: int) -> None:
    """``extra``: recipe sections (a ``summary`` line each), the protected classes' numbers, the paired comparison."""
    extra = fields.child("extra")
    if extra is None:
        return
    for key, value in extra.data.items():
        if isinstance(value, dict) and "summary" in value:
            extra.child(key).get("summary", TEXT)
    protected = extra.child("protected")
    if protected is not None:
        size = protected.get("n", integer_in(0, n), required=True)
        protected.get("classes", list_of(integer_in(0), "class ids (whole numbers >= 0)"), required=True)
        protected.get("cost", number_in(0, 1e12), required=True)
        protected.get("cost_weighted_robust_error", number_in(0, 1e12), required=True)
        for key in ("clean_accuracy", "robust_accuracy"):
            protected.get(key, maybe(ACCURACY), required=True)
        protected.get("clean_correct", number_in(0, size, f"a number in [0, {size}] (its n)"))
        protected.get("robust_correct", integer_in(0, size))
        protected.get("names", NAMES)
        for key in ("clean_interval", "robust_interval"):
            protected.get(key, maybe(INTERVAL))
    _paired(extra.child("paired"))


def _sequential(section: Fields | None, n: int) -> None:
    """``sequential`` (``--sequential``): the images planned (max_n >= n), where it stopped, each gate's decision and
    bounds, and every round's bounds."""
    if section is None:
        return
    max_n = section.get("max_n", integer_in(n), required=True)
    section.get("n", ((lambda value: is_integer(value) and value == n), f"{n} (the report's n)"), required=True)
    section.get("decided_at", maybe(integer_in(1, max_n)))
    section.get("alpha", number_in(0, 0.5), required=True)
    section.values_of("method", TEXT, "gated quantities")
    for _, gate in section.entries("gates", "gate name to {quantity, threshold, decision, decided_at, bounds}"):
        gate.get("quantity", TEXT, required=True)
        gate.get("threshold", SHORT_NUMBER, required=True)
        gate.get("decision", maybe(one_of("pass", "fail")), required=True)
        gate.get("decided_at", maybe(integer_in(1, max_n)))
        gate.get("bounds", maybe(list_of(number_in(-1, 1), "numbers in [-1, 1]")))
        gate.get("at_least", FLAG)
    for entry in section.items("rounds", "rounds ({n, quantity: [low, high]})"):
        entry.get("n", integer_in(1, max_n), required=True)


def _paired(paired: Fields | None) -> None:
    """``extra.paired`` (a ``--baseline`` comparison): counts, differences, p-values and the regressed samples."""
    if paired is None:
        return
    size = paired.get("n", integer_in(0), required=True)
    paired.get("baseline", TEXT, required=True)
    paired.get("baseline_samples", maybe(TEXT))
    for key, required in (("robust", True), ("clean", False)):
        side = paired.child(key, required)
        if side is None:
            continue
        for count in ("regressed", "improved", "unchanged"):
            side.get(count, integer_in(0, size), required=count != "unchanged")
        side.get("difference", number_in(-1, 1), required=True)
        side.get("mcnemar_p", maybe(ACCURACY) if key == "clean" else ACCURACY, required=True)
    for row in paired.items("regressed_samples", "regressed samples"):
        for key, kind in (
            ("index", integer_in(0)),
            ("source_id", TEXT),
            ("label", integer_in()),
            ("adversarial_prediction", integer_in()),
            ("broken_by", maybe(TEXT)),
        ):
            row.get(key, kind, required=True)


def check_harden_report(
    data: dict[str, Any], name: str, migrate: Callable[[dict[str, Any], str], dict[str, Any]]
) -> dict[str, Any]:
    """A harden report: its own fields, and each evaluation in it checked as an eval report (``migrate`` brings an
    evaluation to this hardenctl's schema, given the evaluation and its path). Returns it with the evaluations
    migrated."""
    fields = Fields(data, name)
    data = dict(data)
    for key, required in (("input", True), ("hardened", True), ("other", False)):
        part = fields.child(key, required)
        if part is not None:
            data[key] = migrate(part.data, f"{key}.")
            check_eval_report(data[key], name, f"{key}.")
    evaluations = fields.entries("extra_evaluations", "label to eval report")
    if evaluations:
        data["extra_evaluations"] = {label: migrate(part.data, part.where) for label, part in evaluations}
        for label, part in evaluations:
            check_eval_report(data["extra_evaluations"][label], name, part.where)
    fields.get("recipe", TEXT, required=True)
    for key, kind in (
        ("profile", maybe(TEXT)),
        ("selected", TEXT),
        ("selected_by", TEXT),
        ("recipe_source", maybe(TEXT)),
        ("selected_epoch", maybe(COUNT)),
        ("best_epoch", maybe(COUNT)),
        ("last_epoch", maybe(COUNT)),
        ("planned_epochs", maybe(COUNT)),
        ("decisions", NAMES),
        ("notes", NAMES),
        ("collapses", NAMES),
        ("recipe_config", OBJECT),
    ):
        fields.get(key, kind)
    source = fields.child("data")
    if source is not None:
        for key, kind in (
            ("train", maybe(TEXT)),
            ("eval", maybe(TEXT)),
            ("train_n", maybe(COUNT)),
            ("holdout_n", maybe(COUNT)),
        ):
            source.get(key, kind)
    fields.items("history", "epoch records")
    return data


__all__ = ["check_eval_report", "check_harden_report"]
