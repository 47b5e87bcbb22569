"""The one training engine every recipe runs on, one concern per module.

Why one engine: what makes adversarial training *correct and repeatable* is the same for every recipe — the
attack runs with the model in ``eval()`` mode and the loss in ``train()`` mode, every random draw is seeded,
checkpoints are atomic so a killed run resumes to the same weights, the best epoch is chosen on held-out data
(robust overfitting), and the input and hardened models are evaluated with the same attacks, seed and
samples. A recipe (:mod:`hardenctl.recipes`) only states its loss.

``runtime`` (options, DDP, AMP, seeds, feedback) · ``data_prep`` (held-out split, augmentation) · ``plan`` (the
epochs' plan and the run's context) · ``schedule`` (optimiser, lr) · ``resolve`` (a profile's ``auto`` values,
``--reinit``, ε warm-up) · ``steps`` (training attack and step, monitor scores) · ``monitoring`` (the monitor as an
object, the input model's scores) · ``guard`` (catastrophic overfitting of FGSM training) · ``selection`` (which epoch
ships) · ``checkpoints`` (resume, run key, log) · ``epoch`` (one epoch of steps, the checkpointed state, EMA) ·
``lr_sweep`` (``lr: auto``) · ``loop`` (``train``) · ``report`` (``HardenReport``) · ``final_evaluation`` (the
input and saved models evaluated alike) · ``outputs`` (the saved model, report and files of --out) · ``engine``
(``harden``: the whole job).
"""

from .checkpoints import (
    TrainResult,
    check_resume_key,
    checkpoint_path,
    latest_checkpoint,
    read_checkpoint_state,
    run_key,
)
from .data_prep import DataSplit, augment, check_data, holdout_count, split_holdout
from .engine import harden, travelling_names
from .final_evaluation import FinalEvaluation, same_evaluation
from .guard import Decision, decide, verdict
from .loop import train
from .monitoring import InputScores, Monitor, Monitoring, measure_input
from .outputs import HardenResult
from .plan import EpochPlan, RunContext
from .report import HardenReport, describe_epoch, percent
from .resolve import reinitialise, resolve_config, resolve_recipe, training_eps, wants_adamw
from .runtime import Distributed, Feedback, HardenOptions, resolve_amp, step_seed
from .schedule import build_optimizer, learning_rate
from .selection import SavedEpoch, choose_saved_epoch, healthy_epochs, select_best
from .steps import TrainingPGD, clean_and_pgd_accuracy, fgsm_accuracy, training_attack, training_step

__all__ = [
    "DataSplit",
    "Decision",
    "Distributed",
    "EpochPlan",
    "Feedback",
    "FinalEvaluation",
    "HardenOptions",
    "HardenReport",
    "HardenResult",
    "InputScores",
    "Monitor",
    "Monitoring",
    "RunContext",
    "SavedEpoch",
    "TrainResult",
    "TrainingPGD",
    "augment",
    "build_optimizer",
    "check_data",
    "check_resume_key",
    "checkpoint_path",
    "choose_saved_epoch",
    "clean_and_pgd_accuracy",
    "decide",
    "describe_epoch",
    "fgsm_accuracy",
    "harden",
    "healthy_epochs",
    "holdout_count",
    "latest_checkpoint",
    "learning_rate",
    "measure_input",
    "percent",
    "read_checkpoint_state",
    "reinitialise",
    "resolve_amp",
    "resolve_config",
    "resolve_recipe",
    "run_key",
    "same_evaluation",
    "select_best",
    "split_holdout",
    "step_seed",
    "train",
    "training_attack",
    "training_eps",
    "training_step",
    "travelling_names",
    "verdict",
    "wants_adamw",
]
