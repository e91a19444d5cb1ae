"""Checkpoint loading: official / timm / abswin / Lightning files, position-embedding
conversion, safe reading, one-line errors and the convert CLI. Real files in tmp_path."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import hiera
import pytest
import torch
import torch.nn as nn

import abswin
from abswin import CheckpointError, load_checkpoint
from abswin.checkpoint import LoadReport
from abswin.checkpoint.formats import KEY_MAPPINGS, detect_format, lightning_extras
from abswin.checkpoint.resize_pos_embed import Fitting, fit_position_embeddings, spatial_case
from abswin.convert import main as convert_main
from abswin.models import pos_embed as pe

ROOT = Path(__file__).resolve().parents[1]
ATTO = dict(embed_dim=32, num_heads=1, stages=(1, 1, 3, 1))
VIDEO = dict(q_stride=(1, 2, 2), mask_unit_size=(1, 8, 8), patch_kernel=(3, 7, 7),
             patch_stride=(2, 4, 4), patch_padding=(1, 3, 3), sep_pos_embed=True)
ATTO_DECODER = dict(decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)


def _official_sd(model: nn.Module) -> dict:
    """State dict of an official model with a non-trivial head (logits not ~0)."""
    if hasattr(model, "head"):
        nn.init.normal_(model.head.projection.weight, std=0.02)
    return model.state_dict()


def _logits(off: nn.Module, x: torch.Tensor) -> torch.Tensor:
    off.head.act_func = lambda t: t  # the official head applies softmax in eval mode
    return off(x)


def _atto(**kw) -> nn.Module:
    return abswin.create_model("hiera_atto_224", **kw)


# ---------------------------------------------------------------- official checkpoints
def test_official_image_classifier(tmp_path):
    torch.manual_seed(0)
    off = hiera.hiera_tiny_224(pretrained=False).eval()
    path = tmp_path / "hiera_tiny_224.pth"
    torch.save({"model_state": _official_sd(off)}, path)

    ours = abswin.create_model("hiera_tiny_224", pos_embed="absolute").eval()
    rep = load_checkpoint(ours, path, strict=True)
    assert rep.format == "official" and rep.kind == "image classifier, absolute position embedding"
    assert not (rep.missing or rep.unexpected or rep.ignored or rep.resized or rep.reinitialised)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref, out = _logits(off, x), ours(x)
    assert out.abs().max() > 1e-2
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_other_num_classes_reinitialises_head(tmp_path):
    torch.manual_seed(0)
    src = _atto(pos_embed="absolute")
    path = tmp_path / "atto.pth"
    torch.save({"model_state": src.state_dict()}, path)
    dst = _atto(pos_embed="absolute", num_classes=10)
    before = dst.head.projection.weight.clone()
    rep = load_checkpoint(dst, path)
    assert sorted(rep.reinitialised) == ["head.projection.bias", "head.projection.weight"]
    assert not rep.missing and not rep.unexpected
    assert torch.equal(dst.head.projection.weight, before)
    assert torch.equal(dst.norm.weight, src.norm.weight)
    assert "re-initialised" in str(rep)


def test_official_video_classifier_and_temporal_resize(tmp_path):
    torch.manual_seed(0)
    off = hiera.Hiera(input_size=(16, 64, 64), num_classes=400, **ATTO, **VIDEO).eval()
    path = tmp_path / "video.pth"
    torch.save({"model_state": _official_sd(off)}, path)
    x = torch.randn(1, 3, 16, 64, 64)

    ours = abswin.create_model("hiera_atto_16x224", pos_embed="absolute", img_size=64).eval()
    rep = load_checkpoint(ours, path, strict=True)
    assert rep.format == "official" and rep.kind.startswith("video classifier")
    with torch.no_grad():
        torch.testing.assert_close(ours(x), _logits(off, x), atol=1e-4, rtol=0)

    # 16 -> 32 frames: 8 -> 16 temporal tokens, linearly
    long = abswin.create_model("hiera_atto_16x224", pos_embed="absolute", img_size=64, num_frames=32).eval()
    rep = load_checkpoint(long, path, strict=True)
    assert rep.resized == {"pos_embed_temporal": ((1, 8, 32), (1, 16, 32))}
    torch.testing.assert_close(long.pos_embed_temporal, pe.resize_temporal(off.pos_embed_temporal, 16))
    with torch.no_grad():
        assert long(torch.randn(1, 3, 32, 64, 64)).shape == (1, 400)


def test_official_mae_into_mae_and_classifier(tmp_path):
    torch.manual_seed(0)
    off = hiera.MaskedAutoencoderHiera(input_size=(224, 224), q_pool=2, **ATTO, **ATTO_DECODER)
    nn.init.normal_(off.encoder_norm.weight)
    path = tmp_path / "mae.pth"
    torch.save({"model_state": off.state_dict()}, path)

    mae = abswin.create_model("mae_hiera_atto_224", pos_embed="absolute")
    rep = load_checkpoint(mae, path, strict=True)
    assert rep.format == "official" and rep.kind == "image MAE, absolute position embedding"
    x = torch.randn(1, 3, 224, 224)
    mask = off.get_random_mask(x, 0.6)
    with torch.no_grad():
        torch.testing.assert_close(mae(x, mask=mask)[0], off(x, mask=mask)[0], atol=1e-5, rtol=1e-5)

    clf = _atto(pos_embed="absolute")
    rep = load_checkpoint(clf, path)
    assert torch.equal(clf.norm.weight, off.encoder_norm.weight)
    assert sorted(rep.missing) == ["head.projection.bias", "head.projection.weight"]
    assert not rep.unexpected
    assert "mask_token" in rep.ignored and "decoder_pos_embed" in rep.ignored
    assert all(k.startswith(("decoder_", "multi_scale_fusion_heads.", "mask_token")) for k in rep.ignored)
    with pytest.raises(CheckpointError, match="strict load: 2 missing"):
        load_checkpoint(_atto(pos_embed="absolute"), path, strict=True)


def test_official_video_mae_same_loss_and_resized_decoder(tmp_path):
    torch.manual_seed(0)
    off = hiera.MaskedAutoencoderHiera(input_size=(16, 64, 64), q_pool=2, **ATTO, **VIDEO, **ATTO_DECODER)
    path = tmp_path / "video_mae.pth"
    torch.save({"model_state": off.state_dict()}, path)

    mae = abswin.create_model("mae_hiera_atto_16x224", pos_embed="absolute", img_size=64)
    assert load_checkpoint(mae, path, strict=True).kind == "video MAE, absolute position embedding"
    x = torch.randn(1, 3, 16, 64, 64)
    mask = off.get_random_mask(x, 0.75)
    with torch.no_grad():
        torch.testing.assert_close(mae(x, mask=mask)[0], off(x, mask=mask)[0], atol=1e-5, rtol=1e-5)

    # 32 frames at 128px: decoder grid 8x4x4 -> 16x8x8, per frame bicubic then linear in time
    big = abswin.create_model("mae_hiera_atto_16x224", pos_embed="absolute", img_size=128, num_frames=32)
    rep = load_checkpoint(big, path, strict=True)
    assert rep.resized["decoder_pos_embed"] == ((1, 8 * 16, 128), (1, 16 * 64, 128))
    assert rep.resized["pos_embed_spatial"] == ((1, 256, 32), (1, 1024, 32))
    d = off.decoder_pos_embed.detach().view(8, 16, 128)
    spatial = torch.cat([pe.resize_absolute(f[None], (4, 4), (8, 8)) for f in d])  # [8, 64, C]
    want = pe.resize_temporal(spatial.transpose(0, 1), 16).transpose(0, 1).reshape(1, -1, 128)
    torch.testing.assert_close(big.decoder_pos_embed.detach(), want)
    with torch.no_grad():
        assert torch.isfinite(big(torch.randn(1, 3, 32, 128, 128), mask_ratio=0.9)[0])


# ---------------------------------------------------------------- timm checkpoints
def test_timm_abswin_pth_and_safetensors(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref_model = timm.create_model("hiera_small_abswin_256", pretrained=False).eval()
    for name, p in ref_model.named_parameters():  # make LayerScale and head matter
        if name.endswith("gamma"):
            nn.init.uniform_(p, 0.2, 0.5)
    nn.init.normal_(ref_model.head.fc.weight, std=0.02)
    sd = ref_model.state_dict()
    assert sd["pos_embed"].dim() == 4 and "pos_embed_win" in sd
    torch.save(sd, tmp_path / "timm.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "timm.safetensors"))
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        ref = ref_model(x)
    assert ref.abs().max() > 1e-2

    ours = abswin.create_model("hiera_small_abswin_256", global_pos_antialias=False).eval()
    for file in ("timm.pth", "timm.safetensors"):
        with torch.no_grad():  # start from a blank model each time
            for p in ours.parameters():
                p.zero_()
        ours.global_pos_antialias = False
        rep = load_checkpoint(ours, tmp_path / file, strict=True)
        assert rep.format == "timm" and rep.kind == "image classifier, abs-win position embedding"
        assert ours.global_pos_antialias is True and "antialias" in str(rep)
        assert torch.equal(ours.pos_embed_global, sd["pos_embed"]) and torch.equal(ours.norm.bias, sd["head.norm.bias"])
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref, atol=1e-4, rtol=0)


def test_timm_old_names_and_abswin_into_absolute(tmp_path):
    """Older timm ``pos_embed_abs``; an abs-win file into an absolute model is composed exactly."""
    torch.manual_seed(0)
    src = _atto(global_pos_antialias=True)
    sd = {k: v for k, v in src.state_dict().items() if k not in ("pos_embed_window", "pos_embed_global")}
    sd.update(pos_embed_abs=src.pos_embed_global.detach(), pos_embed_win=src.pos_embed_window.detach())
    sd["head.fc.weight"], sd["head.fc.bias"] = sd.pop("head.projection.weight"), sd.pop("head.projection.bias")
    path = tmp_path / "old_timm.pth"
    torch.save(sd, path)
    dst = _atto(pos_embed="absolute")
    rep = load_checkpoint(dst, path, strict=True)
    assert rep.format == "timm" and "composed" in str(rep)
    torch.testing.assert_close(dst.get_pos_embed(), src.get_pos_embed())  # timm composes with antialias
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- position embeddings
def test_224_checkpoint_into_448_model(tmp_path):
    torch.manual_seed(0)
    src = _atto(pos_embed="absolute")
    torch.save(src.state_dict(), tmp_path / "abs.pth")
    baked = _atto(pos_embed="absolute", img_size=448).eval()
    rep = load_checkpoint(baked, tmp_path / "abs.pth", strict=True)
    assert rep.resized == {"pos_embed": ((1, 3136, 32), (1, 12544, 32))}
    torch.testing.assert_close(baked.pos_embed, pe.resize_absolute(src.pos_embed, (56, 56), (112, 112)))
    naive = _atto(pos_embed="absolute", img_size=448, pretrain_grid=(56, 56)).eval()  # resizes on the fly
    load_checkpoint(naive, tmp_path / "abs.pth", strict=True)
    x = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        torch.testing.assert_close(baked(x), naive(x), atol=1e-5, rtol=0)

    src = _atto()
    torch.save(src.state_dict(), tmp_path / "abswin.pth")
    big = _atto(img_size=448).eval()
    rep = load_checkpoint(big, tmp_path / "abswin.pth", strict=True)
    assert rep.format == "abswin" and not rep.resized and not rep.converted
    assert torch.equal(big.pos_embed_window, src.pos_embed_window)
    assert torch.equal(big.pos_embed_global, src.pos_embed_global)
    with torch.no_grad():
        assert big(x).shape == (1, 1000)


def test_abswin_global_resized_window_size_checked(tmp_path):
    src = _atto(global_pos_size=14)
    torch.save(src.state_dict(), tmp_path / "g14.pth")
    dst = _atto()
    rep = load_checkpoint(dst, tmp_path / "g14.pth", strict=True)
    assert rep.resized == {"pos_embed_global": ((1, 32, 14, 14), (1, 32, 7, 7))}
    torch.testing.assert_close(dst.pos_embed_global, pe.resize_global(src.pos_embed_global, (7, 7)))
    with pytest.raises(CheckpointError, match=r"pos_embed_window has shape \(1, 32, 8, 8\) .* \(1, 32, 4, 4\)"):
        load_checkpoint(_atto(mask_unit_size=(4, 4)), tmp_path / "g14.pth")


def test_absolute_into_abswin_is_decomposed(tmp_path, caplog):
    torch.manual_seed(0)
    w, g = torch.randn(1, 32, 8, 8), torch.randn(1, 32, 7, 7)
    pos = pe.abswin_embed(w, g, (56, 56)).flatten(2).transpose(1, 2)
    src = _atto(pos_embed="absolute")
    sd = src.state_dict()
    torch.save({"model_state": dict(sd, pos_embed=pos)}, tmp_path / "tiled.pth")
    torch.save({"model_state": sd}, tmp_path / "random.pth")

    dst = _atto(global_pos_antialias=True)  # the split assumes plain bicubic: switched off
    with caplog.at_level("INFO", logger="abswin"):
        rep = load_checkpoint(dst, tmp_path / "tiled.pth", strict=True)
    assert rep.explained > 0.999 and dst.global_pos_antialias is False
    assert "reproduces" in str(rep) and any("reproduces" in r.message and r.levelname == "WARNING" for r in caplog.records)
    torch.testing.assert_close(dst.get_pos_embed(), pos, atol=2e-3, rtol=0)

    # a learned-looking (random) embedding: reported, whatever fraction it is
    rep = load_checkpoint(_atto(), tmp_path / "random.pth")
    assert 0.0 <= rep.explained < 0.5 and f"{rep.explained:.2%}" in str(rep)

    # window-only and global-only models take the whole split, exactly as composed
    for kw in (dict(global_pos_size=None), dict(window_pos_embed=False)):
        m = _atto(**kw)
        rep = load_checkpoint(m, tmp_path / "tiled.pth", strict=True)
        parts = pe.absolute_to_abswin(pos, (56, 56), (8, 8) if "global_pos_size" in kw else (1, 1),
                                      (1, 1) if "global_pos_size" in kw else (7, 7))
        assert rep.explained == pytest.approx(parts.explained)
        recon = pe.abswin_embed(parts.window, parts.glob, (56, 56)).flatten(2).transpose(1, 2)
        torch.testing.assert_close(m.get_pos_embed(), recon, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- our own formats
def test_lightning_and_wrapped_round_trip(tmp_path):
    torch.manual_seed(0)
    src = _atto()
    sd = src.state_dict()
    ckpt = {
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.5.0",
        "state_dict": {**{"model." + k: v for k, v in sd.items()}, "criterion.weight": torch.ones(3)},
        "hyper_parameters": {"lr": 1e-3, "model": "hiera_atto_224"},
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    dst = _atto()
    rep = load_checkpoint(dst, tmp_path / "last.ckpt", strict=True)
    assert rep.format == "lightning" and rep.ignored == ["criterion.weight"] and rep.loaded == len(sd)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, sd[k]), k
    for wrapped in ({"model": sd}, {"state_dict": sd}):
        torch.save(wrapped, tmp_path / "w.pth")
        assert load_checkpoint(_atto(), tmp_path / "w.pth", strict=True).format == "abswin"


def test_key_mapping_per_format_is_pure():
    """One mapping per format: a state dict in, our names out; the input is left as it was."""
    w = torch.zeros(2)
    timm_sd = {"head.fc.weight": w, "head.norm.bias": w, "pos_embed_win": w,
               "pos_embed": torch.zeros(1, 2, 3, 3), "blocks.0.attn.qkv.weight": w}
    before = dict(timm_sd)
    assert detect_format({}, None, timm_sd) == "timm"
    assert list(KEY_MAPPINGS["timm"](timm_sd)) == ["head.projection.weight", "norm.bias", "pos_embed_window",
                                                   "pos_embed_global", "blocks.0.attn.qkv.weight"]
    assert timm_sd == before

    # a Lightning checkpoint of a compiled model; a DDP-wrapped official file
    lightning_sd = {"model._orig_mod.pos_embed": w, "model._orig_mod.norm.weight": w, "criterion.weight": w}
    assert detect_format({"state_dict": lightning_sd}, "state_dict", lightning_sd) == "lightning"
    assert list(KEY_MAPPINGS["lightning"](lightning_sd)) == ["pos_embed", "norm.weight"]
    assert lightning_extras(lightning_sd) == ["criterion.weight"]
    official_sd = {"module.pos_embed": w, "module.head.projection.weight": w}
    assert detect_format({"model_state": official_sd}, "model_state", official_sd) == "official"
    assert list(KEY_MAPPINGS["official"](official_sd)) == ["pos_embed", "head.projection.weight"]
    assert detect_format({"model_state": official_sd, "abswin": {}}, "model_state", official_sd) == "abswin"


@pytest.mark.parametrize("src_kw, dst_kw, case", [
    (dict(pos_embed="absolute"), dict(pos_embed="absolute", img_size=448), "resize_absolute_to_absolute"),
    (dict(pos_embed="absolute"), dict(), "split_absolute_into_abswin"),
    (dict(global_pos_size=14), dict(), "fit_abswin_to_abswin"),
    (dict(), dict(pos_embed="absolute"), "compose_abswin_into_absolute"),
])
def test_one_pos_embed_function_per_case(src_kw, dst_kw, case):
    """The dispatcher picks the case's function; it fits the state dict, never the model."""
    sd, dst = _atto(**src_kw).state_dict(), _atto(**dst_kw)
    model_sd = {k: v.clone() for k, v in dst.state_dict().items()}
    fit = Fitting(dst, model_sd, LoadReport(format="abswin"), Path("x.pth"), file_antialias=False)
    fitted = dict(sd)
    fit_position_embeddings(fitted, fit)
    assert spatial_case(sd, fit).__name__ == case
    assert all(fitted[k].shape == v.shape for k, v in model_sd.items() if k.startswith("pos_embed"))
    assert all(torch.equal(v, model_sd[k]) for k, v in dst.state_dict().items())


# ---------------------------------------------------------------- bad files: one-line errors
class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good.pth"
    torch.save({"model_state": _atto().state_dict()}, good)
    data = good.read_bytes()
    marker = tmp_path / "PWNED"
    files = {
        "corrupt": (tmp_path / "corrupt.pth", "corrupt"),
        "truncated": (tmp_path / "truncated.pth", "truncated"),
        "truncated_st": (tmp_path / "truncated.safetensors", "truncated"),
        "torch_save_code": (tmp_path / "evil_torch.pth", "refused: its pickle would run code .*system"),
        "pickle_code": (tmp_path / "evil_pickle.pkl", "refused: its pickle would run code .*system"),
        "missing": (tmp_path / "nope.pth", "no such file"),
        "empty": (tmp_path / "empty.pth", "empty"),
        "protocol4": (tmp_path / "p4.pth", "cannot be read safely"),
        "not_a_dict": (tmp_path / "tensor.pth", "holds a Tensor, not a state dict"),
    }
    files["corrupt"][0].write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                                  dtype=torch.uint8).numpy().tobytes())
    files["truncated"][0].write_bytes(data[: len(data) // 2])
    from safetensors.torch import save_file

    save_file({"w": torch.randn(64, 64)}, str(tmp_path / "full.safetensors"))
    st = (tmp_path / "full.safetensors").read_bytes()
    files["truncated_st"][0].write_bytes(st[: len(st) // 2])
    torch.save({"model_state": _RunsCode(marker)}, files["torch_save_code"][0])
    with open(files["pickle_code"][0], "wb") as f:
        pickle.dump({"model_state": _RunsCode(marker)}, f, protocol=4)
    files["empty"][0].write_bytes(b"")
    torch.save({"w": torch.randn(2)}, files["protocol4"][0], pickle_protocol=4)
    torch.save(torch.randn(2), files["not_a_dict"][0])
    return files


def test_bad_files_are_one_line_errors_and_never_run_code(tmp_path):
    files = _bad_files(tmp_path)
    small = _atto(embed_dim=48)  # shape that cannot be reconciled
    torch.save(small.state_dict(), tmp_path / "wide.pth")
    files["shape"] = (tmp_path / "wide.pth", r"pos_embed_window has shape \(1, 48, 8, 8\) in the file "
                                             r"but \(1, 32, 8, 8\) in the model \(and \d+ more")
    model = _atto()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name, (path, pattern) in files.items():
        with pytest.raises(CheckpointError, match=pattern) as info:
            load_checkpoint(model, path)
        msg = str(info.value)
        assert str(path) in msg and "\n" not in msg, (name, msg)
        err = info.value  # no chained traceback from torch / pickle / safetensors
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__), name
    assert not (tmp_path / "PWNED").exists()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched


# ---------------------------------------------------------------- the convert CLI
def test_convert_cli(tmp_path):
    torch.manual_seed(0)
    src = _atto(pos_embed="absolute")
    torch.save({"model_state": src.state_dict()}, tmp_path / "official.pth")
    dst = tmp_path / "out" / "atto_abswin.pth"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "abswin.convert", str(tmp_path / "official.pth"), str(dst),
         "--model", "hiera_atto_224", "--pos-embed", "abswin", "--global-pos-size", "7"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "official checkpoint" in proc.stdout and "reproduces" in proc.stdout and "%" in proc.stdout

    ckpt = torch.load(dst, map_location="cpu", weights_only=True)
    meta = ckpt["abswin"]
    assert meta["model"] == "hiera_atto_224" and meta["options"]["pos_embed"] == "abswin"
    assert meta["options"]["global_pos_size"] == [7, 7] and meta["source_format"] == "official"
    model = abswin.create_model(meta["model"], **meta["options"])
    rep = load_checkpoint(model, dst, strict=True)
    assert rep.format == "abswin" and rep.explained is None and not rep.converted
    assert torch.equal(model.pos_embed_window, ckpt["model_state"]["pos_embed_window"])

    # safetensors output keeps the metadata; errors are one line and exit code 2
    assert convert_main([str(dst), str(tmp_path / "a.safetensors"), "--model", "hiera_atto_224"]) == 0
    assert load_checkpoint(_atto(global_pos_antialias=True), tmp_path / "a.safetensors", strict=True).format == "abswin"
    assert convert_main([str(tmp_path / "missing.pth"), str(tmp_path / "b.pth"), "--model", "hiera_atto_224"]) == 2


def test_convert_keeps_a_finetuned_head_or_refuses_to_replace_it(tmp_path, capsys):
    """A 3-class finetuned classifier converted without --num-classes keeps its trained head; asking
    for another class count is refused in one line unless --drop-head says to start a new head."""
    torch.manual_seed(0)
    src = _atto(num_classes=3)
    torch.save({"model_state": src.state_dict()}, tmp_path / "finetuned.pth")
    assert convert_main([str(tmp_path / "finetuned.pth"), str(tmp_path / "kept.pth"), "--model", "hiera_atto_224"]) == 0
    kept = torch.load(tmp_path / "kept.pth", map_location="cpu", weights_only=True)
    assert kept["abswin"]["options"]["num_classes"] == 3
    assert torch.equal(kept["model_state"]["head.projection.weight"], src.state_dict()["head.projection.weight"])

    args = [str(tmp_path / "finetuned.pth"), str(tmp_path / "new.pth"), "--model", "hiera_atto_224",
            "--num-classes", "1000"]
    capsys.readouterr()
    assert convert_main(args) == 2 and not (tmp_path / "new.pth").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained head of 3 classes" in err[0] and "--drop-head" in err[0]
    assert convert_main([*args, "--drop-head"]) == 0
    assert torch.load(tmp_path / "new.pth", weights_only=True)["abswin"]["options"]["num_classes"] == 1000


# ---------------------------------------------------------------- Hugging Face transformers checkpoints
def _transformers_classifier():
    """transformers' HieraForImageClassification shaped as hiera_tiny_224, random weights with
    non-trivial norms and head."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.HieraConfig(embed_dim=96, num_heads=[1, 2, 4, 8], depths=[1, 2, 7, 2], num_labels=5)
    model = transformers.HieraForImageClassification(config).eval()
    for name, p in model.named_parameters():
        if "layernorm" in name:
            nn.init.normal_(p, mean=1.0 if name.endswith("weight") else 0.0, std=0.05)
    nn.init.normal_(model.classifier.weight, std=0.05)
    return model


def test_transformers_classifier_folder_and_file_give_its_logits(tmp_path):
    """A save_pretrained folder (config.json + model.safetensors, as facebook/hiera-*-hf) and its
    weights file load into ours with every tensor used and give transformers' logits."""
    hf = _transformers_classifier()
    hf.save_pretrained(tmp_path / "hiera-tiny-hf")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = hf(pixel_values=x).logits
    for source in (tmp_path / "hiera-tiny-hf", tmp_path / "hiera-tiny-hf" / "model.safetensors"):
        ours = abswin.create_model("hiera_tiny_224", pos_embed="absolute", num_classes=5).eval()
        rep = load_checkpoint(ours, source, strict=True)
        assert rep.format == "transformers" and rep.kind == "image classifier, absolute position embedding"
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref, atol=1e-4, rtol=0)
    assert ref.abs().max() > 0.1


def test_transformers_backbone_and_conversion_to_abswin(tmp_path):
    """HieraModel (no classifier, no 'hiera.' prefix) gives its pooled features; the classifier
    converts to abs-win with our converter and runs at 384 px."""
    transformers = pytest.importorskip("transformers")
    hf = _transformers_classifier()
    backbone = transformers.HieraModel(hf.config).eval()
    backbone.load_state_dict({k.removeprefix("hiera."): v for k, v in hf.state_dict().items() if k.startswith("hiera.")})
    torch.save(backbone.state_dict(), tmp_path / "backbone.bin")
    ours = abswin.create_model("hiera_tiny_224", pos_embed="absolute", num_classes=0).eval()
    assert load_checkpoint(ours, tmp_path / "backbone.bin", strict=True).format == "transformers"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), backbone(pixel_values=x).pooler_output, atol=1e-4, rtol=0)

    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(tmp_path / "hf.safetensors"))
    from abswin.convert import main as convert

    assert convert([str(tmp_path / "hf.safetensors"), str(tmp_path / "abswin.pth"), "--model", "hiera_tiny_224"]) == 0
    at384 = abswin.create_model("hiera_tiny_224", img_size=384, num_classes=5).eval()
    rep = load_checkpoint(at384, tmp_path / "abswin.pth", strict=True)
    assert at384.pos_embed_mode == "abswin" and rep.format == "abswin"
    with torch.no_grad():
        assert torch.isfinite(at384(torch.randn(1, 3, 384, 384))).all()


def test_a_transformers_video_hiera_is_refused_in_one_line(tmp_path):
    sd = {"hiera.embeddings.patch_embeddings.projection.weight": torch.zeros(96, 3, 3, 7, 7),
          "hiera.embeddings.position_embeddings": torch.zeros(1, 8 * 56 * 56, 96)}
    torch.save(sd, tmp_path / "video.bin")
    with pytest.raises(CheckpointError, match=r"video.bin: a transformers video Hiera keeps one joint position "
                                              r"embedding .*: not supported") as e:
        load_checkpoint(abswin.create_model("hiera_tiny_224"), tmp_path / "video.bin")
    assert "\n" not in str(e.value)
