"""The one training engine every recipe runs on, one concern per module.

Why one engine: what makes adversarial training *correct and repeatable* is the same for every recipe — the
attack runs with the model in ``eval()`` mode and the loss in ``train()`` mode, every random draw is seeded,
checkpoints are atomic so a killed run resumes to the same weights, the best epoch is chosen on held-out data
(robust overfitting), and the input and hardened models are evaluated with the same attacks, seed and
samples. A recipe (:mod:`hardenctl.recipes`) only states its loss.

``runtime`` (options, DDP, AMP, seeds) · ``data_prep`` (held-out split, augmentation) · ``schedule``
(optimiser, lr) · ``resolve`` (a profile's ``auto`` values, ``--reinit``, ε warm-up) · ``steps`` (training attack
and step, monitor) · ``monitoring`` (the monitor as an object, the input's baseline) · ``guard`` (catastrophic
overfitting of FGSM training) · ``selection`` (which epoch ships) · ``checkpoints`` (resume, run key, log) ·
``epoch`` (one epoch of steps, the checkpointed state, EMA) · ``loop`` (``train``) · ``report`` (``HardenReport``) ·
``outputs`` (evaluate and write --out) · ``engine`` (``harden``: the whole job).
"""

from .checkpoints import (
    TrainResult,
    check_resume_key,
    checkpoint_path,
    latest_checkpoint,
    read_checkpoint_state,
    run_key,
)
from .data_prep import augment, check_data, holdout_count, split_holdout
from .engine import harden, travelling_names
from .guard import Decision, decide, verdict
from .loop import train
from .monitoring import Monitor, measure_input
from .outputs import HardenResult, same_evaluation
from .report import HardenReport, describe_epoch, percent
from .resolve import reinitialise, resolve_config, resolve_recipe, training_eps, wants_adamw
from .runtime import Distributed, HardenOptions, resolve_amp, step_seed
from .schedule import build_optimizer, learning_rate
from .selection import SavedEpoch, choose_saved_epoch, healthy_epochs, select_best
from .steps import TrainingPGD, fgsm_accuracy, monitor, training_attack, training_step

__all__ = [
    "Decision",
    "Distributed",
    "HardenReport",
    "HardenResult",
    "Monitor",
    "HardenOptions",
    "SavedEpoch",
    "TrainResult",
    "TrainingPGD",
    "augment",
    "build_optimizer",
    "check_data",
    "check_resume_key",
    "checkpoint_path",
    "choose_saved_epoch",
    "decide",
    "describe_epoch",
    "harden",
    "healthy_epochs",
    "holdout_count",
    "run_key",
    "same_evaluation",
    "travelling_names",
    "verdict",
    "latest_checkpoint",
    "learning_rate",
    "monitor",
    "percent",
    "read_checkpoint_state",
    "resolve_amp",
    "select_best",
    "split_holdout",
    "step_seed",
    "train",
    "training_step",
    "fgsm_accuracy",
    "measure_input",
    "reinitialise",
    "resolve_config",
    "resolve_recipe",
    "training_attack",
    "training_eps",
    "wants_adamw",
]
