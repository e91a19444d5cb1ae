"""python -m abswin.export without a training run: official files, the hub upload (a stand-in for
the Hub's API: never the network), one-line refusals. The round trip of a finetuned run's
checkpoint (identical logits, pretrained=DIR in eval.py, the model card's accuracies) is in
tests/test_eval.py."""

from __future__ import annotations

import json

import pytest
import torch

import abswin
from abswin.export import export, main, push_to_hub


@pytest.fixture()
def official(tmp_path):
    torch.manual_seed(0)
    model = abswin.create_model("hiera_atto_224", pos_embed="absolute", num_classes=5)
    path = tmp_path / "official.pth"
    torch.save({"model_state": model.state_dict()}, path)
    return model.eval(), path


def test_an_official_file_exports_with_its_model_name(official, tmp_path):
    model, path = official
    assert main([str(path), "--out", str(tmp_path / "a")]) == 2  # it does not say which Hiera it is
    out = export(path, tmp_path / "a", model_name="hiera_atto_224", license="cc-by-nc-4.0")
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["pos_embed"] == "absolute" and config["options"]["num_classes"] == 5
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(abswin.load_exported(out)(x), model(x))
    card = (out / "README.md").read_text()
    assert "license: cc-by-nc-4.0" in card and "Not recorded" in card and "Not evaluated" in card
    assert not (tmp_path / "a.partial").exists()


def test_errors_are_one_line(official, tmp_path, capsys):
    _, path = official
    assert main([str(tmp_path / "missing.pth"), "--out", str(tmp_path / "b")]) == 2
    assert main([str(path), "--out", str(tmp_path / "b"), "--model", "hiera_atto_224", "--results",
                 str(tmp_path)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "no such file" in errors[0] and "no results.json there" in errors[1]
    assert not (tmp_path / "b").exists()
    with pytest.raises(abswin.CheckpointError, match="not an exported folder"):
        abswin.load_exported(tmp_path)


class FakeHub:
    """Records what push_to_hub asks of huggingface_hub.HfApi."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", sorted(p.name for p in __import__("pathlib").Path(kwargs["folder_path"]).iterdir()),
                           kwargs["repo_id"]))


def test_push_uploads_the_whole_folder_to_a_private_repo(official, tmp_path):
    _, path = official
    out = export(path, tmp_path / "c", model_name="hiera_atto_224")
    hub = FakeHub()
    assert push_to_hub(out, "lab/hiera-atto", api=hub) == "https://huggingface.co/lab/hiera-atto"
    assert hub.calls[0] == ("create_repo", "lab/hiera-atto", {"repo_type": "model", "private": True, "exist_ok": True})
    assert hub.calls[1] == ("upload_folder", ["README.md", "config.json", "model.safetensors"], "lab/hiera-atto")
