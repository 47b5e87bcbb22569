"""What a model declares (license, base model, training data), read from its folder or the Hub cache, never fetched."""

from __future__ import annotations

import json

from hardenctl.models.provenance import read_provenance, tag_datasets


def test_a_folder_s_card_and_config_declare_license_lineage_and_data(tmp_path):
    (tmp_path / "README.md").write_text(
        "---\nlicense: CC-BY-NC-4.0\nbase_model: timm/vit_base_patch16_224.augreg2_in21k\n"
        "datasets: [imagenet-1k]\n---\n# a card\n"
    )
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "architecture": "vit_base_patch16_224",
                "license": "mit",
                "pretrained_cfg": {"tag": "augreg2_in21k_ft_in1k"},
            }
        )
    )
    (tmp_path / "model.safetensors").write_bytes(b"")
    for spec in (tmp_path, f"local-dir:{tmp_path}", tmp_path / "model.safetensors"):
        found = read_provenance(spec)
        assert (found.license, found.license_from) == ("cc-by-nc-4.0", "README.md")  # the card wins, lower case
        assert found.lineage(derived=False) == ("timm/vit_base_patch16_224.augreg2_in21k", None)
        assert found.lineage(derived=True) == ("timm/vit_base_patch16_224.augreg2_in21k", "finetune")
        assert found.trained_on == ("imagenet-1k", "imagenet-21k")
    (tmp_path / "README.md").unlink()
    assert read_provenance(tmp_path).license == "mit" and read_provenance(tmp_path).license_from == "config.json"


def test_a_hub_model_is_read_from_the_cache_only(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--org--base" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "models--org--base" / "refs").mkdir()
    (tmp_path / "models--org--base" / "refs" / "main").write_text("a" * 40)
    (snapshot / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    found = read_provenance("hf-hub:org/base")
    assert (found.license, found.hub_id, found.lineage(derived=True)) == (
        "apache-2.0",
        "org/base",
        ("org/base", "finetune"),
    )
    assert found.lineage(derived=False) == (None, None)  # the model itself is not its own base
    missing = read_provenance("hf-hub:org/elsewhere")
    assert missing.license is None and "huggingface cache" in missing.problems[0]


def test_hostile_or_broken_declarations_declare_nothing(tmp_path):
    (tmp_path / "README.md").write_text('---\nlicense: "mit; rm -rf /"\nbase_model: ["a\\nb"]\n---\n')
    (tmp_path / "config.json").write_text("{not json")
    found = read_provenance(tmp_path)
    assert (found.license, found.base_model) == (None, None) and "config.json" in found.problems[0]
    (tmp_path / "README.md").write_text("---\n: [\n---\n")
    assert "model card" in read_provenance(tmp_path).problems[0]
    assert read_provenance(tmp_path / "nowhere.safetensors").problems


def test_timm_tags_name_their_training_sets():
    assert tag_datasets("augreg2_in21k_ft_in1k") == ["imagenet-21k", "imagenet-1k"]
    assert tag_datasets("laion2b_ft_in12k_in1k") == ["laion2b", "imagenet-12k", "imagenet-1k"]
    assert tag_datasets("a1_in1k") == ["imagenet-1k"] and tag_datasets(None) == []
