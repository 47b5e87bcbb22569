"""Running a suite: every attack on the points still robust, worst case per sample, fresh re-scoring.

Protocol (AutoAttack's): every attack runs only on the points still classified correctly, each adversarial batch
is checked against the threat model and re-scored by a fresh forward pass (EOT-repeated for randomised models),
and a point is robust only if it survives every attack. Nothing but per-sample results is kept across batches,
so memory stays flat in ``n``.

A batch is the unit of work: it is seeded by its start index, so it gives the same :class:`BatchResult` wherever
and whenever it runs, and a :class:`SuiteResult` is assembled from batch results by sample index. Which batches
run in this process, which were finished by an earlier (killed) process and what is kept after each is the
business of the :class:`BatchRunner` passed to :func:`run_suite`: the default runs every batch here; ``evaluate``
passes an :class:`~hardenctl.evaluation.runner.EvalRunner` (torchrun shards, a resume state, kept images) to every
``run_suite`` of an evaluation, the sanity checks' included.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..attacks import PGD, Attack, AttackWork, GradientStats
from ..attacks.streams import SampleStreams
from ..data import Dataset
from ..heap import release_free_memory
from .config import Progress

BOUND_TOLERANCE = 1e-5


@dataclass
class SuiteResult:
    clean_correct: Tensor  # per sample: fraction of draws classified correctly
    robust: Tensor  # per sample bool: correct on every draw after every attack
    after_attack: dict[str, int] = field(default_factory=dict)  # name -> points still robust after it
    gradient_stats: dict[str, GradientStats] = field(default_factory=dict)  # attack name -> its first-gradient counts
    bound_violations: int = 0
    max_linf: float = 0.0
    max_l2: float = 0.0
    robust_prediction: Tensor | None = (
        None  # per sample: prediction at the worst-case adversarial point (clean if wrong)
    )
    clean_prediction: Tensor | None = (
        None  # per sample: the clean prediction (the first wrong draw's for randomised models)
    )
    broken_by: Tensor | None = None  # per sample: index of the attack that broke it; NOT_ATTACKED (wrong clean), ROBUST
    work: dict[str, AttackWork] = field(
        default_factory=dict
    )  # attack name -> what it spent and broke, over every batch

    @classmethod
    def assemble(cls, n: int, names: Sequence[str], batches: Iterable["BatchResult"]) -> "SuiteResult":
        """Per-sample results placed by sample index, counts summed and norms maxed over ``batches``, which
        must cover samples ``0..n-1`` exactly once (shards and resumed runs are merged this way, never by rates)."""
        result = cls(
            torch.zeros(n),
            torch.zeros(n, dtype=torch.bool),
            {name: 0 for name in names},
            {name: GradientStats() for name in names},
            robust_prediction=torch.zeros(n, dtype=torch.long),
            clean_prediction=torch.zeros(n, dtype=torch.long),
            broken_by=torch.full((n,), NOT_ATTACKED, dtype=torch.long),
            work={name: AttackWork() for name in names},
        )
        covered = torch.zeros(n, dtype=torch.long)
        for batch in batches:
            rows = slice(batch.start, batch.start + len(batch))
            covered[rows] += 1
            result.clean_correct[rows] = batch.clean_correct
            result.clean_prediction[rows] = batch.clean_prediction
            result.robust[rows] = batch.robust
            result.robust_prediction[rows] = batch.robust_prediction
            result.broken_by[rows] = batch.broken_by
            for name, count, stats in zip(names, batch.after_attack, batch.gradient_stats):
                result.after_attack[name] += count
                result.gradient_stats[name].add(stats)
            for name, work in zip(names, batch.work):
                result.work[name].add(work)
            result.bound_violations += batch.bound_violations
            result.max_linf = max(result.max_linf, batch.max_linf)
            result.max_l2 = max(result.max_l2, batch.max_l2)
        if not bool((covered == 1).all()):
            wrong = (covered != 1).nonzero().squeeze(1)
            raise RuntimeError(f"batch results cover sample {int(wrong[0])} {int(covered[wrong[0]])} times, not once")
        return result

    def take(self, rows: Tensor) -> "SuiteResult":
        """The per-sample results of ``rows`` in that order (a sequential run's images put back in index order); the
        counts over the run stay as they are."""
        per_sample = {
            name: getattr(self, name)[rows]
            for name in ("clean_correct", "robust", "robust_prediction", "clean_prediction", "broken_by")
        }
        return dataclasses.replace(self, **per_sample)


NOT_ATTACKED, ROBUST = -2, -1  # broken_by codes: misclassified before any attack / survived every attack


@dataclass
class BatchResult:
    """One batch's per-sample rows and its share of the attack bookkeeping (counts per attack, in run order)."""

    number: int  # batch b holds samples b * batch_size .. (b + 1) * batch_size - 1 (the last batch may be short)
    start: int
    clean_correct: Tensor
    clean_prediction: Tensor
    robust: Tensor
    robust_prediction: Tensor
    broken_by: Tensor
    after_attack: list[int]
    gradient_stats: list[GradientStats]
    bound_violations: int = 0
    max_linf: float = 0.0
    max_l2: float = 0.0
    work: list[AttackWork] = field(default_factory=list)  # per attack, in run order: its cost and yield on this batch

    def __len__(self) -> int:
        return int(self.robust.shape[0])


class BatchRunner:
    """Which batches of a run go where, and what is kept after each. This default runs every batch in this
    process, carries nothing over and keeps nothing (see :class:`~hardenctl.evaluation.runner.EvalRunner`)."""

    def plan(self, stage: str, batches: int) -> tuple[list[int], list[BatchResult]]:
        """(batch numbers to run here, in increasing order; results carried over from an earlier process)."""
        return list(range(batches)), []

    def finished(self, stage: str, result: BatchResult, x: Tensor, y: Tensor, worst: Tensor) -> None:
        """After each batch run here: ``x``, ``y`` the clean batch, ``worst`` the point each sample was last scored
        at."""

    def merge(self, stage: str, results: list[BatchResult]) -> list[BatchResult]:
        """Every batch of the run, this process's ``results`` included."""
        return results


def stage_key(stage: str, eps: float, norm: str) -> str:
    """What names a run's batches in a saved state: its stage and threat model (two stages never share one)."""
    return f"{stage} [{norm} eps={eps!r}]"


def is_randomized(model: nn.Module, x: Tensor, tries: int = 3) -> bool:
    """True when repeated eval-mode forward passes on the same input differ."""
    with torch.no_grad():
        first = model(x)
        return any(not torch.equal(first, model(x)) for _ in range(tries - 1))


def _score(model: nn.Module, x: Tensor, y: Tensor, draws: int) -> tuple[Tensor, Tensor, Tensor]:
    """(correct on every draw, fraction of draws correct, prediction) from fresh forward passes;
    the prediction is the first wrong draw's, or the (correct) first draw's when none is wrong."""
    with torch.no_grad():
        predictions = torch.stack([model(x).argmax(dim=1) for _ in range(draws)])
    hits = predictions == y
    first_wrong = (~hits).float().argmax(dim=0)
    return hits.all(dim=0), hits.float().mean(dim=0), predictions.gather(0, first_wrong.unsqueeze(0)).squeeze(0)


def _check_bounds(x_adv: Tensor, x: Tensor, eps: float, norm: str, result: BatchResult) -> Tensor:
    """Count points outside the ε-ball or [0, 1]; return them projected so scores stay valid."""
    delta = (x_adv - x).flatten(1)
    linf = delta.abs().amax(dim=1)
    l2 = delta.norm(dim=1)
    outside_box = (x_adv < 0).flatten(1).any(dim=1) | (x_adv > 1).flatten(1).any(dim=1)
    radius = linf if norm == "linf" else l2
    bad = (radius > eps + BOUND_TOLERANCE) | outside_box | ~torch.isfinite(x_adv).flatten(1).all(dim=1)
    result.bound_violations += int(bad.sum())
    result.max_linf = max(result.max_linf, float(linf.max()) if len(linf) else 0.0)
    result.max_l2 = max(result.max_l2, float(l2.max()) if len(l2) else 0.0)
    if bad.any():
        fixed = x_adv.nan_to_num(0.5)
        helper = PGD(eps, norm)
        x_adv = torch.where(bad.view(-1, *[1] * (x.dim() - 1)), helper.project(fixed, x), x_adv)
    return x_adv


@dataclass(frozen=True)
class SuiteRun:
    """How one suite runs: ``attacks`` at one ``eps`` and ``norm``, in batches of ``batch_size`` seeded from ``seed``,
    re-scored with ``draws`` EOT draws, on ``device``. ``release_memory`` gives the C heap's free pages back before
    and after every batch (:func:`~hardenctl.heap.release_free_memory`; passed in so a test can see where)."""

    attacks: Sequence[Attack]
    eps: float
    norm: str
    batch_size: int
    seed: int = 0
    draws: int = 1
    device: torch.device = torch.device("cpu")
    release_memory: Callable[[], object] = release_free_memory


def run_suite(
    model: nn.Module,
    data: Dataset,
    run: SuiteRun,
    progress: Progress | None = None,
    stage: str = "attack",
    runner: BatchRunner | None = None,
    *,
    sample_ids: Tensor | None = None,
    label: str | None = None,
) -> SuiteResult:
    """Clean and worst-case robust correctness per sample for one ε; ``runner`` says which batches run here and
    what is kept after each (None: every batch here, nothing kept).

    ``sample_ids`` (``--sequential``): each row's index in the evaluated set; the attacks then draw from each image's
    own random stream (:mod:`hardenctl.attacks.streams`), so an image's outcome does not depend on its batch.
    ``label``: what progress calls the stage (default ``stage``, which also names the batches in a saved state).
    """
    n, size = len(data), run.batch_size
    runner, shown = runner or BatchRunner(), label or stage
    key = stage_key(stage, run.eps, run.norm)
    todo, done = runner.plan(key, math.ceil(n / size))
    done = list(done)
    total = sum(len(b) for b in done) + sum(min(size, n - b * size) for b in todo)
    finished = sum(len(b) for b in done)
    batches = math.ceil(n / size)
    if progress and todo:
        progress(shown, finished, total)  # the stage starts now (a log prints it; its clock starts here)
    for number, x, y in _batches(data, size, todo):
        run.release_memory()  # the heap pages decoding this batch freed (see hardenctl/heap.py: peak memory flat in n)

        def attack_done(
            name: str, robust: int, finished: int = finished, number: int = number, count: int = len(y)
        ) -> None:
            if progress:  # an attack boundary: a log shows it as it happens, not only when the batch ends
                progress(
                    shown,
                    finished,
                    total,
                    {"detail": f"batch {number + 1}/{batches}: {name} done, {robust} of {count} still robust"},
                )

        start = number * size
        ids = None if sample_ids is None else sample_ids[start : start + len(y)]
        batch, worst = _run_batch(model, run, number, x.to(run.device), y.to(run.device), ids, attack_done)
        runner.finished(key, batch, x, y, worst)
        done.append(batch)
        del x, y, worst  # freed before the next batch is decoded, not after
        run.release_memory()  # and those the attacks freed
        finished += len(batch)
        if progress:
            progress(shown, finished, total)
    names = [a.name for a in run.attacks]
    result = SuiteResult.assemble(n, names, runner.merge(key, done))
    for attack in run.attacks:  # the whole run's counts, as a single pass over the data leaves them
        attack.gradient_stats = result.gradient_stats[attack.name]
    return result


def _batches(data: Dataset, batch_size: int, numbers: Sequence[int]) -> Iterator[tuple[int, Tensor, Tensor]]:
    """``(batch number, x, y)`` for the given batch numbers (increasing), decoding only those."""
    if not numbers:
        return
    count = math.ceil(len(data) / batch_size)
    if list(numbers) == list(range(count)):
        subset = data
    else:  # only the last batch of the data may be short, so the subset's batches are the chosen ones, in order
        subset = data.take(
            torch.cat([torch.arange(b * batch_size, min((b + 1) * batch_size, len(data))) for b in numbers])
        )
    stream = subset.batches(batch_size)
    for number in numbers:
        _, x, y = next(stream)
        yield number, x, y
        del x, y  # dropped before the next batch is decoded (a zip would hold the last one until then)
    next(stream, None)  # the end of the pass: a folder fills its digest of what was decoded (no second decoding pass)


def _run_batch(
    model: nn.Module,
    run: SuiteRun,
    number: int,
    x: Tensor,
    y: Tensor,
    ids: Tensor | None,
    attack_done: Callable[[str, int], None] | None = None,
) -> tuple[BatchResult, Tensor]:
    """Batch ``number`` through the whole suite; also the point each sample was last scored at (the clean image when
    misclassified, the breaking point when broken, the last attack's point when robust). ``ids``: the rows' own random
    streams' keys (``--sequential``), else the global generator seeded by the batch's start."""
    attacks, eps, norm, seed, draws, start = (
        run.attacks,
        run.eps,
        run.norm,
        run.seed,
        run.draws,
        number * run.batch_size,
    )
    # Seeding per batch makes a run repeat exactly and not depend on what ran before, or where.
    torch.manual_seed(seed * 1_000_003 + start)
    robust, clean_frac, prediction = _score(model, x, y, draws)
    result = BatchResult(
        number,
        start,
        clean_frac.cpu(),
        prediction.clone().cpu(),
        robust,
        prediction,  # .clone: updated below
        torch.where(robust, ROBUST, NOT_ATTACKED).cpu(),
        [],
        [],
    )
    worst = x.clone()
    streams = None if ids is None else SampleStreams(seed, ids)
    for index_in_suite, attack in enumerate(attacks):
        attack.gradient_stats, attack.work = GradientStats(), AttackWork()
        index = robust.nonzero().squeeze(1)
        if len(index):
            started = time.perf_counter()
            attack.streams = None if streams is None else streams.rows(index.cpu())
            x_adv = _check_bounds(attack(model, x[index], y[index]), x[index], eps, norm, result)
            still, _, adv_prediction = _score(model, x_adv, y[index], draws)
            # the verdict's fresh forward passes are this attack's cost too; "broken" is what the verdict says
            attack.work.forward += len(index) * draws
            attack.work.seconds, attack.work.broken = time.perf_counter() - started, int((~still).sum())
            robust[index] = still
            prediction[index] = adv_prediction
            worst[index] = x_adv
            result.broken_by[index[~still].cpu()] = index_in_suite
        result.after_attack.append(int(robust.sum()))
        result.gradient_stats.append(attack.gradient_stats)
        result.work.append(attack.work)
        if attack_done is not None:
            attack_done(attack.name, result.after_attack[-1])
    result.robust, result.robust_prediction = robust.cpu(), prediction.cpu()
    return result, worst.cpu()
