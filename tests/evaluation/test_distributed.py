"""Sharded evaluation: a batch gives the same result wherever it runs, and shards merge by sample index.

The torchrun tests launch 2 gloo processes of one thread each (as ``tests/test_harden.py`` does for DDP) and compare
with one in-process run, also single-threaded (tests/conftest.py), so results must be bit-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from testing_helpers import torchrun
from torch import nn

import hardenctl
from hardenctl.attacks.suites import build_suite
from hardenctl.data import load_dataset
from hardenctl.distributed import Distributed, rank_device
from hardenctl.evaluation import EvalConfig, SuiteRun, evaluate, run_suite
from hardenctl.evaluation.samples import read_samples
from hardenctl.evaluation.sharding import owned_batches
from hardenctl.evaluation.suite import BatchResult, BatchRunner, SuiteResult

HERE = Path(__file__).resolve().parent


class Noisy(nn.Module):
    """A randomised defence: Gaussian input noise at eval time (attacked and scored with EOT)."""

    def __init__(self, model, sigma=0.2):
        super().__init__()
        self.model, self.info, self.sigma = model, model.info, sigma

    def forward(self, x):
        return self.model((x + self.sigma * torch.randn_like(x)).clamp(0, 1))


# n = 37 in batches of 8 over 2 processes: rank 0 runs batches 0, 2, 4 (8 + 8 + 5 samples), rank 1 batches 1, 3 (8 + 8)
SUITE_ARGS = [
    "--n",
    "37",
    "--batch-size",
    "8",
    "--eps",
    "0.1",
    "--suite",
    "standard",
    "--apgd-steps",
    "3",
    "--square-queries",
    "10",
    "--eps-sweep",
    "0.05,0.1",
    "--device",
    "cpu",
    "--no-strict",
    "--quiet",
]
NOISY = dict(
    n=37,
    batch_size=8,
    eps=0.1,
    attacks=["apgd-ce", "square"],
    apgd_steps=3,
    square_queries=10,
    eot_samples=3,
    large_eps_samples=16,
)


def without_seconds(report: dict) -> dict:
    from testing_helpers import timeless  # here: torchrun workers import this module from its own folder

    return timeless(report)


# ---------------------------------------------------------------------------------------------
# in-process: shard by shard, then merged
# ---------------------------------------------------------------------------------------------
class OneShard(BatchRunner):
    """Rank ``rank`` of ``world``: runs only its batches and keeps them; the other ranks' batches (needed to
    assemble a stage) come from ``complement``, a single-process run's."""

    def __init__(self, rank: int, world: int, complement: dict[str, list[BatchResult]]):
        self.rank, self.world, self.complement, self.kept = rank, world, complement, {}

    def plan(self, stage, batches):
        return owned_batches(batches, self.rank, self.world), []

    def merge(self, stage, results):
        self.kept[stage] = results
        mine = {b.number for b in results}
        return results + [b for b in self.complement[stage] if b.number not in mine]


class Recorder(BatchRunner):
    def __init__(self):
        self.kept = {}

    def merge(self, stage, results):
        self.kept[stage] = results
        return results


def assert_same_suite_result(got: SuiteResult, want: SuiteResult) -> None:
    for name in ("clean_correct", "robust", "robust_prediction", "clean_prediction", "broken_by"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert got.after_attack == want.after_attack and got.gradient_stats == want.gradient_stats
    assert (got.bound_violations, got.max_linf, got.max_l2) == (want.bound_violations, want.max_linf, want.max_l2)


@pytest.mark.parametrize("randomised", [False, True], ids=["deterministic", "eot"])
def test_unequal_shards_merge_exactly(digits_model_path, randomised):
    """37 samples in batches of 8 over 2 ranks (21 and 16 samples): each rank's batches equal the single run's,
    and assembling the two shards gives the single run's result: per sample, counts summed, norms maxed."""
    model = hardenctl.load_model(digits_model_path)
    model = Noisy(model).eval() if randomised else model
    data = hardenctl.load_data("digits-test", model, n=37)
    draws = 3 if randomised else 1

    def run(runner):
        return run_suite(
            model,
            data,
            SuiteRun(build_suite("standard", 0.1, "linf", draws, 0, 3, 10), 0.1, "linf", 8, 0, draws),
            runner=runner,
        )

    whole = Recorder()
    reference = run(whole)
    shards = [OneShard(rank, 2, whole.kept) for rank in (0, 1)]
    for shard in shards:
        run(shard)
    (stage,) = whole.kept
    numbers = [[b.number for b in shard.kept[stage]] for shard in shards]
    assert numbers == [[0, 2, 4], [1, 3]] and [sum(len(b) for b in s.kept[stage]) for s in shards] == [21, 16]
    batches = shards[0].kept[stage] + shards[1].kept[stage]
    merged = SuiteResult.assemble(37, list(reference.after_attack), batches)
    assert_same_suite_result(merged, reference)
    # counts are sums over batches, norms maxima, and the last attack's count is the robust samples'
    assert merged.after_attack == {
        name: sum(b.after_attack[i] for b in batches) for i, name in enumerate(merged.after_attack)
    }
    assert merged.after_attack["square"] == int(merged.robust.sum())
    assert merged.max_linf == max(b.max_linf for b in batches) and 0 < merged.max_linf <= 0.1 + 1e-6
    assert merged.gradient_stats["apgd-ce"].points == sum(b.gradient_stats[0].points for b in batches) > 0
    assert 0 < int(reference.robust.sum()) < int((reference.clean_correct == 1).sum())  # the attacks did something
    if randomised:
        assert 0 < float(reference.clean_correct.mean()) < 1 and bool(
            ((reference.clean_correct > 0) & (reference.clean_correct < 1)).any()
        )


def test_assembling_refuses_a_gap_or_an_overlap(digits_model_path):
    model = hardenctl.load_model(digits_model_path)
    data = hardenctl.load_data("digits-test", model, n=20)
    whole = Recorder()
    reference = run_suite(
        model, data, SuiteRun(build_suite("quick", 0.1, "linf", 1, 0, 2, 10), 0.1, "linf", 8), runner=whole
    )
    batches = next(iter(whole.kept.values()))
    names = list(reference.after_attack)
    with pytest.raises(RuntimeError, match="sample 8"):
        SuiteResult.assemble(20, names, [batches[0], batches[2]])
    with pytest.raises(RuntimeError, match="2 times"):
        SuiteResult.assemble(20, names, batches + [batches[0]])


def test_batches_are_assigned_round_robin_and_cuda_means_local_rank():
    assert owned_batches(5, 0, 2) == [0, 2, 4] and owned_batches(5, 1, 2) == [1, 3] and owned_batches(1, 1, 2) == []
    assert rank_device("cpu", Distributed(1, 2, 1)) == "cpu"
    assert rank_device("cuda:3", Distributed()) == "cuda:3"  # one process: as asked
    if not torch.cuda.is_available():
        assert rank_device("auto", Distributed(1, 2, 1)) == "auto"


# ---------------------------------------------------------------------------------------------
# torchrun: 2 gloo processes vs one
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torchrun_eval(tmp_path_factory, digits_model_path, digits_npz):
    """One torchrun launch, 2 gloo processes: the CLI on the standard suite (each rank given its own report paths,
    so a file written by rank 1 would show), then ``evaluate`` on a randomised model with EOT."""
    out = tmp_path_factory.mktemp("torchrun")
    cli_args = ["eval", str(digits_model_path), "--data", str(digits_npz), *SUITE_ARGS]
    run = torchrun(
        f"""
        import json, os, sys
        import torch
        import torch.distributed as dist
        sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]  # test_distributed, and the testing_helpers it imports
        from test_distributed import NOISY, Noisy
        from hardenctl import load_data, load_model
        from hardenctl.cli import main
        from hardenctl.distributed import Distributed
        from hardenctl.evaluation import EvalConfig, evaluate

        torch.set_num_threads(1)
        out, rank = {str(out)!r}, os.environ["RANK"]
        dist.init_process_group("gloo")  # one group for both evaluations (Distributed.start joins a running one)
        mine = os.path.join(out, "rank" + rank)
        code = main({cli_args!r} + ["--report", mine + "/report.json", "--markdown", mine + "/report.md",
                                    "--html", mine + "/report.html", "--samples", mine + "/samples.jsonl",
                                    "--save-adversarial", out + "/adversarial", "--resume-dir", out + "/state"])
        model = Noisy(load_model({str(digits_model_path)!r}))
        report = evaluate(model, load_data({str(digits_npz)!r}, model, n=37), EvalConfig(**NOISY),
                          dist=Distributed.from_env())
        with open(os.path.join(out, "noisy-rank" + rank + ".json"), "w") as fh:
            json.dump({{"report": report.to_dict(), "samples": report.samples.rows()}}, fh)
        dist.destroy_process_group()
        sys.exit(code)
    """,
        out,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return out, cli_args


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_per_sample(torchrun_eval, cli, tmp_path):
    out, cli_args = torchrun_eval
    code, _, err = cli(
        *cli_args,
        "--report",
        tmp_path / "report.json",
        "--samples",
        tmp_path / "samples.jsonl",
        "--save-adversarial",
        tmp_path / "adversarial",
    )
    assert code == 0, err
    single = json.loads((tmp_path / "report.json").read_text())
    sharded = json.loads((out / "rank0" / "report.json").read_text())
    assert without_seconds(sharded) == without_seconds(single)
    assert sharded["robust_accuracy"] < sharded["clean_accuracy"] and len(sharded["eps_sweep"]) == 2
    assert read_samples(out / "rank0" / "samples.jsonl")[1].rows() == read_samples(tmp_path / "samples.jsonl")[1].rows()
    # the worst-case points, written by the process that ran each batch, are the single run's to the bit
    from testing_helpers import read_adversarial  # here: torchrun workers import this module from its own folder

    index, images = read_adversarial(out / "adversarial")
    single_index, single_images = read_adversarial(tmp_path / "adversarial")
    assert index.tolist() == list(range(37)) and (index == single_index).all() and (images == single_images).all()


@pytest.mark.slow
def test_randomised_model_with_eot_shards_exactly(torchrun_eval, digits_model_path, digits_npz):
    out, _ = torchrun_eval
    model = Noisy(hardenctl.load_model(digits_model_path))
    single = evaluate(model, hardenctl.load_data(str(digits_npz), model, n=37), EvalConfig(**NOISY))
    assert single.randomized and single.eot_samples == 3
    for rank in (0, 1):  # every process holds the whole merged report
        sharded = json.loads((out / f"noisy-rank{rank}.json").read_text())
        assert without_seconds(sharded["report"]) == without_seconds(json.loads(single.to_json()))
        assert sharded["samples"] == single.samples.rows()


@pytest.mark.slow
def test_only_rank_0_writes_the_report(torchrun_eval):
    out, _ = torchrun_eval
    assert not (out / "rank1").exists()
    assert sorted(p.name for p in (out / "rank0").iterdir()) == [
        "report.eps_sweep.png",
        "report.html",
        "report.json",
        "report.md",
        "report.pictures.png",
        "samples.jsonl",
    ]
    # the per-process state: each rank keeps its own file
    assert sorted(p.name for p in (out / "state").iterdir() if not p.name.startswith(".")) == [
        "state-rank0-of2.pt",
        "state-rank1-of2.pt",
    ]


# ---------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# ---------------------------------------------------------------------------------------------
# CPU and GPU kernels round differently; an attack's sign steps amplify a last-bit difference at a tie, so a few
# samples may flip. Tolerance: clean predictions agree on >= 99% of samples, robust accuracy within 0.05.
CUDA_ROBUST_TOLERANCE = 0.05


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu_within_tolerance(digits_model_path):
    config = EvalConfig(
        n=200, batch_size=64, eps=0.1, suite="standard", apgd_steps=10, square_queries=50, large_eps_samples=32
    )
    data = load_dataset("digits-test")
    cpu = evaluate(
        hardenctl.load_model(digits_model_path),
        hardenctl.load_data(data, hardenctl.load_model(digits_model_path), n=200),
        config,
    )
    gpu_model = hardenctl.load_model(digits_model_path, device="cuda")
    gpu = evaluate(gpu_model, hardenctl.load_data(data, gpu_model, n=200), config)
    assert gpu.device.startswith("cuda") and gpu.n == cpu.n == 200
    agree = sum(a == b for a, b in zip(gpu.samples.clean_prediction, cpu.samples.clean_prediction)) / 200
    assert agree >= 0.99
    assert abs(gpu.clean_accuracy - cpu.clean_accuracy) <= 0.01
    assert abs(gpu.robust_accuracy - cpu.robust_accuracy) <= CUDA_ROBUST_TOLERANCE
    assert {c.name: c.passed for c in gpu.checks} == {c.name: c.passed for c in cpu.checks}


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL: one process per GPU)")
def test_sharded_cuda_run_merges_correctly(tmp_path, digits_model_path, digits_npz):
    """2 NCCL processes (cuda:0, cuda:1) vs 1 (cuda:0). Forward passes are deterministic, so clean results match
    exactly; attack gradients may use atomics (max-pool backward), so robust results are held to the CUDA tolerance.
    The merge itself is checked exactly: every sample once, and every rate equal to its per-sample results' mean."""
    worker = tmp_path / "worker.py"
    worker.write_text(
        textwrap.dedent(f"""
        import os, sys
        import torch
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        from hardenctl.cli import main
        world, rank = os.environ["WORLD_SIZE"], os.environ["RANK"]
        mine = os.path.join({str(tmp_path)!r}, "world" + world + ("" if rank == "0" else "-rank" + rank))
        sys.exit(main(["eval", {str(digits_model_path)!r}, "--data", {str(digits_npz)!r}, "--n", "37",
                       "--batch-size", "8", "--eps", "0.1", "--suite", "standard", "--apgd-steps", "5",
                       "--square-queries", "20", "--device", "cuda", "--no-strict", "--quiet",
                       "--report", mine + "/report.json", "--samples", mine + "/samples.jsonl"]))
    """)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    for world in (1, 2):
        run = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", str(worker)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-4000:]
    assert not (tmp_path / "world2-rank1").exists()  # only rank 0 writes
    one, two = (json.loads((tmp_path / f"world{w}" / "report.json").read_text()) for w in (1, 2))
    assert one["device"] == two["device"] == "cuda:0" and one["n"] == two["n"] == 37
    rows_one, rows_two = (read_samples(tmp_path / f"world{w}" / "samples.jsonl")[1] for w in (1, 2))
    assert rows_two.index == list(range(37))
    assert rows_two.clean_prediction == rows_one.clean_prediction and two["clean_accuracy"] == one["clean_accuracy"]
    assert two["robust_accuracy"] == pytest.approx(sum(rows_two.robust) / 37)
    assert two["attacks"]["square"] == pytest.approx(
        sum(rows_two.robust) / 37
    )  # the last attack's count, summed over ranks
    assert abs(two["robust_accuracy"] - one["robust_accuracy"]) <= CUDA_ROBUST_TOLERANCE
    assert two["data_sha256"] == one["data_sha256"] and two["model_sha256"] == one["model_sha256"]
