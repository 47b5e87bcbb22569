"""Packaging: a hardenctl installed from the wheel or the sdist has everything it needs, the recipe YAMLs above all.

The other tests run against the editable checkout, which finds ``recipes/`` beside the package whatever the archives
hold; these build the archives from what a clone has, install them into a fresh venv outside the checkout and use them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import torch

from hardenctl.demo import DEMO_ARCH, DIGITS_MEAN, DIGITS_STD
from hardenctl.models import create_timm_model, save_model, wrap_model

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["advamd", "atop", "cost-sensitive", "fsr", "mart", "pgd-at", "standard", "trades"]
URL = "https://github.com/hardenctl/hardenctl"


def run(*args: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command outside the checkout, no PYTHONPATH leading back into it; a non-zero exit fails the test."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")} | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    command = " ".join(map(str, args))
    assert done.returncode == 0, f"{command} -> {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def clone_files(dest: Path) -> Path:
    """The checkout's files as a clone has them (tracked), plus new ones not yet committed (untracked, not ignored)."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is still listed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(source.read_bytes())
    return dest


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    """The sdist, the wheel built from the source tree (``pip install git+URL``) and the wheel built from the sdist."""
    if not (ROOT / ".git").exists():
        pytest.skip("builds from a git checkout (git ls-files says what a clone has)")
    tmp = tmp_path_factory.mktemp("packaging")
    tree = clone_files(tmp / "tree")
    build = (sys.executable, "-m", "build", "--no-isolation")
    run(*build, "--sdist", "--outdir", tmp / "sdist", tree, cwd=tmp)
    run(*build, "--wheel", "--outdir", tmp / "wheel", tree, cwd=tmp)
    (sdist,) = (tmp / "sdist").glob("hardenctl-*.tar.gz")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-build-isolation",
        "--no-deps",
        "--no-index",
        "-q",
        "--wheel-dir",
        tmp / "sdist-wheel",
        sdist,
        cwd=tmp,
    )  # pip unpacks the sdist and builds from that alone
    (wheel,) = (tmp / "wheel").glob("hardenctl-*.whl")
    (sdist_wheel,) = (tmp / "sdist-wheel").glob("hardenctl-*.whl")
    return {"tree": tree, "sdist": sdist, "wheel": wheel, "sdist-wheel": sdist_wheel}


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> Path:
    """An untrained timm test_resnet for 8×8 digits: enough for a harden run to start, train and report."""
    torch.manual_seed(0)
    net = create_timm_model(DEMO_ARCH, num_classes=10, in_chans=1)
    model = wrap_model(net, DEMO_ARCH, 10, DIGITS_MEAN, DIGITS_STD, in_chans=1, input_size=(8, 8))
    return save_model(model, tmp_path_factory.mktemp("model") / "model.safetensors")


def make_venv(path: Path) -> Path:
    """A venv that sees this interpreter's packages (torch, timm, ...: nothing downloaded) but has its own hardenctl.

    ``--system-site-packages`` would reach only the base interpreter's, not those of a venv pytest runs in; a .pth
    that adds every site-packages this interpreter sees (their .pth files run too, so the editable install's finder
    is there, and the venv's own copy must beat it) works in both cases.
    """
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=path).stdout.strip())
    visible = [entry for entry in sys.path if Path(entry).name in ("site-packages", "dist-packages")]
    (purelib / "_hardenctl_test_base.pth").write_text(
        "".join(f"import site; site.addsitedir({entry!r})\n" for entry in visible), encoding="utf-8"
    )
    return python


def installed_files(package: Path) -> set[str]:
    files = (p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return {p.relative_to(package).as_posix() for p in files}


@pytest.mark.slow
def test_the_archives_carry_the_recipes_the_license_and_the_metadata_a_registry_shows(archives):
    recipes = {f"{name}.yaml" for name in RECIPES}
    with zipfile.ZipFile(archives["wheel"]) as wheel:
        names = set(wheel.namelist())
        (dist_info,) = {name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA")}
        metadata = Parser().parsestr(wheel.read(f"{dist_info}/METADATA").decode())
    assert {f"hardenctl/recipe_files/{name}" for name in recipes} <= names
    assert f"{dist_info}/licenses/LICENSE" in names
    with tarfile.open(archives["sdist"]) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {f"recipes/{name}" for name in recipes} | {"recipes/__init__.py", "LICENSE", "README.md"} <= members
    assert metadata["License-Expression"] == "Apache-2.0" and metadata["License-File"] == "LICENSE"
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert urls == {
        "Homepage": URL,
        "Repository": URL,
        "Issues": f"{URL}/issues",
        "Changelog": f"{URL}/blob/main/CHANGELOG.md",
    }
    classifiers = metadata.get_all("Classifier")
    assert "Topic :: Scientific/Engineering :: Image Recognition" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().startswith((ROOT / "README.md").read_text(encoding="utf-8")[:200])


# The smallest real run: one epoch of one-step MART on digits, 16 images scored before and after (mostly imports).
HARDEN = [
    "--recipe",
    "mart",
    "--data",
    "digits-train",
    "--eval-data",
    "digits-test",
    "--epochs",
    "1",
    "--batch-size",
    "256",
    "--lr",
    "0.01",
    "--set",
    "attack_steps=1",
    "--set",
    "monitor_n=16",
    "--set",
    "monitor_steps=1",
    "--set",
    "augment=none",
    "--eval-n",
    "16",
    "--suite",
    "quick",
    "--eps",
    "0.1",
    "--device",
    "cpu",
    "--quiet",
]


@pytest.mark.slow
@pytest.mark.parametrize("built", ["wheel", "sdist-wheel"])
def test_an_installed_hardenctl_lists_and_uses_its_own_recipes(archives, digits_model, built, tmp_path):
    python = make_venv(tmp_path / "venv")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        archives[built],
        cwd=tmp_path,
    )
    imported = run(python, "-c", "import hardenctl; print(hardenctl.__file__)", cwd=tmp_path).stdout.strip()
    package = Path(imported).parent
    assert package.is_relative_to(tmp_path / "venv"), imported  # the venv's copy, not the checkout's editable install
    foreign = package.parent / "recipes"  # another distribution's top-level recipes/: not the checkout layout's
    foreign.mkdir()
    (foreign / "mart.yaml").write_text("recipe: mart\nnot_a_parameter: 1\n", encoding="utf-8")

    hardenctl = tmp_path / "venv" / "bin" / "hardenctl"
    listed = json.loads(run(hardenctl, "recipes", "--json", cwd=tmp_path).stdout)
    assert sorted(entry["name"] for entry in listed) == RECIPES
    run(hardenctl, "harden", digits_model, *HARDEN, "--out", tmp_path / "hardened", cwd=tmp_path)
    report = json.loads((tmp_path / "hardened" / "report.json").read_text(encoding="utf-8"))
    assert Path(report["recipe_source"]) == package / "recipe_files" / "mart.yaml"
    assert (tmp_path / "hardened" / "model.safetensors").is_file()

    tree = archives["tree"]
    expected = {p.relative_to(tree / "hardenctl").as_posix() for p in (tree / "hardenctl").rglob("*.py")}
    expected |= {f"recipe_files/{p.name}" for p in (tree / "recipes").iterdir() if p.suffix in (".py", ".yaml")}
    assert installed_files(package) == expected  # every subpackage listed in pyproject.toml, every recipe file


@pytest.mark.parametrize("editable_finder", ["kept", "removed"])
def test_a_source_tree_on_pythonpath_uses_its_own_recipes(editable_finder, tmp_path):
    """A copy of the tree run through PYTHONPATH (as the benchmarks do with snapshots) reads its own recipes/, not
    those of the checkout an editable install maps ``hardenctl.recipe_files`` to, nor none when nothing is installed."""
    for folder in ("hardenctl", "recipes"):
        shutil.copytree(ROOT / folder, tmp_path / "tree" / folder, ignore=shutil.ignore_patterns("__pycache__"))
    drop = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path "
        "if not getattr(f, '__module__', '').startswith('__editable__')]; "
        if editable_finder == "removed"
        else ""
    )
    code = f"{drop}import hardenctl.recipes as r; print(r.RECIPE_DIR); print(len(r.recipe_names()))"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "tree")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == [str(tmp_path / "tree" / "recipes"), str(len(RECIPES))]
