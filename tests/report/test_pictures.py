"""Pictures in the reports (the Markdown grid, the self-contained HTML) and the saved adversarial images."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch

import hardenctl
from hardenctl.evaluation import EvalConfig, evaluate
from hardenctl.options import EvalRun
from hardenctl.report import Gallery, write_report_files

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = ["--n", "24", "--batch-size", "8", "--eps", "0.1", "--attacks", "fgsm,pgd", "--quiet", "--no-strict"]


def table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]


def test_markdown_grid_and_a_self_contained_html(cli, digits_model_path, tmp_path):
    code, _, err = cli(
        "eval",
        digits_model_path,
        "--data",
        "digits-test",
        *SMALL,
        "--eps-sweep",
        "0.05,0.1",
        "--markdown",
        tmp_path / "report.md",
        "--html",
        tmp_path / "report.html",
    )
    assert code == 0, err
    grid = tmp_path / "report.pictures.png"
    assert grid.read_bytes().startswith(PNG)
    markdown = (tmp_path / "report.md").read_text()
    assert "## Adversarial examples" in markdown and "(report.pictures.png)" in markdown
    page = (tmp_path / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)  # pictures + the ε curve
    assert "href=" not in page and "<script" not in page  # nothing fetched from anywhere
    assert page.count("<tr>") == len(table_rows(markdown))  # the Markdown's tables, row for row
    for line in table_rows(markdown):
        first = line.strip("|").split("|")[0].strip().replace("**", "")
        assert first.split(" ")[0] in page.replace("<wbr>", ""), first  # <wbr>: where a long name may wrap
    assert page.index("Adversarial examples") < page.index("Checks")


def test_no_pictures_asked_for(cli, digits_model_path, tmp_path):
    code, _, err = cli(
        "eval",
        digits_model_path,
        "--data",
        "digits-test",
        *SMALL,
        "--pictures",
        "0",
        "--markdown",
        tmp_path / "report.md",
        "--html",
        tmp_path / "report.html",
    )
    assert code == 0, err
    assert (
        not (tmp_path / "report.pictures.png").exists()
        and "Adversarial examples" not in (tmp_path / "report.md").read_text()
    )
    assert "<img" not in (tmp_path / "report.html").read_text()


@pytest.fixture(scope="module")
def small_report(digits_model_path):
    model = hardenctl.load_model(digits_model_path)
    data = hardenctl.load_data("digits-test", model, n=24)
    return evaluate(
        model,
        data,
        EvalConfig(n=24, batch_size=8, eps=0.1, attacks=["fgsm", "pgd"], large_eps_samples=0, eps_sweep=[0.05, 0.1]),
    )


def test_without_matplotlib_the_reports_say_so(small_report, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    notes = write_report_files(small_report, markdown_path=tmp_path / "report.md", html_path=tmp_path / "report.html")
    assert any("pictures skipped" in n and "[plot]" in n for n in notes) and any("plot skipped" in n for n in notes)
    assert len(notes) == len(set(notes))
    assert not list(tmp_path.glob("*.png")) and "![" not in (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert "<img" not in page and "<table>" in page
    assert "pictures skipped: install the [plot] extra" in page and "plot skipped: install the [plot] extra" in page
    notes = write_report_files(small_report, html_path=tmp_path / "alone.html")  # the HTML alone says so too
    assert any("pictures skipped" in n for n in notes) and any("plot skipped" in n for n in notes)


def entries(gallery: Gallery) -> list[tuple[int, bool]]:
    return [(e["index"], e["broken"]) for e in gallery.chosen()]


def test_pictures_choose_broken_samples_first_whatever_the_batch_order():
    torch.manual_seed(0)
    n, size = 40, 8
    x, worst, y = torch.rand(n, 1, 4, 4), torch.rand(n, 1, 4, 4), torch.randint(0, 3, (n,))
    attacked = torch.rand(n) > 0.2
    broken = attacked & (torch.rand(n) > 0.6)
    predictions = (y, torch.where(broken, (y + 1) % 3, y))

    def offer(gallery: Gallery, numbers) -> Gallery:
        for b in numbers:
            rows = slice(b * size, (b + 1) * size)
            gallery.offer(
                b * size,
                x[rows],
                worst[rows],
                y[rows],
                predictions[0][rows],
                predictions[1][rows],
                attacked[rows],
                broken[rows],
            )
        return gallery

    forward = offer(Gallery(6), range(5))
    backward = offer(Gallery(6), reversed(range(5)))
    sharded = Gallery(6).merge([offer(Gallery(6), [0, 2, 4]).to_state(), offer(Gallery(6), [1, 3])])
    want_broken = broken.nonzero().squeeze(1).tolist()[:6]
    want_robust = (attacked & ~broken).nonzero().squeeze(1).tolist()[: 6 - len(want_broken)]
    assert (
        entries(forward)
        == entries(backward)
        == entries(sharded)
        == [(i, True) for i in want_broken] + [(i, False) for i in want_robust]
    )
    assert all(e["adversarial"].equal(worst[e["index"]]) for e in forward.chosen())


def test_saved_adversarial_images_are_exactly_the_scored_points(digits_model_path, tmp_path):
    model = hardenctl.load_model(digits_model_path)
    data = hardenctl.load_data("digits-test", model, n=21)
    eps = 0.1
    report = evaluate(
        model,
        data,
        EvalConfig(n=21, batch_size=8, eps=eps, attacks=["fgsm", "pgd"], large_eps_samples=0),
        run=EvalRun(save_adversarial=tmp_path),
    )
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["adv_000000-000007.npz", "adv_000008-000015.npz", "adv_000016-000020.npz"]  # named by sample index
    samples = report.samples
    for name in files:
        with np.load(tmp_path / name) as saved:
            index = saved["index"]
            images = torch.from_numpy(saved["adversarial"])
            assert images.dtype == torch.float32 and images.shape == (len(index), 1, 8, 8)
            clean = data.pixels(int(index[0]), int(index[-1]) + 1)
            assert (
                float((images - clean).abs().max()) <= eps + 1e-6
                and 0 <= float(images.min())
                and float(images.max()) <= 1
            )
            with torch.no_grad():
                assert model(images).argmax(1).tolist() == saved["adversarial_prediction"].tolist()
            rows = index.tolist()
            assert saved["adversarial_prediction"].tolist() == [samples.adversarial_prediction[i] for i in rows]
            assert saved["robust"].tolist() == [samples.robust[i] for i in rows]
            assert saved["broken_by"].tolist() == [samples.broken_by[i] or "" for i in rows]
            assert saved["label"].tolist() == [samples.label[i] for i in rows]
    assert 0 < sum(samples.robust) < sum(c == 1 for c in samples.clean_correct)  # some broken, some robust


# ---------------------------------------------------------------------------------------------
# class names in any script: drawn without a warning per missing glyph on stderr
# ---------------------------------------------------------------------------------------------
CJK_NAMES = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"]  # the digits' classes, named in Chinese


def test_cjk_class_names_draw_pictures_and_plot_with_a_clean_stderr(cli, digits_model_path, tmp_path, caplog):
    import json
    import warnings

    data = hardenctl.load_data("digits-test", hardenctl.load_model(digits_model_path), n=24)
    np.savez(tmp_path / "digits.npz", x=data.x[:24].permute(0, 2, 3, 1).numpy(), y=data.y[:24].numpy())
    (tmp_path / "classes.json").write_text(json.dumps(CJK_NAMES, ensure_ascii=False), encoding="utf-8")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        code, out, err = cli(
            "eval",
            digits_model_path,
            "--data",
            tmp_path / "digits.npz",
            *SMALL,
            "--eps-sweep",
            "0.05,0.1",
            "--markdown",
            tmp_path / "report.md",
        )
    assert code == 0, err
    assert (tmp_path / "report.pictures.png").read_bytes().startswith(PNG)
    assert (tmp_path / "report.eps_sweep.png").read_bytes().startswith(PNG)
    assert "true:" not in err and err == "", err
    assert [str(w.message) for w in shown] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []
    assert "零" in (tmp_path / "report.md").read_text(encoding="utf-8")


def tiny_gallery(names: list[str]) -> Gallery:
    gallery = Gallery(size=2, class_names=names, eps=0.1, norm="linf")
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    two, yes = torch.tensor([0, 1]), torch.tensor([True, True])
    gallery.offer(0, x, (x + 0.05).clamp(0, 1), two, two, 1 - two, yes, yes)
    return gallery


def glyph_warnings(draw) -> list[str]:
    import warnings

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        assert draw() is not None
    return [str(w.message) for w in shown if "Glyph" in str(w.message)]


def test_a_name_the_default_font_cannot_draw_gets_an_installed_font_that_can(monkeypatch):
    """ℊ is not in DejaVu Sans but is in fonts matplotlib ships (STIX, DejaVu Math): drawn in one of those, with no
    warning even when the warning is not silenced."""
    import contextlib

    from matplotlib import font_manager

    from hardenctl.report import pictures
    from hardenctl.report.fonts import _charmap, fonts_for

    default = font_manager.findfont(font_manager.FontProperties())
    if ord("ℊ") in _charmap(default):
        pytest.skip("the default font draws ℊ itself")
    assert fonts_for(["plain ascii", "×0.5 (L∞ 0.1)"]) == {}
    family = fonts_for(["true: ℊ"])["family"]
    assert family[0] == font_manager.FontProperties(fname=default).get_name() and len(family) >= 2
    fallbacks = [font_manager.findfont(font_manager.FontProperties(family=name)) for name in family[1:]]
    assert any(ord("ℊ") in _charmap(path) for path in fallbacks)
    monkeypatch.setattr(pictures, "quiet_missing_glyphs", contextlib.nullcontext)  # the font alone must do it
    assert glyph_warnings(lambda: pictures.grid_png(tiny_gallery(["ℊ", "b"]))) == []


def test_a_name_no_installed_font_can_draw_is_drawn_without_a_warning_per_glyph():
    from hardenctl.report.pictures import grid_png

    assert glyph_warnings(lambda: grid_png(tiny_gallery(["\U000f0000 猫", "\U000f0001"]))) == []  # private use: no font


def test_the_eps_plot_draws_a_name_in_any_script_without_a_warning(small_report):
    import dataclasses

    from hardenctl.report.plot import plot_png

    renamed = dataclasses.replace(small_report, model={**small_report.model, "arch": "猫net-\U000f0000"})
    assert glyph_warnings(lambda: plot_png(renamed)) == []
