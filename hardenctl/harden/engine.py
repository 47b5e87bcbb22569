"""The whole job: check everything a user can get wrong, train, export, evaluate input and result, write --out."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ..version import __version__
from ..data import ImageDataset
from ..errors import UserError
from ..evaluate import EvalConfig, evaluate
from ..files import atomic_write, sha256_file
from ..models import ImageClassifier, resolve_device, save_model, write_config_json
from ..recipes import Recipe
from .checkpoints import TrainResult, _run_key, checkpoint_path, latest_checkpoint, read_checkpoint_state, write_train_log
from .data_prep import check_data, split_holdout
from .guard import guard_active
from .loop import measure_input, train
from .resolve import reinitialise, resolve_recipe
from .report import HardenReport
from .runtime import Distributed, Log, RunOptions, TrainProgress, amp_label, resolve_amp


@dataclass
class HardenResult:
    report: HardenReport
    model_path: Path
    out_dir: Path


def _same_evaluation(report: Any, info: Any, data: ImageDataset, config: EvalConfig) -> bool:
    """Whether ``report`` evaluated this model on these samples with these attacks, seed and ε.

    A report does not record APGD steps or Square queries: the caller vouches for those.
    """
    sha = getattr(info, "sha256", None)
    attacks = [repr(a) for a in config.build_attacks(config.eps, report.eot_samples)]
    same_settings = (report.suite, report.attack_list, report.seed, report.eps, report.norm, report.n) == (
        config.suite_name(), attacks, config.seed, config.eps, config.norm, len(data))
    wanted = {"classes": list(config.protected), "cost": float(config.protected_cost)} if config.protected else None
    has = {k: report.extra["protected"][k] for k in ("classes", "cost")} if "protected" in report.extra else None
    return sha is not None and report.model_sha256 == sha and report.data_sha256 == data.sha256() and same_settings and wanted == has


def check_out_dir(out_dir: Path, resume: bool) -> None:
    """Refuse to mix two runs in one directory."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file", "pass a directory")
    if resume:
        return
    if latest_checkpoint(out_dir) is not None or (out_dir / "model.safetensors").exists():
        raise UserError(f"--out {out_dir} already holds a harden run", "pass --resume to continue it, or a new --out directory")


def _resolved_recipe_yaml(recipe: Recipe, decisions: list[str] | None = None) -> str:
    """The recipe as it ran: its profile and every value, ``auto`` ones decided; loads again with ``--recipe PATH``."""
    values = recipe.config.to_dict()
    header = (f"# resolved recipe written by hardenctl {__version__} (from {recipe.source or recipe.name}, profile "
              f"{values['profile']}, with --profile/--set/--epochs/--batch-size/--lr applied); usable as --recipe PATH\n")
    header += "".join(f"# {line}\n" for line in decisions or [])
    return header + yaml.safe_dump({"recipe": recipe.name, "profile": values.pop("profile"), **values}, sort_keys=False)


def harden(model: ImageClassifier, recipe: Recipe, train_data: ImageDataset, eval_data: ImageDataset | None,
           options: RunOptions, progress: TrainProgress | None = None, log: Log | None = None) -> HardenResult | None:
    """Train ``model`` with ``recipe``, then evaluate input and result and write ``options.out_dir``.

    Everything a user can get wrong is checked before the first file is written. Returns None
    on DDP ranks other than 0, which write nothing.
    """
    decisions = resolve_recipe(recipe, model)  # `auto` optimizer/lr/weight decay, decided for this model
    config = recipe.config
    dist = Distributed.from_env()
    if config.batch_size % dist.world_size:
        raise UserError(f"batch_size {config.batch_size} does not split over {dist.world_size} processes",
                        f"pass a --batch-size divisible by {dist.world_size}")
    check_data(train_data, eval_data, config.holdout_fraction)
    train_set, holdout = split_holdout(train_data, config.holdout_fraction, options.seed)
    if len(train_set) < config.batch_size:
        raise UserError(f"batch_size {config.batch_size} is larger than the {len(train_set)} training images",
                        f"pass --batch-size {max(1, len(train_set) // 2)} or more data")
    if eval_data is None and holdout is None:
        raise UserError("no evaluation data: holdout_fraction is 0 and --eval-data is not given",
                        "pass --eval-data or --set holdout_fraction=0.1")
    eval_config = EvalConfig(n=options.eval_n, seed=options.seed, **options.eval_options)
    if getattr(config, "protected", None):  # a cost-sensitive recipe: report its protected classes before and after
        eval_config.protected, eval_config.protected_cost = list(config.protected), float(config.cost)
    eval_config.build_attacks(eval_config.eps, 1)  # bad suite/attack names fail before any training
    check_out_dir(Path(options.out_dir), options.resume)
    device = resolve_device(options.device)
    if dist.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    resolve_amp(options.amp, device)

    input_model = copy.deepcopy(model).cpu().eval() if dist.is_main else None
    identity = getattr(train_data, "fingerprint", train_data.sha256)()  # streamed folders: files, not every pixel
    run_key = _run_key(recipe, options.seed, getattr(model.info, "sha256", None), identity)
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    if config.reinit:  # --reinit: the paper's from-scratch start, timm's init drawn from --seed (the report keeps the input's column)
        reinitialise(model, options.seed)
    trained = recipe.prepare(model, seed=options.seed).to(device).to(memory_format=memory_format)  # new modules drawn from --seed
    if trained.info is not None and trained.info.label_names is None and getattr(train_data, "names_known", False):
        # class names travel: the hardened model knows the training data's names (api.prepare_data checked any it had)
        trained.info = dataclasses.replace(trained.info, label_names=list(train_data.class_names[:trained.info.num_classes]))
    dist.start(device)
    try:
        baseline = None
        if not (options.resume and latest_checkpoint(options.out_dir) is not None):  # a resumed run reads it from its log
            baseline = _input_baseline(input_model, recipe, holdout, options, dist, device)
        result = train(trained, recipe, train_set, holdout, options, dist, run_key, progress, log, baseline=baseline)
    finally:
        dist.close()
    if not dist.is_main:
        return None
    runtime = {"device": str(device), "world_size": dist.world_size, "amp": amp_label(resolve_amp(options.amp, device)),
               "channels_last": options.channels_last, "train_seconds": sum(h["train_seconds"] for h in result.history)}
    data = {"train": train_data.source, "train_n": len(train_set), "holdout_n": len(holdout) if holdout is not None else 0}
    return _evaluate_and_write(input_model, trained, recipe, result, eval_data if eval_data is not None else holdout,
                               eval_config, options, data, runtime, holdout is None, eval_data is None, progress, log, decisions)


def _input_baseline(input_model: ImageClassifier | None, recipe: Recipe, holdout: ImageDataset | None, options: RunOptions,
                    dist: Distributed, device: torch.device) -> tuple:
    """The input model's held-out clean, PGD (and, for the overfitting guard, FGSM) accuracy by the per-epoch monitor,
    measured once before epoch 1.

    Rank 0 holds the input model (as it was before ``--reinit`` and ``recipe.prepare``): it scores the whole held-out
    monitor set alone and the sum over processes hands every rank the same numbers.
    """
    if holdout is None:
        return measure_input(input_model, recipe, None, options, Distributed())
    local: tuple = ()
    if dist.is_main and input_model is not None:
        local = measure_input(input_model.to(device), recipe, holdout, options, Distributed())
        input_model.cpu()
    count = 3 if guard_active(recipe.config) else 2
    return tuple(dist.sum([float(v) for v in local] if local else [0.0] * count))


def _evaluate_and_write(input_model: ImageClassifier, trained: ImageClassifier, recipe: Recipe, result: TrainResult,
                        eval_set: ImageDataset, eval_config: EvalConfig, options: RunOptions, data: dict[str, Any],
                        runtime: dict[str, Any], no_holdout: bool, eval_is_holdout: bool,
                        progress: TrainProgress | None, log: Log | None, decisions: list[str] | None = None) -> HardenResult:
    """Evaluate input, saved and (when different) other candidate epoch alike; write every output file."""
    out_dir, info, config = Path(options.out_dir), input_model.info, recipe.config
    device = next(trained.parameters()).device

    def evaluate_model(candidate: nn.Module, label: str):
        if log:
            log(f"evaluating the {label} on {len(eval_set.head(options.eval_n))} images of {eval_set.source}")
        return evaluate(candidate.to(device).eval(), eval_set, eval_config, progress)

    def exported(epoch: int) -> ImageClassifier:
        """The model of a finished epoch as it would ship (``recipe.export``), not yet saved."""
        state = read_checkpoint_state(checkpoint_path(out_dir, epoch), device)
        trained.load_state_dict(state["ema"] if "ema" in state else state["model"])  # with `ema` on, the EMA weights ship
        candidate = recipe.export(copy.deepcopy(trained))
        # the info the recipe left on the model (prepare/export may record surgery there), minus the input's identity
        candidate.info = dataclasses.replace(candidate.info, path=None, sha256=None)
        return candidate

    selected = "last" if config.select == "last" or no_holdout else "best"
    selected_epoch, other_epoch = ((result.best_epoch, result.last_epoch) if selected == "best"
                                   else (result.last_epoch, result.best_epoch))
    reuse = options.input_report
    if reuse is not None and _same_evaluation(reuse, info, eval_set.head(options.eval_n), eval_config):
        before = reuse
    else:
        before = evaluate_model(input_model, "input model")
    final = exported(selected_epoch)
    after = evaluate_model(final, f"hardened model (epoch {selected_epoch})")
    report_extra = getattr(recipe, "report_extra", None)  # recipe-specific sections, e.g. cost-sensitive's Min-Max statistics
    if report_extra is not None:
        after.extra.update(report_extra(input_model, final))
    extra_evaluations = {}  # the saved model evaluated otherwise, e.g. AToP's classifier-only (BPDA) attack
    for label, overrides in getattr(recipe, "extra_evaluations", lambda _: {})(final).items():
        if log:
            log(f"evaluating the hardened model: {label}")
        extra_evaluations[label] = evaluate(final.to(device).eval(), eval_set, dataclasses.replace(eval_config, **overrides), progress)
    other = other_label = None
    if other_epoch != selected_epoch:
        other_label = f"{'last' if selected == 'best' else 'best'} (epoch {other_epoch})"
        other = evaluate_model(exported(other_epoch), f"{other_label} model")

    metadata = {
        "recipe": recipe.name, "profile": config.profile, "recipe_config": config.to_dict(), "recipe_source": recipe.source,
        "input_checkpoint_sha256": info.sha256, "epoch": selected_epoch, "selected": selected,
        "trained_by": f"hardenctl harden --recipe {recipe.name}",
    }
    model_path = save_model(final, out_dir / "model.safetensors", metadata)
    if not getattr(final, "extra_tensors", None) and not final.info.metadata.get("fsr"):
        write_config_json(final, out_dir)  # --out is a timm model folder where the architecture is unchanged
    after.model_sha256, after.model["path"] = sha256_file(model_path), str(model_path)
    selectable, selectable_label = recipe.selectable_epochs()
    notes = []
    collapses = [h["guard"] for h in result.history if h.get("collapsed")]
    notes += collapses
    if collapses and all(h.get("collapsed") for h in result.history):
        notes.append("every epoch collapsed: the saved model is a collapsed one; lower eps or lr, or use attack: fgsm-rs or pgd")
    if eval_is_holdout:
        notes.append("the report evaluates the held-out split that also picked the best epoch (pass --eval-data for an independent set)")
    if no_holdout:
        notes.append("holdout_fraction is 0: no held-out split, the last epoch is saved")
    if after.randomized:
        notes.append(f"the hardened model is randomised: its numbers use EOT over {after.eot_samples} draws (clean accuracy is the "
                     "mean over draws; a point is robust only if correct on every draw)")
    notes += [section["summary"] for section in after.extra.values() if isinstance(section, dict) and "summary" in section]
    report = HardenReport(
        recipe=recipe.name, recipe_source=str(recipe.source or recipe.name), recipe_config=config.to_dict(),
        selected=selected, selected_epoch=selected_epoch, best_epoch=result.best_epoch, last_epoch=result.last_epoch,
        input=before, hardened=after, other=other, other_label=other_label, history=result.history,
        input_checkpoint={"path": info.path, "sha256": info.sha256},
        data={**data, "eval": eval_set.source, "eval_n": after.n}, runtime=runtime,
        interpretation=recipe.interpretation, notes=notes, selected_by=recipe.selection, extra_evaluations=extra_evaluations,
        selectable_epochs=list(selectable), selectable=selectable_label, monitor_eot=recipe.monitor_eot(),
        profile=config.profile, decisions=list(decisions or []), collapses=collapses,
        planned_epochs=config.epochs, ema=config.ema,
    )
    atomic_write(out_dir / "recipe.yaml", _resolved_recipe_yaml(recipe, decisions))
    write_train_log(out_dir / "train_log.jsonl", result.history)
    atomic_write(out_dir / "report.json", report.to_json())
    atomic_write(out_dir / "report.md", report.to_markdown())
    return HardenResult(report, model_path, out_dir)
