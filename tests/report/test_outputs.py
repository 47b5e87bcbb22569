"""``write_report_files`` writes each requested file on its own: one renderer's failure costs only its own output,
and the error still reaches the caller (so the CLI reports an internal error, not a failed gate)."""

from __future__ import annotations

import json

import pytest
from report_helpers import hostile_report

import hardenctl.report.outputs as outputs
from hardenctl.report import write_report_files
from hardenctl.report.outputs import OutputsNotWritten

RENDERERS = ["grid_png", "plot_png", "render_markdown", "render_junit", "render_html"]
FILES = {"render_markdown": "r.md", "render_junit": "r.xml", "render_html": "r.html"}


def fail(name: str):
    def broken(*args, **kwargs):
        raise RuntimeError(f"{name} broke")

    return broken


def paths(tmp_path):
    return {
        "json_path": tmp_path / "r.json",
        "markdown_path": tmp_path / "r.md",
        "junit_path": tmp_path / "r.xml",
        "html_path": tmp_path / "r.html",
    }


@pytest.mark.parametrize("renderer", RENDERERS)
def test_one_failing_renderer_costs_only_its_own_output(renderer, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(outputs, renderer, fail(renderer))
    with pytest.raises(OutputsNotWritten, match=f"{renderer} broke") as failed:
        write_report_files(hostile_report(), **paths(tmp_path))
    assert len(failed.value.failures) == 1 and isinstance(failed.value.failures[0][1], RuntimeError)
    if renderer != "render_html":  # a drawing that raised is a bug, not a missing [plot] extra
        assert "install the [plot] extra" not in (tmp_path / "r.html").read_text()
    written = {p.name for p in tmp_path.iterdir()}
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 60  # the file a CI gate reads, always
    assert written == {"r.json", "r.md", "r.xml", "r.html", "r.pictures.png", "r.eps_sweep.png"} - {
        FILES.get(renderer)
    } - {{"grid_png": "r.pictures.png", "plot_png": "r.eps_sweep.png"}.get(renderer)}
    if renderer == "grid_png":  # the reports leave out what could not be drawn, and name nothing missing
        assert (
            "pictures.png" not in (tmp_path / "r.md").read_text()
            and (tmp_path / "r.html").read_text().count("<img") == 1
        )


def test_every_failed_output_is_named_when_several_renderers_fail(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "render_junit", fail("render_junit"))
    monkeypatch.setattr(outputs, "render_markdown", fail("render_markdown"))
    with pytest.raises(OutputsNotWritten) as failed:
        write_report_files(hostile_report(), **paths(tmp_path))
    assert [(path.name, str(error)) for path, error in failed.value.failures] == [
        ("r.md", "render_markdown broke"),
        ("r.xml", "render_junit broke"),
    ]
    assert (tmp_path / "r.json").exists() and (tmp_path / "r.html").exists()
