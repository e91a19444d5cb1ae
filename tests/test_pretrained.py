"""Named published weights (abswin.pretrained): the table against the official package's and timm's
own lists; fetching once into the torch hub cache from a 127.0.0.1 HTTP server the test runs, with
checksums; a Hugging Face cache the test builds, read with the hub offline; the one-line errors;
``finetune.py pretrained=<name>`` as a real process. Nothing here reaches the internet: downloads go
to 127.0.0.1 and the Hugging Face hub is offline (HF_HUB_OFFLINE)."""

from __future__ import annotations

import hashlib
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hiera
import pytest
import torch
from safetensors.torch import save_file

import abswin
from abswin import PretrainedError, PretrainedWeights, fetch_pretrained, get_pretrained, list_pretrained
from abswin import pretrained as published
from training.config import init_tag
from launching import free_port, start, unique_name, write_image_folder

ATTO = dict(embed_dim=32, num_heads=1, stages=(1, 1, 3, 1))  # hiera_atto's size in the official code


# ---------------------------------------------------------------------------- fixtures
class Server:
    """A 127.0.0.1 HTTP server for the files in ``root``, counting the requests per path."""

    def __init__(self, root: Path):
        self.root, self.requests = root, []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, self, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def hits(self, file_name: str) -> int:
        return self.requests.count(f"/{file_name}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, server: Server, *args, **kwargs):
        self.counter = server
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self.counter.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def caches(tmp_path, monkeypatch) -> dict[str, Path]:
    """Empty torch hub and Hugging Face caches in tmp_path, the hub offline, no mirror."""
    from huggingface_hub import constants

    torch_home, hf_home = tmp_path / "torch", tmp_path / "hf"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv(published.MIRROR_ENV, raising=False)
    # huggingface_hub reads its environment once, at import: what a fresh process would read
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return {"torch": torch_home / "hub" / "checkpoints", "hf": hf_home / "hub"}


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    s = Server(root)
    yield s
    s.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def official_atto(path: Path) -> Path:
    """An official-format file (``{"model_state": ...}``, the official code's own module) of a Hiera
    of hiera_atto's size."""
    torch.manual_seed(0)
    torch.save({"model_state": hiera.Hiera(**ATTO).state_dict()}, path)
    return path


def register_test_entry(monkeypatch, url: str, sha: str | None, name: str = "hiera_atto_224.test_in1k"
                        ) -> PretrainedWeights:
    """Register an entry for the test only (undone after it)."""
    weights = PretrainedWeights(name, "hiera_atto_224", "official", url, sha, "a test file", 1000, 224)
    monkeypatch.setitem(published._REGISTRY, name, weights)
    return weights


# ---------------------------------------------------------------------------- the table
def test_the_table_lists_every_official_file_and_timms_abswin_weights():
    """Every URL of the official package (hiera-transformer's ``checkpoints`` of each model) is an
    entry of the same name, and every timm abs-win weight with a hub id; each builds a registry
    model and carries timm's classes, input size, crop and license."""
    import timm

    official = {f"{name}.{tag}": url for name, fn in vars(hiera).items()  # mae_hiera_*: the same files
                if isinstance(getattr(fn, "checkpoints", None), dict) and not name.startswith("mae_")
                for tag, url in fn.checkpoints.items()}
    ours = {n: get_pretrained(n) for n in list_pretrained()}
    assert {n: w.url for n, w in ours.items() if w.source == "official"} == official
    assert len(official) == 6 * 2 + 4 * 2  # image: 6 sizes, video: 4; MAE and finetuned each

    timm_names = [n for n in timm.list_pretrained("hiera_*abswin*") if timm.models.get_pretrained_cfg(n).hf_hub_id]
    assert sorted(n for n, w in ours.items() if w.source == "timm") == sorted(timm_names) == list_pretrained("*abswin*")
    for name in timm_names:
        cfg, w = timm.models.get_pretrained_cfg(name), ours[name]
        assert w.url == f"hf://timm/{name}/model.safetensors"
        assert (w.num_classes, w.img_size, w.crop_pct, w.license) == (cfg.num_classes, cfg.input_size[-1],
                                                                      cfg.crop_pct, cfg.license)
    for w in ours.values():
        assert w.model in abswin.list_models(), w
        assert w.fits(w.model) and (w.input == "video") == (w.num_frames == 16)
        if w.source == "official":
            assert w.num_classes == (0 if w.model.startswith("mae_") else 400 if w.input == "video" else 1000)
        assert w.pos_embed == ("abswin" if w.source == "timm" else "absolute")


def test_names_paths_and_misspellings():
    assert published.lookup("hiera_base_224.mae_in1k").model == "mae_hiera_base_224"
    for path in ("outputs/pretrain/run/checkpoints/last.ckpt", "hiera_base_224.pth", "w.safetensors"):
        assert published.lookup(path) is None  # a file: load_checkpoint says if it is missing
    with pytest.raises(PretrainedError) as e:
        published.lookup("hiera_base_224.mae")
    line = str(e.value)
    assert "\n" not in line and "close: hiera_base_224.mae_in1k, " in line and "hiera_base_224.mae_in1k_ft_in1k" in line
    with pytest.raises(PretrainedError, match="close: hiera_small_abswin_256.sbb2_e200_in12k_ft_in1k"):
        get_pretrained("hiera_small_abswin_256.sbb2_e200_in12k_ft_in1")
    assert init_tag("hiera_base_224.mae_in1k") == "hiera_base_224.mae_in1k"  # run names keep the tag
    assert init_tag("outputs/run/last.ckpt") == "last"
    assert init_tag("outputs/finetune/my-run/checkpoints/best.ckpt") == "my-run-best"  # one eval folder per run


def test_fits_says_which_models_take_the_weights():
    mae, timm_w = get_pretrained("hiera_large_224.mae_in1k"), get_pretrained("hiera_small_abswin_256.sbb2_e200_in12k")
    assert mae.fits("hiera_large_224") and mae.fits("mae_hiera_large_224")  # an MAE's encoder: its classifier
    assert not mae.fits("hiera_large_16x224") and not mae.fits("hiera_base_224")
    assert timm_w.fits("hiera_small_abswin_256") and not timm_w.fits("hiera_small_224")  # LayerScale, no proj


# ---------------------------------------------------------------------------- downloads
def test_downloaded_once_into_the_torch_cache_checked_and_loaded(caches, server, monkeypatch, capfd):
    file = official_atto(server.root / "hiera_atto_224.pth")
    w = register_test_entry(monkeypatch, f"{server.url}/hiera_atto_224.pth", sha256(file))

    path = fetch_pretrained(w.name)
    assert path == caches["torch"] / "hiera_atto_224.pth" and path.read_bytes() == file.read_bytes()
    assert "100%" in capfd.readouterr().err  # the progress bar
    assert fetch_pretrained(w.name) == path and server.hits("hiera_atto_224.pth") == 1  # cached: no second request
    assert not list(caches["torch"].glob("*.partial"))

    model = abswin.create_model("hiera_atto_224", pos_embed="absolute")
    report = abswin.load_checkpoint(model, path, strict=True)
    assert report.format == "official" and report.loaded == len(model.state_dict())


def test_every_rank_at_once_downloads_it_once(caches, server, monkeypatch):
    file = official_atto(server.root / "hiera_atto_224.pth")
    w = register_test_entry(monkeypatch, f"{server.url}/hiera_atto_224.pth", sha256(file))
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(fetch_pretrained(w.name, progress=False)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 3 and len(set(paths)) == 1 and server.hits("hiera_atto_224.pth") == 1


def test_a_wrong_checksum_is_refused_and_the_file_not_kept(caches, server, monkeypatch):
    official_atto(server.root / "hiera_atto_224.pth")
    w = register_test_entry(monkeypatch, f"{server.url}/hiera_atto_224.pth", "0" * 64)
    for attempt in (1, 2):  # nothing kept: the next call downloads again, and refuses again
        with pytest.raises(PretrainedError) as e:
            fetch_pretrained(w.name, progress=False)
        line = str(e.value)
        assert "\n" not in line and "SHA-256" in line and "0000000000000000" in line and "deleted" in line
        assert not (caches["torch"] / "hiera_atto_224.pth").exists()
        assert server.hits("hiera_atto_224.pth") == attempt


def test_without_a_known_digest_the_first_one_is_pinned(caches, server, monkeypatch):
    """The published files have no digest: the first download's is pinned, and a file that changes
    later (damaged, replaced) is not used."""
    file = official_atto(server.root / "hiera_atto_224.pth")
    w = register_test_entry(monkeypatch, f"{server.url}/hiera_atto_224.pth", None)
    path = fetch_pretrained(w.name, progress=False)
    pin = path.with_name("hiera_atto_224.pth.sha256")
    assert pin.read_text().strip() == sha256(file)
    assert fetch_pretrained(w.name, progress=False) == path

    with open(path, "r+b") as f:  # one byte changes
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(PretrainedError) as e:
        fetch_pretrained(w.name, progress=False)
    line = str(e.value)
    assert "\n" not in line and str(path) in line and "pinned" in line and "not used" in line
    assert server.hits("hiera_atto_224.pth") == 1


def test_server_down_or_file_missing_says_what_to_put_where(caches, server, monkeypatch):
    w = register_test_entry(monkeypatch, f"http://127.0.0.1:{free_port()}/hiera_atto_224.pth", None)  # nothing listens
    for entry in (w, register_test_entry(monkeypatch, f"{server.url}/absent.pth", None, "hiera_atto_224.absent")):
        with pytest.raises(PretrainedError) as e:
            fetch_pretrained(entry.name, progress=False)
        line = str(e.value)
        target = caches["torch"] / entry.file_name
        assert "\n" not in line and line.startswith(f"cannot download {entry.name}")
        assert line.endswith(f"put {entry.file_name} from {entry.url} at {target}"), line
        assert not target.exists()
    assert "refused" in str(e.value) or "404" in str(e.value) or "Not Found" in str(e.value)


def test_a_file_put_by_hand_is_used_without_a_download(caches, monkeypatch, tmp_path):
    """What the offline message asks for: the file at the torch cache path is used as it is."""
    file = official_atto(tmp_path / "hiera_atto_224.pth")
    w = register_test_entry(monkeypatch, f"http://127.0.0.1:{free_port()}/hiera_atto_224.pth", sha256(file))
    caches["torch"].mkdir(parents=True)
    (caches["torch"] / "hiera_atto_224.pth").write_bytes(file.read_bytes())
    assert fetch_pretrained(w.name) == caches["torch"] / "hiera_atto_224.pth"


def test_the_mirror_serves_the_published_names(caches, server, monkeypatch):
    """ABSWIN_WEIGHTS_MIRROR: a real entry from URL/<file name>, into the torch cache; timm's too."""
    monkeypatch.setenv(published.MIRROR_ENV, server.url + "/")
    (server.root / "hiera_base_224.pth").write_bytes(b"official bytes")
    (server.root / "hiera_small_abswin_256.sbb2_e200_in12k.safetensors").write_bytes(b"timm bytes")
    assert fetch_pretrained("hiera_base_224.mae_in1k_ft_in1k", progress=False).read_bytes() == b"official bytes"
    path = fetch_pretrained("hiera_small_abswin_256.sbb2_e200_in12k", progress=False)
    assert path == caches["torch"] / "hiera_small_abswin_256.sbb2_e200_in12k.safetensors"
    assert server.requests == ["/hiera_base_224.pth", "/hiera_small_abswin_256.sbb2_e200_in12k.safetensors"]


# ---------------------------------------------------------------------------- Hugging Face cache
def hf_cache_entry(cache: Path, repo_id: str, file_name: str, data: bytes) -> Path:
    """What ``hf_hub_download`` leaves in the cache: the blob named by its SHA-256, the snapshot of
    a revision linking to it, and refs/main naming that revision."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    digest, revision = hashlib.sha256(data).hexdigest(), "0123456789abcdef0123456789abcdef01234567"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / digest).write_bytes(data)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "snapshots" / revision / file_name).symlink_to(Path("..", "..", "blobs", digest))
    return repo / "blobs" / digest


def test_offline_hugging_face_cache_is_read_checked_and_loaded(caches, monkeypatch, tmp_path):
    name = "hiera_atto_224.hf_test"
    model = abswin.create_model("hiera_atto_224", num_classes=10)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    blob = hf_cache_entry(caches["hf"], f"abswin-test/{name}", "model.safetensors",
                          (tmp_path / "model.safetensors").read_bytes())
    register_test_entry(monkeypatch, f"hf://abswin-test/{name}/model.safetensors", None, name)

    path = fetch_pretrained(name)
    assert path.parent.parent.name == "snapshots" and Path(os.path.realpath(path)) == blob
    fresh = abswin.create_model("hiera_atto_224", num_classes=10)
    report = abswin.load_checkpoint(fresh, path, strict=True)
    assert report.loaded == len(model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))

    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")  # damaged in the cache: not the hub's digest any more
    with pytest.raises(PretrainedError) as e:
        fetch_pretrained(name)
    assert "\n" not in str(e.value) and "Hugging Face hub's" in str(e.value) and "not used" in str(e.value)


def test_offline_and_not_cached_says_what_to_put_where(caches):
    name = "hiera_small_abswin_256.sbb2_e200_in12k_ft_in1k"  # a real entry; the hub is offline
    with pytest.raises(PretrainedError) as e:
        fetch_pretrained(name)
    line = str(e.value)
    assert "\n" not in line and "HF_HUB_OFFLINE is set" in line and str(caches["hf"]) in line
    assert f"put https://huggingface.co/timm/{name}/resolve/main/model.safetensors at " \
           f"{caches['torch'] / (name + '.safetensors')}" in line


# ---------------------------------------------------------------------------- finetune.py
def finetune_config(overrides: list[str]):
    """finetune.py's config as composed for these overrides."""
    from training.config import compose_config

    return compose_config("finetune", overrides)


def test_weights_of_another_model_say_which_model_to_use():
    """Checked before anything is fetched: never loaded into another architecture."""
    from training.config import named_weights

    assert named_weights(finetune_config(["model=hiera_b", "pretrained=hiera_base_224.mae_in1k"])).model == \
        "mae_hiera_base_224"
    assert named_weights(finetune_config(["pretrained=outputs/x/last.ckpt"])) is None
    cases = {
        ("pretrained=hiera_base_16x224.mae_k400",): "pretrained=hiera_base_16x224.mae_k400 holds "
        "mae_hiera_base_16x224 (video, size base) but this run builds hiera_atto_224: use model=hiera_b and video "
        "data (data=k400, data=video)",
        ("model=hiera_b", "data=k400", "pretrained=hiera_large_224.mae_in1k_ft_in1k"): "but this run builds "
        "hiera_base_16x224: use model=hiera_l and image data (data=in1k, data=imagefolder)",
        ("model=hiera_s", "pretrained=hiera_small_abswin_256.sbb2_e200_in12k_ft_in1k"): "but this run builds "
        "hiera_small_224: use model=hiera_s module.model_name=hiera_small_abswin_256 model.global_pos_size=[16,16]",
    }
    for overrides, message in cases.items():
        with pytest.raises(PretrainedError) as e:
            named_weights(finetune_config(list(overrides)))
        assert "\n" not in str(e.value) and str(e.value).endswith(message), str(e.value)
    fixed = ["model=hiera_s", "pretrained=hiera_small_abswin_256.sbb2_e200_in12k_ft_in1k",
             "module.model_name=hiera_small_abswin_256", "model.global_pos_size=[16,16]"]
    assert named_weights(finetune_config(fixed)).name == "hiera_small_abswin_256.sbb2_e200_in12k_ft_in1k"


@pytest.mark.slow
def test_finetune_py_fetches_a_named_checkpoint_and_logs_the_report(tmp_path, server):
    """``finetune.py pretrained=hiera_tiny_224.mae_in1k_ft_in1k`` as users run it, the file coming
    from a 127.0.0.1 mirror: downloaded into TORCH_HOME, pinned, loaded with the usual conversion,
    the report logged, two steps trained. Then a misspelt name: one line, status 2."""
    torch.manual_seed(0)
    official = hiera.hiera_tiny_224(pretrained=False)
    torch.save({"model_state": official.state_dict()}, server.root / "hiera_tiny_224.pth")
    images = write_image_folder(tmp_path / "images")
    output = tmp_path / "out"
    env = {"TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           published.MIRROR_ENV: server.url}
    common = ["model=hiera_t", "data=imagefolder", f"data.root={images}", "data.img_size=64", "data.batch_size=8",
              "data.num_workers=0"]
    launches = []
    try:
        ok = start("single", "finetune.py", [*common, "pretrained=hiera_tiny_224.mae_in1k_ft_in1k",
                                             "trainer.max_steps=2", "trainer.limit_val_batches=1"],
                   output_root=output, run_name=unique_name("named"), env=env)
        launches.append(ok)
        assert ok.wait(600) == [0], ok.tails()
        misspelt = start("single", "finetune.py", [*common, "pretrained=hiera_tiny_224.mae_in1k_ft"],
                         output_root=output, run_name=unique_name("misspelt"), env=env)
        launches.append(misspelt)
        assert misspelt.wait(300) == [2], misspelt.tails()
    finally:  # nothing outlives the test
        for launch in launches:
            launch.kill()

    log = ok.output()
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "hiera_tiny_224.pth"
    assert f"initialised from hiera_tiny_224.mae_in1k_ft_in1k ({cached})" in log, ok.tails()
    assert f"official checkpoint {cached} (image classifier, absolute position embedding)" in log
    assert "re-initialised (shape differs): 2 keys: head.*" in log  # 1000 classes -> 3
    assert server.hits("hiera_tiny_224.pth") == 1 and cached.with_name("hiera_tiny_224.pth.sha256").is_file()
    assert (ok.run_dir / "results.json").is_file()

    lines = misspelt.stderr().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown pretrained weights 'hiera_tiny_224.mae_in1k_ft'; "
                                                   "close: hiera_tiny_224.mae_in1k, hiera_tiny_224.mae_in1k_ft_in1k")
    assert not list(misspelt.run_dir.rglob("*")) and server.hits("hiera_tiny_224.pth") == 1  # nothing written
