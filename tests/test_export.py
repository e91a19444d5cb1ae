"""python -m abswin.export without a training run: official files, the hub upload (a stand-in for
the Hub's API: never the network) and loading the upload back with pretrained=hf-hub:OWNER/NAME from
a Hugging Face cache (offline), one-line refusals. The round trip of a finetuned run's
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


class CacheHub(FakeHub):
    """A stand-in for the Hub whose uploads land where a download of them would: in the Hugging Face
    cache, as ``snapshot_download`` leaves a repository (blobs named by their SHA-256, a snapshot of
    links to them, refs/main naming it)."""

    def __init__(self, cache):
        super().__init__()
        self.cache = cache

    def upload_folder(self, **kwargs):
        import hashlib
        from pathlib import Path

        super().upload_folder(**kwargs)
        repo = self.cache / f"models--{kwargs['repo_id'].replace('/', '--')}"
        snapshot = repo / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (repo / "blobs").mkdir()
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0" * 40)
        for f in Path(kwargs["folder_path"]).iterdir():
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            (repo / "blobs" / digest).write_bytes(f.read_bytes())
            (snapshot / f.name).symlink_to(Path("..", "..", "blobs", digest))


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in tmp_path and the hub offline (never the network)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))  # read once, at import
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hf" / "hub"


def test_a_pushed_folder_loads_back_by_its_hub_name(official, tmp_path, hf_cache):
    """pretrained=hf-hub:OWNER/NAME (load_exported, eval.py, finetune.py) fetches the pushed folder through
    huggingface_hub's snapshot_download, here from the cache the upload filled, offline: the same logits."""
    from abswin.pretrained import PretrainedError, local_path

    model, path = official
    out = export(path, tmp_path / "c", model_name="hiera_atto_224")
    push_to_hub(out, "lab/hiera-atto", api=CacheHub(hf_cache))
    folder = local_path("hf-hub:lab/hiera-atto")
    assert folder.is_relative_to(hf_cache) and (folder / "config.json").is_file()
    assert local_path("hf-hub:lab/hiera-atto@" + "0" * 40) == folder  # a pinned commit
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(abswin.load_exported("hf-hub:lab/hiera-atto")(x), model(x))

    with pytest.raises(PretrainedError) as e:  # not pushed, the hub offline: one line, what to do
        local_path("hf-hub:lab/other")
    assert "\n" not in str(e.value) and "HF_HUB_OFFLINE is set" in str(e.value) and "hf download lab/other" in str(e.value)
    with pytest.raises(PretrainedError, match="OWNER/NAME"):
        local_path("hf-hub:no-owner")
