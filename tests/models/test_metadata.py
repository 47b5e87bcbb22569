"""safetensors metadata written by other tools: every spelling people use loads, anything else is a
one-line UserError naming the key (exit 2 at the CLI), never a traceback.

Header values are strings; hardenctl writes JSON, other exporters write "0.485,0.456,0.406",
"(0.5, 0.5, 0.5)", "3.0", "True" ...
"""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from safetensors.torch import save_file
from testing_helpers import read_checkpoint

from hardenctl.errors import UserError
from hardenctl.models import create_timm_model, load_model

ARCH = "test_resnet"


def write_safetensors(path, state, metadata):
    """A safetensors file as a foreign exporter writes it: the given str -> str header, nothing else."""
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="module")
def rgb_state():
    """An untrained 3-channel, 10-class test_resnet: the weights say in_chans=3 and num_classes=10."""
    torch.manual_seed(0)
    return create_timm_model(ARCH, 10, 3).state_dict()


@pytest.fixture(scope="module")
def grey_state():
    torch.manual_seed(0)
    return create_timm_model(ARCH, 10, 1).state_dict()


def load_with(tmp_path, state, **metadata):
    header = {"arch": ARCH, **metadata}
    return load_model(write_safetensors(tmp_path / "m.safetensors", state, header))


def assert_one_line_error(exc: UserError, *needles: str):
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    assert len(message) < 400, message
    for needle in needles:
        assert needle in message, message


# ---------------------------------------------------------------------------------------------
# accepted spellings, key by key
# ---------------------------------------------------------------------------------------------
RGB = (0.485, 0.456, 0.406)
MEAN_FORMS = [
    ("0.485,0.456,0.406", RGB),
    ("0.485, 0.456, 0.406", RGB),
    ("0.485 0.456 0.406", RGB),
    ("[0.485, 0.456, 0.406]", RGB),  # JSON, what hardenctl writes
    ("(0.485, 0.456, 0.406)", RGB),  # str(tuple)
    ("[0.485 0.456 0.406]", RGB),  # str(numpy array)
    ("(0.485,0.456,0.406,)", RGB),
    (" [ 0.485 , 0.456 , 0.406 ] ", RGB),
    ('["0.485", "0.456", "0.406"]', RGB),  # JSON list of numeric strings
    ('"0.485,0.456,0.406"', RGB),  # JSON-quoted text
    ("0.5", (0.5, 0.5, 0.5)),  # one value for every channel
    ("[0.5]", (0.5, 0.5, 0.5)),
    ("(0.5,)", (0.5, 0.5, 0.5)),
    ("5e-1", (0.5, 0.5, 0.5)),
    ("-0.5,0,1.5", (-0.5, 0.0, 1.5)),  # any finite mean
]
STD_FORMS = [
    ("0.229,0.224,0.225", (0.229, 0.224, 0.225)),
    ("[0.229, 0.224, 0.225]", (0.229, 0.224, 0.225)),
    ("(0.229, 0.224, 0.225)", (0.229, 0.224, 0.225)),
    ("[0.229 0.224 0.225]", (0.229, 0.224, 0.225)),
    ("0.229 0.224 0.225", (0.229, 0.224, 0.225)),
    ("0.25", (0.25, 0.25, 0.25)),
    ("[0.25]", (0.25, 0.25, 0.25)),
    ("1e-3", (0.001, 0.001, 0.001)),
]
SIZE_FORMS = [
    ("3,224,224", (224, 224)),
    ("224,224", (224, 224)),
    ("224", (224, 224)),
    ("[3, 224, 224]", (224, 224)),
    ("[224, 224]", (224, 224)),
    ("[224]", (224, 224)),
    ("(3, 32, 48)", (32, 48)),  # (C, H, W): H and W keep their order
    ("32,48", (32, 48)),
    ("3 32 48", (32, 48)),
    ("[3 32 48]", (32, 48)),
    ("224.0", (224, 224)),
    ("3.0,32.0,48.0", (32, 48)),
    ("32x48", (32, 48)),  # as --input-size takes it
    ('"3,224,224"', (224, 224)),
]
NUM_CLASSES_FORMS = ["10", "10.0", "1e1", " 10 ", '"10"', "+10"]
IN_CHANS_FORMS = ["3", "3.0", "3e0", " 3", '"3"']
RANDOMIZED_FORMS = [
    ("true", True),
    ("false", False),
    ("True", True),
    ("False", False),
    ("TRUE", True),
    ("1", True),
    ("0", False),
    (" false ", False),
    ('"true"', True),
    ('"0"', False),
]
ARCH_FORMS = [ARCH, f'"{ARCH}"', f" {ARCH} "]


@pytest.mark.parametrize("text,expected", MEAN_FORMS)
def test_mean_spellings(tmp_path, rgb_state, text, expected):
    model = load_with(tmp_path, rgb_state, mean=text, std="0.25")
    assert model.info.normalization_source == "checkpoint"
    assert model.info.mean == pytest.approx(expected) and len(model.info.mean) == 3


@pytest.mark.parametrize("text,expected", STD_FORMS)
def test_std_spellings(tmp_path, rgb_state, text, expected):
    model = load_with(tmp_path, rgb_state, mean="0.5", std=text)
    assert model.info.std == pytest.approx(expected) and model.info.normalization_source == "checkpoint"


@pytest.mark.parametrize("text,expected", SIZE_FORMS)
def test_input_size_spellings(tmp_path, rgb_state, text, expected):
    model = load_with(tmp_path, rgb_state, input_size=text)
    assert model.info.input_size == expected and model.info.input_size_source == "checkpoint"
    assert all(type(side) is int for side in model.info.input_size)


@pytest.mark.parametrize("text", NUM_CLASSES_FORMS)
def test_num_classes_spellings(tmp_path, rgb_state, text):
    model = load_with(tmp_path, rgb_state, num_classes=text)
    assert model.info.num_classes == 10 and type(model.info.num_classes) is int


@pytest.mark.parametrize("text", IN_CHANS_FORMS)
def test_in_chans_spellings(tmp_path, rgb_state, text):
    model = load_with(tmp_path, rgb_state, in_chans=text)
    assert model.info.in_chans == 3 and type(model.info.in_chans) is int


@pytest.mark.parametrize("text,expected", RANDOMIZED_FORMS)
def test_randomized_spellings(tmp_path, rgb_state, text, expected):
    assert load_with(tmp_path, rgb_state, randomized=text).info.randomized is expected


@pytest.mark.parametrize("text", ARCH_FORMS)
def test_arch_spellings(tmp_path, rgb_state, text):
    model = load_model(write_safetensors(tmp_path / "m.safetensors", rgb_state, {"arch": text}))
    assert model.info.arch == ARCH


@pytest.mark.parametrize("key", ["num_classes", "in_chans", "mean", "std", "input_size", "randomized"])
@pytest.mark.parametrize("text", ["", "  ", "null", "None"])
def test_empty_null_and_none_mean_not_declared(tmp_path, rgb_state, key, text):
    """ "", "null" and Python's str(None) say "not set": the weights, timm or defaults decide."""
    model = load_with(tmp_path, rgb_state, **{key: text})
    info = model.info
    assert (info.num_classes, info.in_chans, info.input_size, info.randomized) == (10, 3, None, False)
    assert info.normalization_source.startswith("timm")


def test_all_foreign_keys_together_match_the_hardenctl_json(tmp_path, rgb_state):
    foreign = load_with(
        tmp_path,
        rgb_state,
        num_classes="10.0",
        in_chans="3",
        mean="0.485,0.456,0.406",
        std="(0.229, 0.224, 0.225)",
        input_size="3,32,32",
        randomized="False",
    )
    (tmp_path / "json").mkdir()
    native = load_with(
        tmp_path / "json",
        rgb_state,
        num_classes="10",
        in_chans="3",
        mean=json.dumps(RGB),
        std="[0.229, 0.224, 0.225]",
        input_size="[32, 32]",
        randomized="false",
    )
    assert foreign.info.to_dict() | {"path": None, "sha256": None} == native.info.to_dict() | {
        "path": None,
        "sha256": None,
    }
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(foreign(x), native(x))


@pytest.mark.parametrize("section", ["null", "", "None", "{}"])
def test_unknown_keys_and_an_empty_hardenctl_section_are_ignored(tmp_path, rgb_state, section):
    model = load_with(
        tmp_path,
        rgb_state,
        format="pt",
        license="mit",
        foo="[[[",
        bar="9" * 5000,
        nested="[" * 5000,
        train_args="{",
        hardenctl=section,
        mean="0.5,0.5,0.5",
        std="0.5,0.5,0.5",
    )
    assert model.info.metadata == {} and model.info.mean == (0.5, 0.5, 0.5)


def test_the_hardenctl_section_keeps_what_it_records(tmp_path, rgb_state):
    section = {"recipe": "mart", "recipe_config": {"eps": 0.03, "stages": ["layer4"]}, "fsr": None, "epoch": 3}
    model = load_with(tmp_path, rgb_state, hardenctl=json.dumps(section))
    assert model.info.metadata == section


FSR = {"format": 1, "stages": ["layers.3"], "channels": [64], "hidden": 64, "tau": 0.1}
ATOP = {
    "format": 1,
    "transform": {"kind": "rt2", "sigma": 0.25, "missing_rate": 0.25, "block": 4},
    "purifier": {"channels": 3, "width": 32, "depth": 2},
}
BAD_SECTIONS = [  # (the section, the key the error names, what it says)
    ("garbage", "'hardenctl'", "not a JSON object"),
    ("[1, 2]", "'hardenctl'", "not a JSON object"),
    ("5", "'hardenctl'", "not a JSON object"),
    ("{", "'hardenctl'", "not a JSON object"),
    ("true", "'hardenctl'", "not a JSON object"),
    ('"text"', "'hardenctl'", "not a JSON object"),
    ('{"a": ' + "[" * 40 + "]" * 40 + "}", "'hardenctl'", "nested deeper than 32"),
    ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "'hardenctl'", "not a JSON object"),
    ('{"recipe_config": {"eps": NaN}}', "'hardenctl'", "NaN or infinity"),
    ('{"a": [Infinity]}', "'hardenctl'", "NaN or infinity"),
    (json.dumps({"note": "x" * (1 << 20)}), "'hardenctl'", "characters long"),
    (json.dumps({"fsr": 0}), "'hardenctl.fsr'", "not an object"),
    (json.dumps({"fsr": [1]}), "'hardenctl.fsr'", "not an object"),
    (json.dumps({"fsr": {**FSR, "hidden": 10**12}}), "'hardenctl.fsr.hidden'", "from 1 to 4096"),
    (json.dumps({"fsr": {**FSR, "hidden": 64.5}}), "'hardenctl.fsr.hidden'", "whole number"),
    (json.dumps({"fsr": {**FSR, "hidden": True}}), "'hardenctl.fsr.hidden'", "whole number"),
    (json.dumps({"fsr": {**FSR, "tau": 0}}), "'hardenctl.fsr.tau'", "a number > 0"),
    (json.dumps({"fsr": {**FSR, "tau": "0.1"}}), "'hardenctl.fsr.tau'", "a number > 0"),
    (json.dumps({"fsr": {**FSR, "stages": []}}), "'hardenctl.fsr.stages'", "stage names"),
    (json.dumps({"fsr": {**FSR, "stages": ["x"] * 65}}), "'hardenctl.fsr.stages'", "stage names"),
    (json.dumps({"fsr": {**FSR, "stages": [3]}}), "'hardenctl.fsr.stages'", "stage names"),
    (json.dumps({"fsr": {**FSR, "channels": [64, 64]}}), "'hardenctl.fsr.channels'", "per stage"),
    (json.dumps({"fsr": {**FSR, "channels": [10**9]}}), "'hardenctl.fsr.channels'", "per stage"),
    (json.dumps({"fsr": {**FSR, "format": "1"}}), "'hardenctl.fsr.format'", "whole number"),
    (json.dumps({"atop": 5}), "'hardenctl.atop'", "'transform' and 'purifier'"),
    (json.dumps({"atop": {**ATOP, "purifier": [3, 32, 2]}}), "'hardenctl.atop'", "'transform' and 'purifier'"),
    (
        json.dumps({"atop": {**ATOP, "purifier": {"channels": 3, "width": 10**6, "depth": 2}}}),
        "'hardenctl.atop.purifier'",
        "at most 16384",
    ),
    (
        json.dumps({"atop": {**ATOP, "purifier": {"channels": 3, "width": 64, "depth": 9}}}),
        "'hardenctl.atop.purifier'",
        "depth at most 8",
    ),
    (
        json.dumps({"atop": {**ATOP, "purifier": {"channels": 3, "width": 2048, "depth": 4}}}),
        "'hardenctl.atop.purifier'",
        "at most 16384",
    ),
    (
        json.dumps({"atop": {**ATOP, "purifier": {"channels": 0, "width": 32, "depth": 2}}}),
        "'hardenctl.atop.purifier'",
        "whole channels",
    ),
    (
        json.dumps({"atop": {**ATOP, "transform": {**ATOP["transform"], "block": 10**9}}}),
        "'hardenctl.atop.transform.block'",
        "whole number of pixels",
    ),
]


@pytest.mark.parametrize(
    "section,key,expect",
    BAD_SECTIONS,
    ids=[text if len(text) <= 60 else f"{text[:50]}...({len(text)} chars)" for text, _, _ in BAD_SECTIONS],
)
def test_a_malformed_hardenctl_section_is_an_error_naming_the_key(tmp_path, rgb_state, section, key, expect):
    """The section builds modules (FSR, AToP's purifier) and is copied into every model hardened from this one: a
    malformed one was skipped silently, or allocated terabytes (hidden=1e12), or crashed a later save (depth, NaN)."""
    with pytest.raises(UserError) as caught:
        load_with(tmp_path, rgb_state, hardenctl=section)
    where = f"checkpoint metadata {key}" if key == "'hardenctl'" else f"metadata is malformed: {key}"
    assert_one_line_error(caught.value, where, expect, "re-export the model with hardenctl")


LABEL_NAMES_REJECTED = [
    ("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]", "name 0 (0) is not a string"),
    ('["a", "b", "c", "d", "e", "f", "g", "h", "i", 9]', "name 9 (9) is not a string"),
    ('["a", "b", "c", "d", "e", "f", "g", "h", "i", null]', "name 9 (None) is not a string"),
    ('["a", "b", "c", "d", "e", "f", "g", "h", "i", ["j"]]', "name 9 (['j']) is not a string"),
    ('["a", "b", "c", "d", "e", "f", "g", "h", "i", " "]', "name 9 (' ') is blank"),
    (r'["a\nb", "b", "c", "d", "e", "f", "g", "h", "i", "j"]', r"holds the character '\n'"),  # JSON escapes
    (r'["\ud800", "b", "c", "d", "e", "f", "g", "h", "i", "j"]', r"holds the character '\ud800'"),
    (r'["a\u2028b", "b", "c", "d", "e", "f", "g", "h", "i", "j"]', r"holds the character '\u2028'"),
    (json.dumps(["x" * 1001] + list("bcdefghij")), "longer than 1000 characters"),
    ("[]", "not a list of class names"),
    ('{"0": "cat"}', "not a list of class names"),
    ("7", "not a list of class names"),
    ("a,,c", "is blank"),
]


@pytest.mark.parametrize("text,expect", LABEL_NAMES_REJECTED)
def test_label_names_must_be_names(tmp_path, rgb_state, text, expect):
    with pytest.raises(UserError) as caught:
        load_with(tmp_path, rgb_state, label_names=text)
    assert_one_line_error(caught.value, "checkpoint metadata 'label_names'", expect, "re-export")


@pytest.mark.parametrize("text", ['["a", "b"]', json.dumps(list("abcdefghijk"))])
def test_label_names_must_name_every_output(tmp_path, rgb_state, text):
    with pytest.raises(UserError) as caught:
        load_with(tmp_path, rgb_state, label_names=text)
    assert_one_line_error(
        caught.value, "checkpoint metadata 'label_names'", "classes but the classifier has 10 outputs"
    )


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(list("abcdefghij")),
        "a,b,c,d,e,f,g,h,i,j",
        " a , b,c,d,e,f,g,h,i,j",
        json.dumps(["猫", "犬", "Ωmega", "naïve", "a b", "c-d", "e|f", "g", "h", "ñ"]),
    ],
)
def test_label_name_spellings(tmp_path, rgb_state, text):
    names = load_with(tmp_path, rgb_state, label_names=text).info.label_names
    assert len(names) == 10 and names[0] in ("a", "猫") and all(name == name.strip() for name in names)


def test_read_checkpoint_survives_odd_header_values(tmp_path, rgb_state):
    path = write_safetensors(
        tmp_path / "m.safetensors", rgb_state, {"huge": "9" * 5000, "deep": "[" * 100_000, "mean": "0.5,0.5", "n": "10"}
    )
    _, meta = read_checkpoint(path)
    assert meta == {"huge": "9" * 5000, "deep": "[" * 100_000, "mean": "0.5,0.5", "n": 10}


# ---------------------------------------------------------------------------------------------
# rejected values: a UserError that names the key and shows the value
# ---------------------------------------------------------------------------------------------
REJECTED = [
    *[
        ("mean", t)
        for t in [
            "abc",
            "0.485;0.456;0.406",
            "1,,2",
            "0.5, 0.5 0.5",
            "[]",
            "()",
            "[[0.5]]",
            '{"r": 0.5}',
            "true",
            "NaN",
            "nan,0.5,0.5",
            "inf",
            "-Infinity",
            "1e999",
            "[1e999]",
            "[" + "9" * 400 + "]",
            "0.5,0.5,x",
            '"abc"',
            "[" * 2000,
            "1e39",
        ]
    ],
    *[("std", t) for t in ["abc", "0,0.2,0.2", "-0.2", "0", "[0.2, -0.2, 0.2]", "NaN", "inf", "[]", "1e-320", "1e-39"]],
    *[
        ("input_size", t)
        for t in [
            "abc",
            "0",
            "0,32",
            "-3,32,32",
            "32.5",
            "1,2,3,4",
            "[]",
            "[3, [32, 32]]",
            "1e9",
            "NaN",
            "true",
            '{"h": 32}',
            "32x",
            "3,32,inf",
            "9" * 5000,
        ]
    ],
    *[
        ("num_classes", t)
        for t in ["ten", "10.5", "0", "-1", "true", "[10]", "1e999", "NaN", "9" * 5000, "2000000", '{"n": 10}', "0x0a"]
    ],
    *[("in_chans", t) for t in ["three", "1.5", "0", "-3", "false", "5000", "[3]"]],
    *[("randomized", t) for t in ["yes", "maybe", "2", "-1", "0.5", "[true]", '{"a": 1}', "truee"]],
    *[("arch", t) for t in ["5", "[1]", '{"name": "resnet18"}', "true", "res net18", "res\nnet", "x" * 500, "1.5"]],
    *[("crop_pct", t) for t in ["0", "-0.5", "1.5", "1e-300", "0.001", "0.049", "NaN", "[0.9, 0.8]", "abc", "true"]],
]


@pytest.mark.parametrize("key,text", REJECTED)
def test_rejected_values_name_the_key(tmp_path, rgb_state, key, text):
    metadata = {"mean": "0.5", "std": "0.5", key: text}  # mean and std both set, so each is read
    with pytest.raises(UserError) as caught:
        load_with(tmp_path, rgb_state, **metadata)
    assert_one_line_error(caught.value, f"'{key}'", "re-export")
    if len(text) < 40:
        assert f"{key!r} is {text!r}" in str(caught.value)


@pytest.mark.parametrize(
    "key,text,expect",
    [
        ("mean", "0.5,0.5", "has 2 values but the model has 3 input channels"),
        ("mean", "0.1,0.2,0.3,0.4", "has 4 values"),
        ("std", "0.2,0.2", "has 2 values"),
        ("num_classes", "7", "is 7 but the classifier weights have 10 outputs; re-export the file with num_classes=10"),
        ("in_chans", "1", "is 1 but the first convolution takes 3 channels; re-export the file with in_chans=3"),
    ],
)
def test_metadata_contradicting_the_weights(tmp_path, rgb_state, key, text, expect):
    with pytest.raises(UserError) as caught:
        load_with(tmp_path, rgb_state, **{"mean": "0.5", "std": "0.5", key: text})
    assert_one_line_error(caught.value, f"checkpoint metadata {key!r}", expect, "re-export")


def test_garbage_mean_message_is_the_documented_one(tmp_path, rgb_state):
    with pytest.raises(UserError) as caught:
        load_with(tmp_path, rgb_state, mean="abc", std="0.5")
    assert str(caught.value) == (
        "checkpoint metadata 'mean' is 'abc', not a list of numbers; "
        "re-export the file with e.g. mean=0.485,0.456,0.406"
    )


def test_long_values_are_truncated_in_the_message(tmp_path, rgb_state):
    with pytest.raises(UserError) as caught:
        load_with(tmp_path, rgb_state, mean="a" * 10_000, std="0.5")
    assert_one_line_error(caught.value, "'mean'", "...")


# ---------------------------------------------------------------------------------------------
# end to end through the CLI
# ---------------------------------------------------------------------------------------------
def foreign_copy(digits_model_path, path, **metadata):
    state, _ = read_checkpoint(digits_model_path)
    return write_safetensors(path, state, {"arch": ARCH, **metadata})


EVAL = ("--data", "digits-test", "--n", "16", "--attacks", "fgsm", "--eps", "0.1", "--quiet")


def test_cli_evaluates_comma_separated_metadata(cli, tmp_path, digits_model_path):
    """The reported defect: mean "0.3,0.3,0.3" used to die in _fit_channels with a ValueError."""
    foreign = foreign_copy(
        digits_model_path,
        tmp_path / "foreign.safetensors",
        num_classes="10",
        in_chans="1",
        mean="0.3,0.3,0.3",
        std="(0.4, 0.4, 0.4)",
        input_size="1,8,8",
        randomized="False",
    )
    code, _, err = cli("eval", foreign, *EVAL, "--report", tmp_path / "foreign.json")
    assert code == 0, err
    code, _, err = cli("eval", digits_model_path, *EVAL, "--report", tmp_path / "native.json")
    assert code == 0, err
    got, want = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("foreign", "native"))
    for report in (got, want):
        assert report["normalization"]["source"] == "checkpoint"
        assert report["normalization"]["mean"] == [pytest.approx(0.3)] and report["normalization"]["std"] == [
            pytest.approx(0.4)
        ]
    assert got["model"]["input_size"] == [8, 8] and got["model"]["input_size_source"] == "checkpoint"
    assert got["randomized"] is False
    assert (got["clean_accuracy"], got["robust_accuracy"]) == (want["clean_accuracy"], want["robust_accuracy"])


def assert_exit_2_one_line(cli, tmp_path, checkpoint, *needles):
    out = tmp_path / "out"
    code, _, err = cli("eval", checkpoint, *EVAL, "--report", out / "report.json")
    assert code == 2, (code, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()


def test_cli_garbage_mean_is_exit_2_and_one_line(cli, tmp_path, digits_model_path):
    bad = foreign_copy(digits_model_path, tmp_path / "bad.safetensors", mean="abc", std="0.4")
    assert_exit_2_one_line(cli, tmp_path, bad, "'mean'", "'abc'", "re-export")


# ---------------------------------------------------------------------------------------------
# fuzz: whatever the header says, the answer is a model or a one-line UserError
# ---------------------------------------------------------------------------------------------
KEYS = ["mean", "std", "input_size", "num_classes", "in_chans", "randomized", "arch", "hardenctl"]
NAMED = {"mean", "std", "input_size", "num_classes", "in_chans", "randomized"}  # errors from these name the key
NASTY = [
    "",
    " ",
    "\n",
    "null",
    "None",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1e-320",
    "9" * 5000,
    "-" + "9" * 400,
    "[" * 3000,
    "{" * 3000,
    "[" * 100 + "]" * 100,
    "true",
    "false",
    "0",
    "-0",
    "-1",
    "1",
    "3",
    "10",
    "3.5",
    "0x10",
    "1_0",
    "[]",
    "{}",
    "()",
    "(,)",
    ",",
    ",,,",
    '""',
    '"null"',
    "[null]",
    "[NaN]",
    "[1e999, 1]",
    "[true, 1]",
    "\u0663",
    "\u00e9t\u00e9",
    "\U0001f600",
    "\x00",
    "\u2028",
    "\u200b1",
    "1\u00a02",
    "\ufeff1",
    "0.5\t0.5\t0.5",
    "[0.5,]",
    "[,0.5]",
    "1,2,3,4,5,6,7,8",
    "32x32",
    "0x0",
    "3,-8,8",
    "1,8,8",
    "8",
    "test_resnet",
    "resnet18",
    "*",
    "[",
    "hf-hub:x/y",
    '{"fsr": 1}',
    '{"atop": {}}',
    '{"fsr": {"stages": ["layer1"]}}',
    '{"atop": null, "fsr": null}',
    '{"recipe": {"name": 5}}',
]
ALPHABET = '0123456789.,-+eE []()"{}:xnaINfl\\ \t\u00e9\u0663\u2028\x00\U0001f600'


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice([0, 1, -1, 10, 3, 2**70, 0.5, -0.25, 1e308, rng.uniform(-1e6, 1e6)])
    if kind == 1:
        return rng.choice([True, False, None])
    if kind == 2:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(8)))
    if kind == 3:
        return float(rng.choice(["nan", "inf", "-inf"]))
    if kind in (4, 5):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {
        rng.choice(["fsr", "atop", "a", "stages", "0"]): random_json(rng, depth + 1) for _ in range(rng.randrange(4))
    }


def random_value(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.choice(NASTY)
    if kind == 1:  # almost a number list
        numbers = [
            rng.choice(["0.5", "0", "-1", "1e999", "nan", "3", "8", "10", "1", "0.25", "1e40", "x", ""])
            for _ in range(rng.randrange(6))
        ]
        text = rng.choice([",", ", ", " ", ";", ",,"]).join(numbers)
        opening, closing = rng.choice([("", ""), ("[", "]"), ("(", ")"), ("[", ")"), ("{", "}")])
        return opening + text + closing
    if kind == 2:
        return json.dumps(random_json(rng))  # NaN/Infinity included: json writes them
    if kind == 3:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(25)))
    return str(rng.choice([0, 1, 3, 8, 10, -5, 10**30, 2**63, 1e-300, 7.0, 10.0, 1.5]))


def fuzz_cases(seed: int, count: int):
    rng = random.Random(seed)
    for index in range(count):
        if index % 2 == 0:  # one key fuzzed, the rest valid: every parser is reached
            fuzzed = [rng.choice(KEYS)]
        else:  # several at once; arch less often, since an unknown arch stops everything else
            keys = KEYS if rng.random() < 0.2 else [key for key in KEYS if key != "arch"]
            fuzzed = rng.sample(keys, rng.randrange(1, len(keys) + 1))
        header = {"arch": ARCH, "num_classes": "10", "in_chans": "1", "mean": "0.3", "std": "0.4"}
        header.update({key: random_value(rng) for key in fuzzed})
        if rng.random() < 0.2:
            header[rng.choice(["format", "foo", "license", "\u00e9", ""])] = random_value(rng)
        yield fuzzed, header


def check_outcome(model_or_error, fuzzed):
    if isinstance(model_or_error, UserError):
        assert_one_line_error(model_or_error)
        if len(fuzzed) == 1 and fuzzed[0] in NAMED:
            assert f"'{fuzzed[0]}'" in str(model_or_error), str(model_or_error)
        return "error"
    info = model_or_error.info
    assert info.num_classes == 10 and info.in_chans == 1 and isinstance(info.randomized, bool)
    assert len(info.mean) == len(info.std) == 1 and all(math.isfinite(v) for v in info.mean + info.std)
    assert min(info.std) > 0
    assert info.input_size is None or (
        len(info.input_size) == 2 and all(type(s) is int and s >= 1 for s in info.input_size)
    )
    return "ok"


def test_fuzzed_metadata_gives_a_model_or_a_user_error(tmp_path, grey_state):
    outcomes = {"ok": 0, "error": 0}
    x = torch.rand(1, 1, 8, 8)
    for index, (fuzzed, header) in enumerate(fuzz_cases(seed=20240611, count=300)):
        path = write_safetensors(tmp_path / f"{index}.safetensors", grey_state, header)
        try:
            model = load_model(path)
        except UserError as exc:
            outcome = check_outcome(exc, fuzzed)
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"case {index}: {type(exc).__name__}: {exc!s:.200} for header {header!r:.300}")
        else:
            outcome = check_outcome(model, fuzzed)
            if index % 10 == 0:  # and the model it gave runs (extreme but finite mean/std may give inf logits)
                with torch.no_grad():
                    assert model(x).shape == (1, 10)
        path.unlink()
        outcomes[outcome] += 1
    assert outcomes["ok"] >= 30 and outcomes["error"] >= 30, outcomes  # both branches really exercised


def test_fuzzed_metadata_through_the_cli(cli, tmp_path, digits_model_path):
    state, _ = read_checkpoint(digits_model_path)
    cases = list(fuzz_cases(seed=7, count=40))[::8]  # a handful
    cases.append((["mean"], {"arch": ARCH, "mean": "[" * 3000, "std": "9" * 5000}))
    cases.append((["num_classes"], {"arch": ARCH, "num_classes": "1e999", "hardenctl": "{"}))
    cases.append(
        (
            ["mean"],
            {
                "arch": ARCH,
                "mean": "[0.3 0.3 0.3]",
                "std": "(0.4,)",
                "input_size": "8",
                "randomized": "0",
                "num_classes": "1e1",
                "in_chans": "1.0",
                "hardenctl": "[garbage",
                "\u00e9": "\x00",
            },
        )
    )
    cases.append((["std"], {"arch": ARCH, "mean": "0.3", "std": "\u0663", "input_size": "None", "foo": "{" * 3000}))
    codes = []
    for index, (fuzzed, header) in enumerate(cases):
        path = write_safetensors(tmp_path / f"{index}.safetensors", state, header)
        out = tmp_path / f"out{index}"
        code, _, err = cli("eval", path, *EVAL, "--report", out / "report.json")
        assert "Traceback" not in err, err
        assert code in (0, 2), (code, err, header)
        codes.append(code)
        if code == 2:
            lines = [line for line in err.strip().splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error:"), err
            assert not out.exists()
        else:
            assert (out / "report.json").is_file()
    assert 0 in codes and 2 in codes, codes
