"""The prepared GPU check: one command that proves (or disproves) hardenctl on a CUDA machine, within minutes.

Run on the device machine (see README "GPU check"), with CIFAR-10 copied into the git-ignored ``.device-data/``:

    python benchmarks/device_check.py --prepare-data   # here: CIFAR-10 subset -> .device-data/,
                                                       #       pyautoattack -> .pylib/
    bash benchmarks/device_check.sh            # there (carry .device-data, .pylib): install, pytest -m cuda,
                                               #       this script
    python benchmarks/device_check.py --tiny   # CPU dry run (CI runs it so the script never rots)

Steps, each timed and recorded even when another fails (a GPU lease is rare: one failure must not lose the rest):
  1. environment (torch, CUDA device, hardenctl version);
  2. PGD-AT training throughput, images/s: hardenctl's engine in fp32, bf16 autocast, bf16 + channels_last,
     against a bare timm loop doing the same PGD-10 steps (targets: bf16+channels_last >= 2x fp32;
     engine <= 1.05x bare);
  3. a CIFAR-10 model trained adversarially for ``--train-seconds`` (bf16 + channels_last), then
  4. the standard suite on ``--n`` test images in fp32, in bf16-search mode when hardenctl has it, and the reference
     AutoAttack (``pyautoattack``) on the same model and images: seconds and robust accuracy (target: ours <= 0.30x).
The JSON (``--out``) holds every number; nothing is printed that is not also in it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DATA_CANDIDATES = [ROOT / ".device-data" / "cifar10", ROOT.parent / "shared" / "data" / "cifar10"]


def environment(device: torch.device) -> dict[str, Any]:
    import timm

    import hardenctl

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "hardenctl": hardenctl.__version__,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def cifar_arrays(data_dir: Path | None, tiny: bool) -> dict[str, np.ndarray]:
    """CIFAR-10 train/test arrays; in --tiny mode without the data, random images (the dry run checks code paths)."""
    for candidate in [data_dir] if data_dir else DATA_CANDIDATES:
        if candidate and (candidate / "test.npz").is_file():
            train, test = np.load(candidate / "train.npz"), np.load(candidate / "test.npz")
            return {"x_train": train["x"], "y_train": train["y"], "x_test": test["x"], "y_test": test["y"]}
    if not tiny:
        raise SystemExit("no CIFAR-10 arrays: copy ../shared/data/cifar10 to .device-data/cifar10 (see README)")
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 256),
        "x_test": rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 64),
    }


def prepare_device_data(train_images: int = 3000, test_images: int = 1000) -> None:
    """Here, before the device call: a CIFAR-10 subset in the git-ignored ``.device-data/`` that ``carry`` takes along
    (the device machine gets the checkout, not ../shared; the whole tree travels within 64 MiB)."""
    source = next((c for c in DATA_CANDIDATES[1:] if (c / "test.npz").is_file()), None)
    if source is None:
        raise SystemExit("no ../shared/data/cifar10 to copy from")
    target = ROOT / ".device-data" / "cifar10"
    target.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", train_images), ("test", test_images)):
        data = np.load(source / f"{name}.npz")
        np.savez(target / f"{name}.npz", x=data["x"][:count], y=data["y"][:count])
    print(f"wrote {target} ({sum(p.stat().st_size for p in target.iterdir()) / 2**20:.1f} MiB)")
    # the reference AutoAttack is not on the device machine: its code travels in .pylib/ (without its 44 MB examples)
    try:
        import shutil

        import pyautoattack

        shutil.copytree(
            Path(pyautoattack.__file__).parent,
            ROOT / ".pylib" / "pyautoattack",
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("examples", "__pycache__"),
        )
        print(f"copied pyautoattack into {ROOT / '.pylib'}")
    except ImportError:
        print("pyautoattack is not installed here: the reference comparison will be skipped on the device")


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> str:
    np.savez(path, x=x, y=y.astype(np.int64))
    return str(path)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_pgd_training(
    x: np.ndarray,
    y: np.ndarray,
    device: torch.device,
    batch_size: int,
    eps: float,
    steps: int,
    amp: torch.dtype | None,
    channels_last: bool,
    arch: str,
    seed: int = 0,
) -> float:
    """Images/s of the irreducible work: the timm model, PGD-``steps`` on each batch, one SGD step; nothing else."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=10).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(y.astype(np.int64))
    autocast = (
        (lambda: torch.autocast(device.type, dtype=amp))
        if amp
        else (lambda: torch.autocast(device.type, enabled=False))
    )
    synchronize(device)
    started, seen = time.perf_counter(), 0
    for start in range(0, len(images) - batch_size + 1, batch_size):
        xb = images[start : start + batch_size].to(device).float().div_(255)
        yb = labels[start : start + batch_size].to(device)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        delta = torch.empty_like(xb).uniform_(-eps, eps)
        for _ in range(steps):
            delta.requires_grad_(True)
            with autocast():
                loss = F.cross_entropy(model((xb + delta).clamp(0, 1)), yb)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + eps / 4 * grad.sign()).clamp(-eps, eps)
        with autocast():
            loss = F.cross_entropy(model((xb + delta).clamp(0, 1)), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(xb)
    synchronize(device)
    return seen / (time.perf_counter() - started)


def engine_training(
    train_npz: str,
    work: Path,
    device: torch.device,
    batch_size: int,
    epochs: int,
    amp: str,
    channels_last: bool,
    tiny: bool,
    arch: str,
    tag: str,
    steps: int,
    seed: int = 0,
) -> dict[str, Any]:
    """hardenctl's engine on the same data: PGD-AT (finetune profile) from a random timm model; images/s of training."""
    import timm

    import hardenctl.api as api

    torch.manual_seed(seed)
    checkpoint = work / f"{arch}.pt"
    if not checkpoint.exists():
        torch.save(timm.create_model(arch, num_classes=10).state_dict(), checkpoint)
    out = work / f"harden-{tag}"
    started = time.perf_counter()
    options = api.HardenOptions(
        out_dir=out,
        recipe="pgd-at",
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        device=str(device),
        eval_n=8 if tiny else 64,
        eval_options={"suite": "quick", "eps": 8 / 255},
        amp=amp,
        channels_last=channels_last,
        overrides={"augment": "none", "attack_steps": steps},
    )
    result = api.harden(str(checkpoint), train_npz, options, loading=api.ModelOptions(arch=arch))
    wall = time.perf_counter() - started
    report = result.report.to_dict() if hasattr(result.report, "to_dict") else {}
    runtime, data = report.get("runtime", {}), report.get("data", {})
    train_images = int(data.get("train_n", 0)) * epochs
    seconds = float(runtime.get("train_seconds") or wall)
    return {
        "amp": runtime.get("amp", amp),
        "channels_last": channels_last,
        "epochs": epochs,
        "train_images": train_images,
        "train_seconds": seconds,
        "images_per_s": train_images / seconds if seconds else None,
        "wall_seconds": wall,
        "model": str(out / "model.safetensors"),
        "hardened": {k: report.get("hardened", {}).get(k) for k in ("clean_accuracy", "robust_accuracy", "n")},
    }


def our_suite(
    model_path: str, test_npz: str, n: int, device: torch.device, precision: str | None, tiny: bool
) -> dict[str, Any]:
    import hardenctl.api as api

    options: dict[str, Any] = {
        "n": n,
        "suite": "standard",
        "eps": 8 / 255,
        "seed": 0,
        "batch_size": "auto",
        "precision": precision or "fp32",
    }
    if tiny:
        options.update(apgd_steps=5, square_queries=20)
    model = api.load_model(model_path, device=str(device))
    synchronize(device)
    started = time.perf_counter()
    report = api.evaluate(model, test_npz, run=api.EvalRun(pictures=0), **options)
    synchronize(device)
    return {
        "seconds": time.perf_counter() - started,
        "clean_accuracy": report.clean_accuracy,
        "robust_accuracy": report.robust_accuracy,
        "attacks": report.attacks,
        "n": report.n,
        "precision": precision or "fp32",
        "checks_passed": all(c.passed for c in report.checks),
        "execution": report.execution,
        "work": report.work,
        "robust_indices": [i for i, robust in enumerate(report.samples.robust) if robust] if report.samples else None,
    }


def reference_autoattack(model_path: str, test_npz: str, n: int, device: torch.device, tiny: bool) -> dict[str, Any]:
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        return {"skipped": "pyautoattack is not installed (carry its wheel: README 'GPU check')"}
    import hardenctl.api as api

    model = api.load_model(model_path, device=str(device)).eval()
    data = np.load(test_npz)
    x = torch.from_numpy(data["x"][:n]).permute(0, 3, 1, 2).float().div(255).to(device)
    y = torch.from_numpy(data["y"][:n].astype(np.int64)).to(device)
    attack = AutoAttack(model, norm="Linf", eps=8 / 255, version="standard", seed=0, device=device)
    attack.verbose = False
    if tiny:
        attack.apgd.n_iter = attack.apgd_targeted.n_iter = 5
        attack.square.n_queries = 20
    synchronize(device)
    started = time.perf_counter()
    x_adv, _ = attack.run_standard_evaluation(x, y, batch_size=500)
    synchronize(device)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        robust = float((model(x_adv).argmax(1) == y).float().mean())
        clean = float((model(x).argmax(1) == y).float().mean())
    return {"seconds": seconds, "clean_accuracy": clean, "robust_accuracy": robust, "n": n}


def step(results: dict[str, Any], name: str, deadline: float, function: Callable[[], Any]) -> Any:
    """Run one step, recording its value or its error and its seconds; skipped once the time budget is spent."""
    if time.monotonic() > deadline:
        results["steps"][name] = {"skipped": "time budget spent"}
        return None
    started = time.perf_counter()
    try:
        value = function()
        results["steps"][name] = {"seconds": round(time.perf_counter() - started, 2), "result": value}
        return value
    except Exception as error:  # noqa: BLE001 - one failing step must not lose the others' numbers
        results["steps"][name] = {
            "seconds": round(time.perf_counter() - started, 2),
            "error": repr(error),
            "traceback": traceback.format_exc(limit=8),
        }
        return None
    finally:
        print(f"[device_check] {name}: {json.dumps(results['steps'][name], default=str)[:400]}", flush=True)


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The targets of issue 20 as ratios measured in this run."""
    steps = results["steps"]

    def value(name: str, key: str) -> Any:
        entry = (steps.get(name) or {}).get("result") or {}
        return entry.get(key) if isinstance(entry, dict) else None

    out: dict[str, Any] = {}
    fp32, bf16cl, bare = (
        value("train_fp32", "images_per_s"),
        value("train_bf16_channels_last", "images_per_s"),
        value("train_bare", "fp32"),
    )
    if fp32 and bf16cl:
        out["train_bf16_channels_last_over_fp32"] = bf16cl / fp32  # target >= 2
    if fp32 and bare:
        out["bare_loop_over_engine_fp32"] = bare / fp32  # target <= 1.05
    ours, reference = value("suite_fp32", "seconds"), value("autoattack_reference", "seconds")
    if ours and reference:
        out["suite_fp32_over_autoattack"] = ours / reference  # target <= 0.30
    bf16 = value("suite_bf16_search", "seconds")
    if bf16 and reference:
        out["suite_bf16_over_autoattack"] = bf16 / reference
    robust_fp32, robust_bf16 = value("suite_fp32", "robust_indices"), value("suite_bf16_search", "robust_indices")
    if robust_fp32 is not None and robust_bf16 is not None:  # bf16 search must break what fp32 breaks: target <= 0
        out["bf16_search_robust_minus_fp32"] = len(robust_bf16) - len(robust_fp32)
        out["robust_under_bf16_not_fp32"] = len(set(robust_bf16) - set(robust_fp32))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU dry run with tiny sizes (what CI runs)")
    parser.add_argument("--data", type=Path, default=None, help="folder with CIFAR-10 train.npz/test.npz")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "device_check.json")
    parser.add_argument("--budget", type=float, default=360.0, help="seconds after which remaining steps are skipped")
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument(
        "--train-epochs", type=int, default=8, help="epochs of the adversarially trained model (step 3)"
    )
    parser.add_argument("--n", type=int, default=1000, help="test images for the suite comparison")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument(
        "--prepare-data", action="store_true", help="copy a CIFAR-10 subset into .device-data/ and stop"
    )
    args = parser.parse_args(argv)
    if args.prepare_data:
        prepare_device_data()
        return 0
    steps = 10
    if args.tiny:  # every code path, at a size a CPU runs in well under a minute
        args.train_images, args.train_epochs, args.n, args.batch_size, args.arch, steps = 64, 1, 8, 32, "test_resnet", 2
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        torch.set_num_threads(
            1
        )  # a CPU dry run beside other work: two multi-threaded processes slow each other many times over
    deadline = time.monotonic() + args.budget
    results: dict[str, Any] = {"tiny": args.tiny, "steps": {}, "env": environment(device)}
    arrays = cifar_arrays(args.data, args.tiny)
    with tempfile.TemporaryDirectory(prefix="device-check-") as tmp:
        work = Path(tmp)
        train_npz = write_npz(
            work / "train.npz", arrays["x_train"][: args.train_images], arrays["y_train"][: args.train_images]
        )
        test_npz = write_npz(work / "test.npz", arrays["x_test"][: args.n], arrays["y_test"][: args.n])
        x, y = arrays["x_train"][: args.train_images], arrays["y_train"][: args.train_images]
        on_cuda = device.type == "cuda"
        step(
            results,
            "train_bare",
            deadline,
            lambda: {
                "fp32": bare_pgd_training(x, y, device, args.batch_size, 8 / 255, steps, None, False, args.arch),
                **(
                    {
                        "bf16_channels_last": bare_pgd_training(
                            x, y, device, args.batch_size, 8 / 255, steps, torch.bfloat16, True, args.arch
                        )
                    }
                    if on_cuda
                    else {}
                ),
            },
        )

        def train(tag: str, epochs: int, amp: str, channels_last: bool) -> dict[str, Any]:
            return engine_training(
                train_npz, work, device, args.batch_size, epochs, amp, channels_last, args.tiny, args.arch, tag, steps
            )

        step(results, "train_fp32", deadline, lambda: train("fp32", 1, "off", False))
        if on_cuda:
            step(results, "train_bf16", deadline, lambda: train("bf16", 1, "bf16", False))
            step(results, "train_bf16_channels_last", deadline, lambda: train("bf16-cl", 1, "bf16", True))
        trained = step(
            results,
            "train_model",
            deadline,
            lambda: train("model", args.train_epochs, "bf16" if on_cuda else "off", on_cuda),
        )
        model_path = (trained or {}).get("model")
        if model_path:
            step(
                results,
                "suite_fp32",
                deadline,
                lambda: our_suite(model_path, test_npz, args.n, device, None, args.tiny),
            )
            if on_cuda or args.tiny:  # the CPU dry-run exercises the bf16 search too (autocast works there, slowly)
                step(
                    results,
                    "suite_bf16_search",
                    deadline,
                    lambda: our_suite(model_path, test_npz, args.n, device, "bf16", args.tiny),
                )
            step(
                results,
                "autoattack_reference",
                deadline,
                lambda: reference_autoattack(model_path, test_npz, args.n, device, args.tiny),
            )
    results["ratios"] = ratios(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(results, indent=2, default=str))
    tmp_out.replace(args.out)
    print(f"[device_check] ratios: {json.dumps(results['ratios'])}; wrote {args.out}")
    failed = [name for name, entry in results["steps"].items() if "error" in entry]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
