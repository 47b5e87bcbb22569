"""Generated hostile inputs for the two file readers a user hands hardenctl most: a ``classes.json`` beside the data
and a safetensors model's header metadata. Valid files are mutated (wrong types, NaN, huge or deeply nested values,
bytes that are not UTF-8, truncation) and fed to the readers and to ``hardenctl eval``: the answer is always a
result, or a one-line :class:`UserError` (exit 2, exactly one line on stderr, nothing written), never exit 3 or a
traceback. Small oracles keep the properties honest: an untouched file must load, a file that is not JSON must be
refused (it used to be ignored without a word).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardenctl.cli import main
from hardenctl.data import load_dataset
from hardenctl.data.folders import display_names
from hardenctl.errors import UserError
from hardenctl.models import create_timm_model, load_model, save_model, wrap_model
from hardenctl.models.metadata import is_declared

ARCH = "test_resnet"
NAMES = ["cat", "dog", "emu"]
FAST = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
CLI_RUN = ["--n", "4", "--attacks", "fgsm", "--eps", "0.1", "--batch-size", "4", "--no-strict", "--quiet"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny 3-class grey model (no label names, so any valid names fit it), its file's parts, and 4 images."""
    root = tmp_path_factory.mktemp("readers")
    torch.manual_seed(0)
    model = wrap_model(create_timm_model(ARCH, 3, 1), ARCH, 3, (0.3,), (0.4,), in_chans=1, input_size=(8, 8))
    path = save_model(model, root / "model.safetensors")
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    np.savez(root / "data.npz", x=images, y=np.array([0, 1, 2, 0]))
    return {
        "root": root,
        "model": path,
        "metadata": header.pop("__metadata__"),
        "tensors": header,
        "data": raw[8 + size :],
        "images": images,
    }


def one_line_error(message: str) -> None:
    assert message and len(message.splitlines()) == 1 and "\r" not in message, repr(message)
    assert "Traceback" not in message, message


@contextlib.contextmanager
def folder_in(root: Path):
    with tempfile.TemporaryDirectory(dir=root) as name:
        yield Path(name)


# ---------------------------------------------------------------------------------------------
# generated values
# ---------------------------------------------------------------------------------------------
NASTY_TEXT = [
    "",
    " ",
    "\n",
    "a\nb",
    "\x00",
    "\x7f",
    "\u2028",
    "\ud800",
    "\udfff",
    "x" * 2000,
    "猫",
    "\ufeff",
    "null",
    "NaN",
    "[",
    "{",
    "9" * 5000,
    "1e999",
    "-0",
    "a,,b",
]
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(NASTY_TEXT)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def dumped(value, ascii_only: bool) -> bytes:
    """JSON bytes as people's tools write them: NaN as NaN, a lone surrogate as itself (not UTF-8) or escaped."""
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def byte_damage(draw, text: bytes) -> bytes:
    """Bytes mutated after serialising: cut short, a stray byte, a byte-order mark, deep nesting, a huge number."""
    kind = draw(st.sampled_from(["none", "none", "truncate", "insert", "bom", "nest", "huge"]))
    if kind == "truncate" and text:
        return text[: draw(st.integers(0, len(text) - 1))]
    if kind == "insert":
        at = draw(st.integers(0, len(text)))
        stray = draw(st.sampled_from([b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\x00", b"]"]))
        return text[:at] + stray + text[at:]
    if kind == "bom":
        return b"\xef\xbb\xbf" + text
    if kind == "nest":
        depth = draw(st.sampled_from([2, 40, 900, 3000, 100_000]))
        return b"[" * depth + text + b"]" * depth
    if kind == "huge":
        return text.replace(b"0", b"9" * 5000, 1) if b"0" in text else b"9" * 5000
    return text


# ---------------------------------------------------------------------------------------------
# classes.json
# ---------------------------------------------------------------------------------------------
VALID_CLASSES = [
    NAMES,
    {"classes": NAMES, "label_to_name": {"0": "cat"}},
    {"0": "cat", "1": "dog", "2": "emu"},
    {"wnid_to_name": {"0": "cat", "1": "dog", "2": "emu"}, "extra": [1, 2]},
]


@st.composite
def classes_json(draw) -> tuple[bytes, object]:
    """(the file's bytes, the document before byte damage, or None when it was replaced by another value)."""
    document = json.loads(json.dumps(draw(st.sampled_from(VALID_CLASSES))))
    edit = draw(st.sampled_from(["none", "none", "name", "name", "whole", "names_list"]))
    if edit == "name":  # one name (or the list/mapping holding them) replaced by any JSON value
        holder = (
            document
            if isinstance(document, list)
            else document.get("classes") or document.get("wnid_to_name") or document
        )
        key = draw(st.sampled_from(range(len(holder)) if isinstance(holder, list) else sorted(holder)))
        holder[key] = draw(json_value)
    elif edit == "whole":
        document = draw(json_value)
    elif edit == "names_list" and isinstance(document, dict):
        document[draw(st.sampled_from(["classes", "wnid_to_name"]))] = draw(json_value)
    text = draw(byte_damage(dumped(document, draw(st.booleans()))))
    return text, document


def parses(text: bytes) -> bool:
    try:
        json.loads(text.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return True


def test_generated_classes_json_gives_names_or_a_one_line_error(workspace):
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=80, **FAST)
    @given(case=classes_json())
    def check(case):
        text, document = case
        with folder_in(workspace["root"]) as folder:
            (folder / "classes.json").write_bytes(text)
            np.savez(folder / "d.npz", x=workspace["images"], y=np.array([0, 1, 2, 0]))
            for read in (
                lambda: load_dataset(str(folder / "d.npz")).class_names,
                lambda: display_names(folder / "val", ["0", "1", "2"]),
            ):
                try:
                    names = read()
                except UserError as exc:
                    one_line_error(str(exc))
                    assert str(folder / "classes.json") in str(exc), str(exc)
                    outcomes["error"] += 1
                    continue
                assert parses(text), "a file that is not JSON was read without a word"
                assert names is None or (len(names) >= 3 and all(isinstance(n, str) and n.strip() for n in names))
                outcomes["names"] += 1
            if parses(text) and json.loads(text.decode("utf-8-sig")) in VALID_CLASSES:
                assert load_dataset(str(folder / "d.npz")).class_names == NAMES

    check()
    assert outcomes["names"] >= 10 and outcomes["error"] >= 10, outcomes


def run_eval(model: Path, data: Path, out: Path) -> tuple[int, str]:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = main(["eval", str(model), "--data", str(data), *CLI_RUN, "--report", str(out / "report.json")])
    return code, stderr.getvalue()


def check_cli_outcome(code: int, err: str, out: Path) -> str:
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
        assert not out.exists()
        return "exit 2"
    assert (out / "report.json").is_file()
    return "exit 0"


def test_generated_classes_json_through_the_cli(workspace, monkeypatch):
    monkeypatch.setenv("HARDENCTL_LOG_DIR", str(workspace["root"] / "crash-logs"))  # an exit 3 would leave its log here
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=20, **FAST)
    @given(case=classes_json())
    def check(case):
        with folder_in(workspace["root"]) as folder:
            (folder / "classes.json").write_bytes(case[0])
            np.savez(folder / "d.npz", x=workspace["images"], y=np.array([0, 1, 2, 0]))
            code, err = run_eval(workspace["model"], folder / "d.npz", folder / "out")
            outcomes[check_cli_outcome(code, err, folder / "out")] += 1

    check()
    assert outcomes["exit 0"] >= 3 and outcomes["exit 2"] >= 3, outcomes


# ---------------------------------------------------------------------------------------------
# safetensors header metadata
# ---------------------------------------------------------------------------------------------
READ_KEYS = [
    "arch",
    "num_classes",
    "in_chans",
    "mean",
    "std",
    "input_size",
    "interpolation",
    "crop_pct",
    "crop_mode",
    "label_names",
    "randomized",
    "hardenctl",
]
FSR = {"format": 1, "stages": ["layers.3"], "channels": [64], "hidden": 16, "tau": 0.1}
ATOP = {
    "format": 1,
    "transform": {"kind": "rt2", "sigma": 0.25, "missing_rate": 0.25, "block": 4},
    "purifier": {"channels": 1, "width": 8, "depth": 1},
}


@st.composite
def header_value(draw, key: str, valid: str) -> str:
    kind = draw(st.sampled_from(["json", "json", "text", "cut", "nasty", "section", "names"]))
    if kind == "json":
        return dumped(draw(json_value), draw(st.booleans())).decode("utf-8", "surrogatepass")
    if kind == "text":
        return draw(st.text(max_size=20))
    if kind == "cut":
        return valid[: draw(st.integers(0, max(len(valid) - 1, 0)))]
    if kind == "section":  # hardenctl's own record, one part of it replaced
        part = json.loads(json.dumps(draw(st.sampled_from([FSR, ATOP]))))
        field = draw(st.sampled_from(sorted(part)))
        part[field] = draw(json_value)
        return json.dumps({"recipe": "x", draw(st.sampled_from(["fsr", "atop"])): part}, allow_nan=True)
    if kind == "names":
        names = draw(st.lists(json_value | st.sampled_from(["a", "b", "c"]), min_size=0, max_size=4))
        return dumped(names, draw(st.booleans())).decode("utf-8", "surrogatepass")
    return draw(st.sampled_from(NASTY_TEXT))


@st.composite
def safetensors_header(draw, valid: dict[str, str], keys: list[str]) -> tuple[dict[str, str], list[str], bool]:
    """(metadata, the keys changed, whether the header's bytes are to be damaged after serialising)."""
    metadata = dict(valid, label_names='["cat", "dog", "emu"]')
    choices = st.sampled_from(keys + ["train_args", "format", "other"])
    changed = [] if draw(st.integers(0, 3)) == 0 else draw(st.lists(choices, min_size=1, max_size=3, unique=True))
    for key in changed:
        metadata[key] = draw(header_value(key, metadata.get(key, "")))
    return metadata, changed, draw(st.sampled_from([False, False, False, True]))


def write_model(path: Path, workspace, metadata: dict[str, str], damage) -> bytes:
    """A safetensors file with this metadata (written by hand, so any string, even one that is not UTF-8, goes in);
    ``damage``: None, or what mutates the header's bytes."""
    text = json.dumps({**workspace["tensors"], "__metadata__": metadata}, ensure_ascii=False)
    text = text.encode("utf-8", "surrogatepass")
    if damage is not None:
        text = damage(text)
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + workspace["data"])
    return text


def must_refuse(metadata: dict[str, str], changed: list[str], text: bytes) -> bool:
    """The new contract's clearest cases: a header that is not UTF-8 JSON, label names that are not strings, a
    hardenctl section that is not an object."""
    try:
        json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return True
    names = _decoded(metadata["label_names"]) if "label_names" in changed else None
    if isinstance(names, list) and any(not isinstance(n, str) for n in names):
        return True
    raw_section = metadata.get("hardenctl", "{}")
    return "hardenctl" in changed and is_declared(raw_section) and not isinstance(_decoded(raw_section), dict)


_UNPARSED = object()


def _decoded(value: str):
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return _UNPARSED


def test_generated_metadata_gives_a_model_or_a_one_line_error(workspace):
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=80, **FAST)
    @given(data=st.data())
    def check(data):
        metadata, changed, damaged = data.draw(safetensors_header(workspace["metadata"], READ_KEYS))
        with folder_in(workspace["root"]) as folder:
            path = folder / "m.safetensors"
            damage = (lambda raw: data.draw(byte_damage(raw))) if damaged else None
            text = write_model(path, workspace, metadata, damage)
            try:
                model = load_model(path)
            except UserError as exc:
                one_line_error(str(exc))
                outcomes["error"] += 1
                return
            shown = [metadata[key] for key in changed]
            assert not must_refuse(metadata, changed, text), f"accepted {changed}: {shown!r:.300}"
            assert model.info.num_classes == 3 and model.info.in_chans == 1
            assert model.info.label_names is None or len(model.info.label_names) == 3
            assert isinstance(model.info.metadata, dict)
            outcomes["model"] += 1
            if not changed and not damaged:
                assert model.info.label_names == NAMES

    check()
    assert outcomes["model"] >= 10 and outcomes["error"] >= 10, outcomes


def test_generated_metadata_through_the_cli(workspace, monkeypatch):
    monkeypatch.setenv("HARDENCTL_LOG_DIR", str(workspace["root"] / "crash-logs"))
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=25, **FAST)
    @given(data=st.data())
    def check(data):
        # input_size left alone: a valid 10000 is a real (slow) evaluation at that size, not a reader's problem; the
        # keys whose checking is new drawn more often
        keys = [key for key in READ_KEYS if key != "input_size"] + ["hardenctl", "label_names", "crop_pct"]
        metadata, changed, damaged = data.draw(safetensors_header(workspace["metadata"], keys))
        with folder_in(workspace["root"]) as folder:
            damage = (lambda raw: data.draw(byte_damage(raw))) if damaged else None
            text = write_model(folder / "m.safetensors", workspace, metadata, damage)
            code, err = run_eval(folder / "m.safetensors", workspace["root"] / "data.npz", folder / "out")
            outcome = check_cli_outcome(code, err, folder / "out")
            assert outcome == "exit 2" or not must_refuse(metadata, changed, text), f"accepted {changed}: {err!r:.300}"
            outcomes[outcome] += 1

    check()
    assert outcomes["exit 0"] >= 2 and outcomes["exit 2"] >= 3, outcomes
