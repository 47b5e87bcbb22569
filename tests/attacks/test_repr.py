"""An attack's repr shows every setting it was made with (torchattacks' habit).

A report records ``attack_list`` = the attacks' reprs, and a baseline made with other attack settings is refused by
comparing them, so a setting missing from the repr would let two differently-run evaluations pass as the same.
"""

from __future__ import annotations

import inspect

import pytest

from hardenctl.attacks import APGDCE, APGDT, FGSM, PGD, Square
from hardenctl.attacks.losses import dlr
from hardenctl.attacks.suites import ReferenceAutoAttack

# A value other than the default for every constructor parameter of every attack: a parameter added to a constructor
# without a value here fails the test below (KeyError), so it is added here and to the attack's settings() too.
OTHER = {
    "norm": "l2",
    "eot_samples": 2,
    "steps": 7,
    "alpha": 0.01,
    "restarts": 3,
    "random_start": False,
    "rho": 0.5,
    "momentum": 0.6,
    "n_target_classes": 3,
    "queries": 11,
    "p_init": 0.5,
    "rescale_schedule": True,
    "seed": 5,
}
OTHER_LOSS = {PGD: dlr, APGDCE: "dlr"}


def attack_classes() -> list[type]:
    classes = [FGSM, PGD, APGDCE, APGDT, Square]
    try:
        import pyautoattack  # noqa: F401

        classes.append(ReferenceAutoAttack)
    except ImportError:  # the reference suite needs the extra; its constructor refuses without it
        pass
    return classes


@pytest.mark.parametrize("cls", attack_classes(), ids=lambda cls: cls.__name__)
def test_every_constructor_setting_changes_the_repr(cls):
    default = repr(cls(0.1))
    assert default.startswith(f"{cls.__name__}(eps=0.1, norm=linf, ")  # as reports before every setting was shown
    assert repr(cls(0.2)) != default
    for name in list(inspect.signature(cls.__init__).parameters)[2:]:  # after self and eps
        value = OTHER_LOSS[cls] if name == "loss" else OTHER[name]
        changed = repr(cls(0.1, **{name: value}))
        assert changed != default and f"{name}=" in changed, (cls.__name__, name, changed)


def test_the_repr_of_each_attack_spelled_out():
    assert repr(PGD(8 / 255, steps=10)) == (
        "PGD(eps=0.031373, norm=linf, eot_samples=1, steps=10, alpha=0.0078431, restarts=1, random_start=True, "
        "loss=cross_entropy)"
    )
    assert repr(APGDCE(0.5, "l2", 3, steps=50, loss="dlr")) == (
        "APGDCE(eps=0.5, norm=l2, eot_samples=3, steps=50, restarts=1, rho=0.75, momentum=0.75, loss=dlr)"
    )
    assert repr(APGDT(0.1, n_target_classes=4)) == (
        "APGDT(eps=0.1, norm=linf, eot_samples=1, steps=100, restarts=1, rho=0.75, momentum=0.75, n_target_classes=4)"
    )
    assert repr(Square(0.1, queries=300)) == (
        "Square(eps=0.1, norm=linf, eot_samples=1, queries=300, p_init=0.8, restarts=1, rescale_schedule=False)"
    )
    assert repr(FGSM(0.1)) == "FGSM(eps=0.1, norm=linf, eot_samples=1)"
