"""Sequential release gates (hardenctl/sequential.py): images to a decision, error rates, width, speed.

Simulates ``hardenctl eval --sequential``: a population of N per-sample results (a fixed-n run's) is visited in a
seeded random order, round by round; after each round the gate's confidence sequence (CS) is updated and the run
stops once the gate is decided. Every setting runs >= 10,000 random orders of one population whose full-run verdict
is known, so "error" means an early verdict that differs from the full run's. Binary gates are simulated through the
counts alone (the CS is a function of them): each round's count is a hypergeometric draw from what is left.
Paired drops and fractional values run the module's own vectorised betting functions over whole orders.

    OMP_NUM_THREADS=1 python benchmarks/bench_sequential.py [--sequences 10000] [--seed 0] [--quick]

Prints a Markdown section for benchmarks/RESULTS.md ("## Sequential gates"). With ``confseq`` importable (it is not
a dependency; see the module docstring), section (vii) compares it with ours.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
from scipy.stats import beta as beta_dist

from hardenctl.sequential import (
    DROP_TOLERANCE,
    BinaryWoRCS,
    BoundedWoRCS,
    beta_binomial_count_bounds,
    betting_log_capital,
    count_cut,
    plug_in_bets,
)
from hardenctl.stats import wilson_interval

ACCURACIES = (0.10, 0.20, 0.30, 0.35, 0.45, 0.55, 0.60, 0.70)  # 0.30 and 0.60: exactly 0.15 from the threshold


def round_ends(population: int, size: int) -> np.ndarray:
    """Images seen after each round (the last round may be short)."""
    ends = np.arange(size, population + 1, size)
    return ends if ends.size and ends[-1] == population else np.append(ends, population)


def binary_counts(
    rng: np.random.Generator, population: int, total: int, ends: np.ndarray, sequences: int
) -> np.ndarray:
    """Ones seen after each round for ``sequences`` random orders of a population with ``total`` ones (rounds, seqs)."""
    good, bad = np.full(sequences, total), np.full(sequences, population - total)
    seen, counts, before = np.zeros(sequences, dtype=np.int64), [], 0
    for end in ends:
        drawn = rng.hypergeometric(good, bad, end - before) if end > before else np.zeros(sequences, dtype=np.int64)
        good, bad, seen, before = good - drawn, bad - (end - before - drawn), seen + drawn, end
        counts.append(seen.copy())
    return np.array(counts)


def cs_table(population: int, ends: np.ndarray, alpha: float) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The binary CS's (lowest, highest) total for every possible count at every round end."""
    table = {}
    for end in ends:
        lows, highs = [], []
        for start in range(0, int(end) + 1, 512):  # chunks keep the (counts × unseen) matrix small
            counts = np.arange(start, min(end + 1, start + 512))
            low, high = beta_binomial_count_bounds(population, int(end), counts, alpha)
            lows.append(low)
            highs.append(high)
        table[int(end)] = (np.concatenate(lows), np.concatenate(highs))
    return table


def wilson_table(ends: np.ndarray) -> dict[int, np.ndarray]:
    """The fixed-n Wilson interval of k/n for every k at every round end (the naive rule peeks at it)."""
    return {int(n): np.array([wilson_interval(k / n, int(n)) for k in range(int(n) + 1)]) for n in ends}


def first_decisions(
    ends: np.ndarray, bounds_per_round, cut: float, at_least: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Images at the first decided round (N when never decided early) and the verdict then (+1 pass, −1 fail)."""
    flags = [((low >= cut, high < cut) if at_least else (high <= cut, low > cut)) for low, high in bounds_per_round]
    return first_verdicts(ends, flags)


def first_verdicts(ends: np.ndarray, flags) -> tuple[np.ndarray, np.ndarray]:
    """From per-round (passed, failed) flags: the first round with exactly one of them (both: an empty CS)."""
    decided_at = np.full(flags[0][0].shape, int(ends[-1]))
    verdict = np.zeros(flags[0][0].shape, dtype=np.int8)
    for end, (passed, failed) in zip(ends, flags):
        new = (verdict == 0) & (passed != failed)
        decided_at[new], verdict[new] = end, np.where(passed[new], 1, -1)
    return decided_at, verdict


def binary_run(rng, population, total, cut, size, sequences, table, naive: dict | None = None):
    """(decided_at, verdict) for the CS rule, and for the naive Wilson-peeking rule when ``naive`` is given."""
    ends = round_ends(population, size)
    counts = binary_counts(rng, population, total, ends, sequences)
    ours = first_decisions(ends, [(table[int(e)][0][c], table[int(e)][1][c]) for e, c in zip(ends, counts)], cut)
    if naive is None:
        return ours, None
    mean_cut = cut / population  # the naive rule: stop when the Wilson interval at n excludes the full-run cut
    peeks = [
        ((naive[int(e)][c, 0], naive[int(e)][c, 1]) if e < population else (c / e, c / e)) for e, c in zip(ends, counts)
    ]
    return ours, first_decisions(ends, peeks, mean_cut)


def summary(decided_at: np.ndarray, verdict: np.ndarray, full_passes: bool) -> dict[str, float]:
    wrong = int(np.sum(verdict == (-1 if full_passes else 1)))
    return {
        "mean": float(decided_at.mean()),
        "median": float(np.median(decided_at)),
        "p90": float(np.percentile(decided_at, 90)),
        "max": int(decided_at.max()),
        "wrong": wrong,
        "error": wrong / decided_at.size,
        "error_upper95": clopper_pearson_upper(wrong, decided_at.size),
    }


def clopper_pearson_upper(errors: int, trials: int, level: float = 0.95) -> float:
    """One-sided upper confidence bound on an error rate from ``errors`` of ``trials`` (Monte-Carlo slack)."""
    return 1.0 if errors >= trials else float(beta_dist.ppf(level, errors + 1, trials - errors))


def decisions_section(rng, args, log) -> list[str]:
    """(i) images to a decision and (ii)/(iv) error rates, binary robust-accuracy gate at 0.45."""
    population, threshold = 1000, 0.45
    lines = [
        "### (i) Images to a decision, N = 1,000, gate `--min-robust-acc 0.45`",
        "",
        f'{args.sequences:,} random orders per row; "decided early" = stopped before the 1,000th image.',
        "",
        "| basis | round | true acc | cut (total) | mean | median | p90 | max | decided early | wrong |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in args.round_sizes:
        ends = round_ends(population, size)
        table = cs_table(population, ends, args.alpha)
        for basis in ("point", "lower"):
            cut = count_cut(threshold, basis, population)
            for accuracy in ACCURACIES:
                total = int(round(accuracy * population))
                (at, verdict), _ = binary_run(rng, population, total, cut, size, args.sequences, table)
                s = summary(at, verdict, total >= cut)
                lines.append(
                    f"| {basis} | {size} | {accuracy:.2f} | {cut} | {s['mean']:.0f} | {s['median']:.0f} | "
                    f"{s['p90']:.0f} | {s['max']} | {np.mean(at < population):.1%} | {s['wrong']} |"
                )
        log(f"(i) rounds of {size} done")
    return lines + [""]


def boundary_section(rng, args, log) -> list[str]:
    """(ii) error rates at and near the cut, ours against (iv) the naive Wilson-peeking rule."""
    population, threshold = 1000, 0.45
    lines = [
        "### (ii) Error rate at the threshold, and (iv) the naive rule",
        "",
        "Populations whose full-run total is at the cut (pass) or one below (fail), and ±5, ±15 around it. "
        '"wrong" = early verdict differs from the full run\'s; upper95 = one-sided 95% Clopper–Pearson bound '
        f"on the rate from {args.sequences:,} orders. Naive: stop when the fixed-n 95% Wilson interval at the "
        "current n excludes the cut (cut/N).",
        "",
        "| basis | round | total (cut) | full verdict | ours: wrong | ours: upper95 | naive: wrong | naive: upper95 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    worst_ours, worst_naive = 0.0, 0.0
    for size in args.round_sizes:
        ends = round_ends(population, size)
        table, naive = cs_table(population, ends, args.alpha), wilson_table(ends[ends < population])
        for basis in ("point", "lower"):
            cut = count_cut(threshold, basis, population)
            for total in (cut - 15, cut - 5, cut - 1, cut, cut + 5, cut + 15):
                (at, verdict), (naive_at, naive_verdict) = binary_run(
                    rng, population, total, cut, size, args.sequences, table, naive
                )
                ours, theirs = summary(at, verdict, total >= cut), summary(naive_at, naive_verdict, total >= cut)
                worst_ours, worst_naive = max(worst_ours, ours["error"]), max(worst_naive, theirs["error"])
                lines.append(
                    f"| {basis} | {size} | {total} ({cut}) | {'pass' if total >= cut else 'fail'} | "
                    f"{ours['error']:.2%} | {ours['error_upper95']:.2%} | {theirs['error']:.2%} | "
                    f"{theirs['error_upper95']:.2%} |"
                )
        log(f"(ii) rounds of {size} done")
    lines += ["", f"Worst error rate: ours {worst_ours:.2%}, naive {worst_naive:.2%} (alpha {args.alpha})."]
    return lines + [""]


def width_section(rng, args, log) -> list[str]:
    """(iii) CS width at n against the fixed-n Wilson interval (and Wilson with the finite-population correction)."""
    lines = [
        "### (iii) Width at n: what anytime validity costs",
        "",
        "Width of the 95% CS for the full run's accuracy after n images with 45% (and 10%) robust, against the "
        "fixed-n Wilson interval at n (for the model's accuracy on the data distribution: the gate's "
        "`--gate-on lower` interval) and Wilson × √((N−n)/(N−1)) (the fixed-n WoR interval for the full run's "
        "accuracy, the fair comparison). Betting = our bounded CS on the same 0/1 values (median of 21 orders).",
        "",
        "| N | n | p | CS (beta-binomial) | betting CS | Wilson | Wilson·fpc | CS / Wilson | CS / Wilson·fpc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for population in (1000, 10000):
        for p in (0.45, 0.10):
            population_values = np.zeros(population)
            population_values[: int(round(p * population))] = 1.0
            orders = [rng.permutation(population_values) for _ in range(21)]
            for n in (100, 250, 500, 1000):
                successes = int(round(p * n))
                low, high = beta_binomial_count_bounds(population, n, successes, args.alpha)
                ours = (high[0] - low[0]) / population
                betting = []
                for order in orders:
                    sequence = BoundedWoRCS(population, args.alpha)
                    sequence.update(order[:n])
                    betting.append(np.subtract(*sequence.bounds()[::-1]))
                w_low, w_high = wilson_interval(successes / n, n)
                wilson = w_high - w_low
                fpc = wilson * math.sqrt((population - n) / (population - 1))
                ratio_fpc = f"{ours / fpc:.2f}" if fpc > 0 else "— (both exact)" if ours == 0 else "∞"
                lines.append(
                    f"| {population:,} | {n:,} | {p:.2f} | {ours:.3f} | {np.median(betting):.3f} | "
                    f"{wilson:.3f} | "
                    f"{fpc:.3f} | {ours / wilson:.2f} | {ratio_fpc} |"
                )
        log(f"(iii) N = {population} done")
    return lines + [""]


def paired_population(
    population: int, discordant: float, drop: float, baseline: float = 0.5
) -> tuple[np.ndarray, np.ndarray] | None:
    """(baseline robust, d = baseline − new) for b − c = drop·N, b + c = discordant·N; None when infeasible."""
    regressed = int(round((discordant + drop) * population / 2))
    improved = regressed - int(round(drop * population))
    base_ones = int(round(baseline * population))
    if improved < 0 or regressed > base_ones or improved > population - base_ones:
        return None
    base = np.zeros(population)
    base[:base_ones] = 1.0
    d = np.zeros(population)
    d[:regressed] = 1.0  # regressed: robust in the baseline, not now
    d[base_ones : base_ones + improved] = -1.0  # improved: the reverse
    return base, d


def betting_decisions(
    orders: np.ndarray, cut: float, at_least: bool, ends: np.ndarray, alpha: float, population: int
) -> tuple[np.ndarray, np.ndarray]:
    """BoundedWoRCS.decide at every round end, vectorised over orders of values already scaled to [0, 1]."""
    bets = plug_in_bets(orders, alpha)
    log_up, log_down = betting_log_capital(orders, bets, cut, population)
    seen = np.cumsum(orders, axis=1)
    threshold = math.log(2 / alpha)
    flags = []
    for end in ends:
        lowest, highest = seen[:, end - 1] / population, (seen[:, end - 1] + population - end) / population
        if end == population:  # the exact mean: the full run's verdict
            flags.append((lowest >= cut, lowest < cut) if at_least else (lowest <= cut, lowest > cut))
            continue
        up, down = log_up[:, end - 1] >= threshold, log_down[:, end - 1] >= threshold
        if at_least:
            flags.append(((cut <= lowest) | up, (cut > highest) | down))
        else:
            flags.append(((cut >= highest) | down, (cut < lowest) | up))
    return first_verdicts(ends, flags)


def paired_section(rng, args, log) -> list[str]:
    """(v) the paired --max-drop 0.01 gate: our betting CS on d against the beta-binomial CS on the new total."""
    population, max_drop, size = 1000, 0.01, 50
    ends = round_ends(population, size)
    table = cs_table(population, ends, args.alpha)
    lines = [
        "### (v) Paired gate `--baseline … --max-drop 0.01`, N = 1,000, rounds of 50, baseline robust 50%",
        "",
        "d_i = baseline_i − new_i ∈ {−1, 0, 1}; discordant = (b + c)/N. Betting = our bounded CS on d over "
        "[−1, 1] (cut max_drop + 1e-12). Beta-binomial = the binary CS on the new model's robust total, since "
        "with the baseline known for all N, (b − c)/N = (baseline total − new total)/N: the same gate as a cut "
        "on the new total (it could share the robust-accuracy CS's alpha).",
        "",
        "| drop | discordant | full verdict | betting: mean | median | p90 | wrong | beta-binomial: mean | median "
        "| p90 | wrong |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cases = [(drop, disc) for disc in (0.05, 0.10, 0.15) for drop in (0.0, 0.01, 0.05, 0.10) if drop <= disc]
    cases += [(0.011, 0.10)]  # one pair over the line: b − c = 11 (fail) next to 10 (pass)
    for drop, discordant in cases:
        made = paired_population(population, discordant, drop)
        if made is None:
            continue
        base, d = made
        full_passes = d.sum() / population <= max_drop + DROP_TOLERANCE
        betting_at, betting_verdict, bb_at, bb_verdict = [], [], [], []
        new_cut = next(k for k in range(population + 1) if (base.sum() - k) / population <= max_drop + DROP_TOLERANCE)
        for start in range(0, args.sequences, 1000):
            count = min(1000, args.sequences - start)
            index = np.argsort(rng.random((count, population)), axis=1)
            z = (d[index] + 1.0) / 2.0  # d on [−1, 1] scaled to [0, 1]
            cut = (max_drop + DROP_TOLERANCE + 1.0) / 2.0
            at, verdict = betting_decisions(z, cut, False, ends, args.alpha, population)
            betting_at.append(at)
            betting_verdict.append(verdict)
            new = np.cumsum(base[index] - d[index], axis=1)[:, ends - 1].T.astype(np.int64)
            at, verdict = first_decisions(
                ends, [(table[int(e)][0][c], table[int(e)][1][c]) for e, c in zip(ends, new)], new_cut
            )
            bb_at.append(at)
            bb_verdict.append(verdict)
        ours = summary(np.concatenate(betting_at), np.concatenate(betting_verdict), full_passes)
        bb = summary(np.concatenate(bb_at), np.concatenate(bb_verdict), full_passes)
        lines.append(
            f"| {drop:.3f} | {discordant:.2f} | {'pass' if full_passes else 'fail'} | {ours['mean']:.0f} | "
            f"{ours['median']:.0f} | {ours['p90']:.0f} | {ours['wrong']} | {bb['mean']:.0f} | "
            f"{bb['median']:.0f} | "
            f"{bb['p90']:.0f} | {bb['wrong']} |"
        )
        log(f"(v) drop {drop} discordant {discordant} done")
    return lines + [""]


def check_vectorised_matches_class(rng, alpha: float) -> None:
    """The benchmark's vectorised decisions must be BoundedWoRCS.decide's: checked on a few orders."""
    population, ends = 200, round_ends(200, 20)
    values = np.clip(np.round(rng.normal(0.1, 0.4, population)), -1, 1)
    orders = np.array([rng.permutation(values) for _ in range(8)])
    for at_least in (True, False):
        cut = float(values.mean()) + 0.15 * (1 if at_least else -1)
        at, verdict = betting_decisions((orders + 1) / 2, (cut + 1) / 2, at_least, ends, alpha, population)
        for row, order in enumerate(orders):
            sequence, first = BoundedWoRCS(population, alpha, -1.0, 1.0), (population, 0)
            for start, end in zip(np.concatenate([[0], ends[:-1]]), ends):
                sequence.update(order[start:end])
                decision = sequence.decide(cut, at_least)
                if decision is not None:
                    first = (int(end), 1 if decision == "pass" else -1)
                    break
            assert first == (int(at[row]), int(verdict[row])), (row, first, at[row], verdict[row])


def best_of(repeats: int, run) -> float:
    """Fastest of ``repeats`` timed calls (seconds): the least disturbed by other work on the machine."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def speed_section(args, log) -> list[str]:
    """(vi) seconds per round: one update of 50 images plus reading the bounds, and one decision."""
    lines = [
        "### (vi) Speed per round (one core, fastest of 5)",
        "",
        "| sequence | N | after n | update (50) + bounds | decide |",
        "|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(args.seed)
    for population in (1000, 10000):
        for n in (population // 10, population // 2):

            def binary_round() -> BinaryWoRCS:
                sequence = BinaryWoRCS(population, args.alpha)
                sequence.update(int(0.45 * (n - 50)), n - 50)
                sequence.update(22, 50)
                sequence.count_bounds()
                return sequence

            binary, cut = binary_round(), count_cut(0.45, "point", population)
            lines.append(
                f"| binary (beta-binomial) | {population:,} | {n:,} | "
                f"{best_of(5, binary_round) * 1e3:.2f} ms | "
                f"{best_of(5, lambda: binary.decide(cut)) * 1e3:.2f} ms |"
            )
            values = rng.random(n)
            bounded = [BoundedWoRCS(population, args.alpha) for _ in range(5)]
            for sequence in bounded:
                sequence.update(values[:-50])
            pending = iter(bounded)

            def bounded_round() -> None:
                sequence = next(pending)
                sequence.update(values[-50:])
                sequence.bounds()

            update_s = best_of(5, bounded_round)
            lines.append(
                f"| bounded (betting) | {population:,} | {n:,} | {update_s * 1e3:.1f} ms | "
                f"{best_of(5, lambda: bounded[0].decide(0.45)) * 1e3:.2f} ms |"
            )
    log("(vi) done")
    return lines + [""]


def confseq_section(rng, args, log) -> list[str]:
    """(vii) confseq's WoR betting CS against ours on the same orders, when confseq can be imported."""
    try:
        if not hasattr(np, "float_"):
            np.float_ = np.float64  # confseq 0.0.11 still names NumPy 1's alias (removed in NumPy 2)
        from confseq.betting import betting_cs
    except ImportError as error:
        return ["### (vii) confseq", "", f"not importable here ({error}); see the module docstring.", ""]
    population, p = 1000, 0.45
    values = np.zeros(population)
    values[: int(p * population)] = 1.0
    lines = [
        "### (vii) confseq 0.0.11 (`betting_cs`, N given, WoR, default bets, 1,000-point grid) against ours",
        "",
        "Median width over 11 orders of a 45%-robust population of N = 1,000; time = one call for the whole "
        "sequence (confseq) or one update per round of 50 plus the bounds each round (ours).",
        "",
        "| n | confseq betting | ours: betting | ours: beta-binomial |",
        "|---|---|---|---|",
    ]
    widths: dict[int, list[list[float]]] = {n: [[], [], []] for n in (100, 250, 500)}
    times = [0.0, 0.0, 0.0]
    for _ in range(11):
        order = rng.permutation(values)
        started = time.perf_counter()
        low, high = betting_cs(order, N=population, alpha=args.alpha)
        times[0] += time.perf_counter() - started
        bounded, binary = BoundedWoRCS(population, args.alpha), BinaryWoRCS(population, args.alpha)
        for end in range(50, population + 1, 50):
            started = time.perf_counter()
            bounded.update(order[end - 50 : end])
            b_low, b_high = bounded.bounds()
            times[1] += time.perf_counter() - started
            started = time.perf_counter()
            binary.update(int(order[end - 50 : end].sum()), 50)
            c_low, c_high = binary.bounds()
            times[2] += time.perf_counter() - started
            if end in widths:
                for column, width in enumerate((high[end - 1] - low[end - 1], b_high - b_low, c_high - c_low)):
                    widths[end][column].append(width)
    for n, columns in widths.items():
        lines.append(f"| {n} | " + " | ".join(f"{np.median(c):.3f}" for c in columns) + " |")
    lines += [
        "",
        f"Seconds per whole sequence of 1,000: confseq {times[0] / 11:.2f}, ours betting (20 rounds) "
        f"{times[1] / 11:.2f}, ours beta-binomial (20 rounds) {times[2] / 11:.3f}.",
    ]
    log("(vii) done")
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sequences", type=int, default=10000, help="random orders per setting (>= 10,000 for the report)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--round-sizes", type=int, nargs="+", default=[50, 25, 100])
    parser.add_argument("--quick", action="store_true", help="1,000 orders, rounds of 50 only (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sequences, args.round_sizes = 1000, [50]
    rng = np.random.default_rng(args.seed)
    started = time.time()

    def log(message: str) -> None:
        print(f"[{(time.time() - started) / 60:4.1f} min] {message}", file=sys.stderr, flush=True)

    check_vectorised_matches_class(rng, args.alpha)
    sections = [
        decisions_section(rng, args, log),
        boundary_section(rng, args, log),
        width_section(rng, args, log),
        paired_section(rng, args, log),
        speed_section(args, log),
        confseq_section(rng, args, log),
    ]
    command = " ".join(["OMP_NUM_THREADS=1 python benchmarks/bench_sequential.py", *(argv or sys.argv[1:])]).strip()
    print("## Sequential gates\n")
    print(f"`{command}` (seed {args.seed}, alpha {args.alpha}, {time.time() - started:.0f} s on one core)\n")
    for section in sections:
        print("\n".join(section))


if __name__ == "__main__":
    main()
