"""How much do our attacks cost beyond the forward+backward passes they must do?

Prints, measured in one run on one model and batch:
  * PGD-10 (ours) vs a bare loop of 10 forward+backward passes w.r.t. the input  (target ratio <= 1.05)
  * APGD-CE-100 vs 100 bare passes (APGD's bookkeeping overhead)
  * the `standard` suite: seconds per image and bare-pass equivalents per image
  * torchattacks' PGD-10 vs ours, when torchattacks is installed
  * peak resident memory of `evaluate` at two values of n (should stay flat)

    python benchmarks/bench_attacks.py [--arch resnet10t] [--batch 128] [--repeats 5] [--threads 2]

With ``--vs-autoattack`` it prints instead (issue 20) our `standard` suite next to the reference AutoAttack
`standard` (pyautoattack), run in turn in one process on the same CIFAR-10 test images, model and seed: wall
seconds, the ratio, robust accuracy, and per attack of ours the work (seconds, forward and backward
image-passes, points attacked and broken). The model is a resnet10t trained 3 clean + 4 PGD-5 epochs on the
CIFAR-10 subset, cached under benchmarks/out/ (git-ignored) after the first run (~20 min on 1 busy core).

    python benchmarks/bench_attacks.py --vs-autoattack [--vs-n 200] [--threads 2] [--order ours,reference,plain]

``plain`` is ours with the speed-ups off (no inference copy, APGD keeps fooled points in its batch).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from common import CIFAR, CIFAR_MEAN, CIFAR_STD, ROOT, median_seconds

from hardenctl.attacks import APGDCE, APGDT, PGD, Square
from hardenctl.data import ArrayDataset, load_dataset
from hardenctl.demo import train_clean
from hardenctl.evaluation import EvalConfig, evaluate
from hardenctl.models import create_timm_model, wrap_model


def make_model(arch: str):
    torch.manual_seed(0)
    net = create_timm_model(arch, num_classes=10, in_chans=3)
    return wrap_model(net, arch, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()


def bare_loop(model, x, y, passes: int) -> None:
    """The irreducible work of a K-step gradient attack: K forward+backward passes to the input."""
    for _ in range(passes):
        x_var = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_var), y)
        torch.autograd.grad(loss, x_var)


def peak_rss_mb(arch: str, n: int) -> tuple[float, float]:
    """Peak RSS (MB) of a fresh process before and after it evaluates n images (PGD-20, batches of 64)."""
    code = (
        "import resource, torch, sys; sys.path.insert(0, 'benchmarks'); from bench_attacks import *; "
        f"m = make_model('{arch}'); torch.manual_seed(1); x = torch.rand({n}, 3, 32, 32)\n"
        "with torch.no_grad(): y = torch.cat([m(x[i:i + 64]).argmax(1) for i in range(0, len(x), 64)])\n"
        "d = ArrayDataset((x * 255).to(torch.uint8), y, [str(i) for i in range(10)], 'bench'); del x\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "evaluate(m, d, EvalConfig(attacks=['pgd'], n=None, batch_size=64, large_eps_samples=0))\n"
        "print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = out.stdout.strip().splitlines()[-1].split()
    return float(before), float(after)


ROBUST_CACHE = ROOT / "benchmarks" / "out" / "pgd_resnet10t_cifar10.pt"


def robust_model(clean_epochs: int = 3, pgd_epochs: int = 4):
    """A PGD-trained resnet10t (CIFAR-10 normalisation): trained once, then read from ROBUST_CACHE."""
    torch.manual_seed(0)
    model = wrap_model(
        create_timm_model("resnet10t", num_classes=10, in_chans=3), "resnet10t", 10, CIFAR_MEAN, CIFAR_STD
    )
    if ROBUST_CACHE.is_file():
        model.load_state_dict(torch.load(ROBUST_CACHE, weights_only=True))
        return model.eval()
    data = load_dataset(str(CIFAR / "train.npz"))
    train_clean(model, data, epochs=clean_epochs, lr=2e-3, batch_size=128)
    eps = 8 / 255
    attack, optimizer = PGD(eps, steps=5, alpha=2.5 * eps / 5), torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    for epoch in range(pgd_epochs):
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), 128):
            index = order[start : start + 128]
            x, y = data.take(index).pixels(0, len(index)), data.y[index]
            x_adv = attack(model, x, y)
            model.train()
            loss = F.cross_entropy(model(x_adv), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        print(f"PGD-AT epoch {epoch}: last batch loss {loss.item():.3f}", flush=True)
    ROBUST_CACHE.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), ROBUST_CACHE)
    return model.eval()


def our_standard(model, x, y, optimised: bool, seed: int = 0):
    """Our `standard` suite as evaluate runs it (each attack on the points still robust), with its work per attack."""
    torch.manual_seed(seed)
    started = time.perf_counter()
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    rows = []
    for attack in (APGDCE(8 / 255), APGDT(8 / 255), Square(8 / 255)):
        attack.fast = optimised
        attack.drop_fooled = optimised  # read by APGD only
        index = robust.nonzero().squeeze(1)
        if index.numel():
            x_adv = attack(model, x[index], y[index])
            with torch.no_grad():
                robust[index[model(x_adv).argmax(1) != y[index]]] = False
        work = attack.work
        rows.append(
            f"    {attack.name:8s} {work.seconds:7.1f} s  forward {work.forward:7d}  backward {work.backward:7d}  "
            f"attacked {work.attacked:4d}  broken {work.broken:4d}  {attack.fast_fallback}"
        )
    return time.perf_counter() - started, float(robust.float().mean()), rows


def reference_standard(model, x, y, seed: int = 0):
    """pyautoattack's AutoAttack `standard` (APGD-CE, APGD-T, FAB-T, Square), one batch."""
    from pyautoattack import AutoAttack

    started = time.perf_counter()
    runner = AutoAttack(model, norm="Linf", eps=8 / 255, version="standard", seed=seed, device="cpu")
    x_adv, _ = runner.run_standard_evaluation(x.contiguous(), y.contiguous(), batch_size=x.shape[0])
    with torch.no_grad():
        return time.perf_counter() - started, float((model(x_adv).argmax(1) == y).float().mean())


def vs_autoattack(n: int, order: list[str]) -> None:
    """Ours vs the reference, run in turn in this process: only the ratios mean much on a shared machine."""
    model = robust_model()
    test = load_dataset(str(CIFAR / "test.npz"), n=n)
    x, y = test.pixels(0, n), test.y
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    print(
        f"resnet10t PGD-trained, CIFAR-10 test[:{n}], clean {clean:.3f}, L-inf 8/255, seed 0, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        flush=True,
    )
    seconds: dict[str, float] = {}
    for what in order:
        if what == "reference":
            seconds[what], robust = reference_standard(model, x, y)
            print(f"reference AutoAttack standard {seconds[what]:7.1f} s  robust {robust:.3f}", flush=True)
        else:
            seconds[what], robust, rows = our_standard(model, x, y, optimised=what == "ours")
            print(f"{what:29s} {seconds[what]:7.1f} s  robust {robust:.3f}", flush=True)
            print("\n".join(rows), flush=True)
    if "reference" in seconds:
        for what in seconds.keys() - {"reference"}:
            print(f"{what} / reference: {seconds[what] / seconds['reference']:.2f}  (target <= 0.45, stretch <= 0.30)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet10t")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--suite-images", type=int, default=64)
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--vs-autoattack", action="store_true", help="our standard suite next to the reference")
    parser.add_argument("--vs-n", type=int, default=200, help="images for --vs-autoattack")
    parser.add_argument("--order", default="ours,reference,plain", help="runs for --vs-autoattack, in this order")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.vs_autoattack:
        vs_autoattack(args.vs_n, args.order.split(","))
        return
    model = make_model(args.arch)
    if (CIFAR / "train.npz").is_file():
        # A briefly trained model on real images: an untrained net is near-constant, which makes
        # it look "robust" and sends every point through all of Square's queries.
        started = time.perf_counter()
        train_clean(model, load_dataset(str(CIFAR / "train.npz")), epochs=args.train_epochs, lr=2e-3, batch_size=128)
        test = load_dataset(str(CIFAR / "test.npz"), n=args.batch)
        x, y = test.pixels(0, args.batch), test.y
        with torch.no_grad():
            accuracy = float((model(x).argmax(1) == y).float().mean())
        seconds = time.perf_counter() - started
        source = (
            f"CIFAR-10 test[:{args.batch}], model trained {args.train_epochs} epochs ({seconds:.0f} s), "
            f"clean acc {accuracy:.2f}"
        )
    else:
        torch.manual_seed(0)
        x = torch.rand(args.batch, 3, 32, 32)
        with torch.no_grad():
            y = model(x).argmax(1)
        source = "random images (../shared/data/cifar10 absent), labels = the untrained model's predictions"
    eps = 8 / 255
    print(
        f"model {args.arch} 32x32, batch {args.batch}, {args.threads} threads, torch {torch.__version__}, median of "
        f"{args.repeats}"
    )
    print(f"data: {source}")

    pgd = PGD(eps, steps=10)
    t_pgd = median_seconds(lambda: pgd(model, x, y), args.repeats)
    t_bare10 = median_seconds(lambda: bare_loop(model, x, y, 10), args.repeats)
    print(
        f"PGD-10      {t_pgd:8.3f} s   bare 10 fwd+bwd {t_bare10:8.3f} s   "
        f"ratio {t_pgd / t_bare10:.3f}  (target <= 1.05)"
    )

    apgd = APGDCE(eps, steps=100)
    t_apgd = median_seconds(lambda: apgd(model, x, y), max(1, args.repeats // 2))
    t_bare100 = t_bare10 * 10
    print(f"APGD-CE-100 {t_apgd:8.3f} s   bare 100 fwd+bwd {t_bare100:7.3f} s   ratio {t_apgd / t_bare100:.3f}")

    try:
        import torchattacks

        theirs = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10, random_start=True)
        t_theirs = median_seconds(lambda: theirs(x, y), args.repeats)
        print(f"torchattacks PGD-10 {t_theirs:8.3f} s   ours/theirs {t_pgd / t_theirs:.3f}")
    except ImportError:
        print("torchattacks not installed: skipped the comparison")

    n = args.suite_images
    data = ArrayDataset((x[:n] * 255).round().to(torch.uint8), y[:n].clone(), [str(i) for i in range(10)], "bench")
    start = time.perf_counter()
    report = evaluate(model, data, EvalConfig(suite="standard", n=None, batch_size=n, large_eps_samples=0))
    t_suite = time.perf_counter() - start
    per_pass = t_bare10 / 10 / args.batch
    print(
        f"standard suite on {n} images: {t_suite / n:.3f} s/image = {t_suite / n / per_pass:.0f} bare fwd+bwd per "
        f"image (clean {report.clean_accuracy:.2f} -> robust {report.robust_accuracy:.2f})"
    )

    for n_images in (128, 1024):
        before, after = peak_rss_mb(args.arch, n_images)
        print(
            f"peak RSS, evaluate n={n_images}: {before:.0f} MB after loading -> {after:.0f} MB after evaluating "
            f"(+{after - before:.0f} MB)"
        )


if __name__ == "__main__":
    main()
