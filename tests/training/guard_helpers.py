"""A scripted monitor for the overfitting guard's tests, handed to ``train`` (a uniquely named module)."""

from __future__ import annotations

from hardenctl.data import load_dataset
from hardenctl.models import load_model
from hardenctl.recipes import load_recipe
from hardenctl.training import Distributed, HardenOptions, Monitoring, split_holdout, train

DIGITS = {"eps": 0.1, "attack_alpha": 0.025, "augment": "none", "monitor_n": 128}


class Scripted:
    """Held-out PGD and FGSM accuracies per epoch, handed to ``train`` as its monitor (training images: 0.5 / 0.5).

    Calls come in order: the input model (score, then fgsm), then per epoch: training images, held-out images, FGSM.
    Without a held-out split (``holdout=False``) the guard reads the training images, which then get the scripted PGD.
    """

    def __init__(self, pgd, fgsm, input_pgd=0.1, input_fgsm=0.3, holdout=True):
        self.pgd, self.fgsm_values = list(pgd), list(fgsm)
        self.input = (input_pgd, input_fgsm)
        self.holdout = holdout
        self.scores = self.fgsms = 0

    def score(self, model, data):
        if data is None:  # no held-out split
            return None, None
        self.scores += 1
        if not self.holdout:  # one call per epoch, on the training images the guard then reads
            return 0.8, self.pgd[self.scores - 1]
        if self.scores == 1:
            return 0.9, self.input[0]  # the input model, before epoch 1
        return (0.5, 0.5) if self.scores % 2 == 0 else (0.8, self.pgd[(self.scores - 3) // 2])

    def fgsm(self, model, data):
        self.fgsms += 1
        if self.holdout and self.fgsms == 1:
            return self.input[1]
        return self.fgsm_values[self.fgsms - 1 - self.holdout]


def guarded_run(tmp_path, digits_model_path, guard, scripted, epochs=4, holdout=0.2, **extra):
    recipe = load_recipe(
        "pgd-at",
        {
            **DIGITS,
            "epochs": epochs,
            "attack": "fgsm",
            "co_guard": guard,
            "batch_size": 64,
            "holdout_fraction": holdout,
            **extra,
        },
    )
    return train(
        load_model(digits_model_path),
        recipe,
        split_holdout(load_dataset("digits-train").head(320), holdout, 0),
        HardenOptions(out_dir=tmp_path, device="cpu", amp="off"),
        Distributed(),
        {},
        monitoring=Monitoring(scorer=scripted),
    )


# epoch 3 collapses: PGD 0.55 → 0.05 (a drop of 0.5 ≥ co_drop 0.2) while FGSM 0.70 → 0.75 (it did not fall)
OVERFIT = dict(pgd=[0.45, 0.55, 0.05, 0.04], fgsm=[0.60, 0.70, 0.75, 0.80])
