"""The model library: names, shapes, parity with the official Hiera, fast attention, MAE."""

from __future__ import annotations

import math

import hiera
import pytest
import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import abswin
from abswin.models.registry import model_args


def _official(name: str, **kw):
    return getattr(hiera, name)(pretrained=False, **kw)


def _pair(name: str, **official_kw):
    """An official model and ours with its (randomly initialised) weights, head made non-trivial."""
    torch.manual_seed(0)
    off = _official(name, **official_kw)
    if hasattr(off, "head"):
        nn.init.normal_(off.head.projection.weight, std=0.02)
        off.head.act_func = lambda t: t  # compare logits, not the official eval softmax
    ours = abswin.create_model(name, pos_embed="absolute")
    ours.load_state_dict(off.state_dict(), strict=True)
    return off, ours


# ---------------------------------------------------------------- registry and API
OFFICIAL_NAMES = [n for n in abswin.list_models() if hasattr(hiera, n)]


def test_official_names_all_present():
    assert len(OFFICIAL_NAMES) == 20  # 6 image + 4 video, classifier and MAE
    for n in ("hiera_atto_224", "mae_hiera_atto_224", "hiera_atto_16x224", "hiera_small_abswin_256"):
        assert n in abswin.list_models()
    assert abswin.list_models("mae_*") == [n for n in abswin.list_models() if n.startswith("mae_")]


@pytest.mark.parametrize("name", OFFICIAL_NAMES)
def test_same_parameters_as_official(name, monkeypatch):
    """Every size has exactly the official parameter names and shapes (built on 'meta')."""
    linspace = torch.linspace  # the official code calls .item() on it: keep it on the CPU
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    with torch.device("meta"):
        off = _official(name)
        ours = abswin.create_model(name, pos_embed="absolute")
    theirs = {k: tuple(v.shape) for k, v in off.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == theirs


def test_abswin_parameters_are_size_independent():
    with torch.device("meta"):
        a = abswin.create_model("hiera_base_224")
        b = abswin.create_model("hiera_base_224", img_size=448)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert tuple(a.pos_embed_window.shape) == (1, 96, 8, 8)
    assert tuple(a.pos_embed_global.shape) == (1, 96, 7, 7)


def test_bad_names_and_options_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown model 'hiera_gigantic_224'; available: .*hiera_base_224"):
        abswin.create_model("hiera_gigantic_224")
    with pytest.raises(ValueError, match="unknown option 'pos_embedding'"):
        abswin.create_model("hiera_atto_224", pos_embedding="abswin")
    with pytest.raises(ValueError, match="img_size=240 is not allowed.*multiple of 32.*224 or 256"):
        abswin.create_model("hiera_atto_224", img_size=240)
    with pytest.raises(ValueError, match="num_frames=15 is not allowed"):
        abswin.create_model("hiera_atto_16x224", num_frames=15)
    with pytest.raises(ValueError, match="pos_embed='relative' is not one of"):
        abswin.create_model("hiera_atto_224", pos_embed="relative")
    with pytest.raises(ValueError, match="only for video models"):
        abswin.create_model("hiera_atto_224", num_frames=16)
    m = abswin.create_model("hiera_atto_224")
    with pytest.raises(ValueError, match=r"input of size \(256, 256\) does not match"):
        m(torch.randn(1, 3, 256, 256))


def test_overrides_reach_the_model():
    cls, args = model_args("hiera_large_16x224", num_frames=32, img_size=320, num_classes=10, drop_path_rate=0.5)
    assert args["input_size"] == (32, 320, 320) and args["num_classes"] == 10
    m = abswin.create_model("hiera_atto_224", num_classes=7, drop_path_rate=0.3, grad_ckpt=True, global_pos_size=3)
    assert m.head.projection.out_features == 7 and m.grad_ckpt
    assert tuple(m.pos_embed_global.shape[-2:]) == (3, 3)
    assert m.blocks[-1].drop_path.p == pytest.approx(0.3)
    assert abswin.create_model("hiera_atto_224", global_pos_size=None).pos_embed_global is None
    assert abswin.create_model("hiera_atto_224", window_pos_embed=False).pos_embed_window is None


# ---------------------------------------------------------------- parity with the official code
def test_image_classifier_matches_official():
    off, ours = _pair("hiera_tiny_224")
    off.eval(), ours.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref, ref_stages = off(x, return_intermediates=True)
        out = ours(x)
        stages = ours.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
    assert out.abs().max() > 1e-2  # a meaningful comparison, not of near-zero logits
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    for a, b in zip(stages, ref_stages):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    # in eval mode we return logits, the official head returns softmax
    assert not torch.allclose(out.sum(-1), torch.ones(2))


@pytest.mark.slow
def test_video_classifier_matches_official():
    off, ours = _pair("hiera_base_16x224")
    off.eval(), ours.eval()
    x = torch.randn(1, 3, 16, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), off(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "name,shape,ratio",
    [("mae_hiera_tiny_224", (2, 3, 224, 224), 0.6), ("mae_hiera_base_16x224", (1, 3, 16, 224, 224), 0.9)],
)
@pytest.mark.slow
def test_mae_matches_official(name, shape, ratio):
    off, ours = _pair(name)
    x = torch.randn(shape)
    mask = off.get_random_mask(x, ratio)
    with torch.no_grad():
        loss_ref, pred_ref, label_ref, _ = off(x, mask=mask)
        loss, pred, label, mask_out = ours(x, mask=mask)
    assert torch.equal(mask_out, mask)
    torch.testing.assert_close(loss, loss_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred, pred_ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(label, label_ref, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_mae_training_gradients_match_official():
    off, ours = _pair("mae_hiera_tiny_224")
    x = torch.randn(1, 3, 224, 224)
    mask = off.get_random_mask(x, 0.6)
    off(x, mask=mask)[0].backward()
    ours(x, mask=mask)[0].backward()
    g_off = dict(off.named_parameters())
    for n, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, g_off[n].grad, atol=1e-4, rtol=1e-3, msg=n)



def test_random_mask_draws_as_official_and_a_generator_fixes_it():
    """No generator: the global RNG, exactly as the official code. A seeded generator: that
    same draw, repeatable, and the global RNG untouched (validation masks, pictures)."""
    off, ours = _official("hiera_tiny_224"), abswin.create_model("hiera_tiny_224")
    x = torch.zeros(3, 3, 224, 224)
    torch.manual_seed(5)
    ref = off.get_random_mask(x, 0.6)
    torch.manual_seed(5)
    assert torch.equal(ours.get_random_mask(x, 0.6), ref)
    state = torch.get_rng_state()
    for _ in range(2):
        assert torch.equal(ours.get_random_mask(x, 0.6, generator=torch.Generator().manual_seed(5)), ref)
    assert torch.equal(torch.get_rng_state(), state)
    assert (ref.sum(1) == int(49 * 0.4)).all()


@pytest.mark.parametrize("video", [False, True])
def test_mae_patchify_is_the_loss_target_and_unpatchify_inverts_it(video):
    name, shape = ("mae_hiera_atto_16x224", (2, 3, 8, 64, 64)) if video else ("mae_hiera_atto_224", (2, 3, 64, 64))
    mae = abswin.create_model(name, img_size=64, **({"num_frames": 8} if video else {}))
    x = torch.randn(shape)
    patches = mae.patchify(x)
    assert patches.shape == (2, math.prod(mae.tokens_spatial_shape_final), mae.pred_stride ** 2 * 3)
    frames = x[:, :, :: mae.patch_stride[0]] if video else x  # the frames the target uses
    assert torch.equal(mae.unpatchify(patches), frames)
    everything = torch.ones(patches.shape[:2], dtype=torch.bool)
    target = mae.get_pixel_label(x, everything).view_as(patches)
    assert torch.equal(target, mae.normalize_target(patches))
    torch.testing.assert_close(target.mean(-1), torch.zeros(patches.shape[:2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(mae.denormalize_pred(target, patches), patches, atol=1e-5, rtol=0)
    mae.norm_pix_loss = False
    assert torch.equal(mae.get_pixel_label(x, everything).view_as(patches), patches)
    assert mae.denormalize_pred(target, patches) is target

# ---------------------------------------------------------------- performance-relevant behaviour
def test_attention_uses_fused_kernel_not_math():
    """With only the flash kernel allowed, our model runs (window and global attention are 4-D
    SDPA calls); the official model (5-D layout) cannot."""
    x = torch.randn(1, 3, 224, 224)
    ours = abswin.create_model("hiera_tiny_224").eval()
    with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        ours(x)
    off = _official("hiera_tiny_224").eval()
    with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]), pytest.raises(RuntimeError):
        off(x)


def test_cpu_bf16_attention_path_matches_sdpa():
    """bf16 autocast on CPU takes explicit batched GEMMs (faster than the CPU flash kernel for
    Hiera's short windows); it must agree with the SDPA path up to bf16 rounding."""
    from abswin.models.layers import MaskUnitAttention

    torch.manual_seed(0)
    for units, q_stride in ((16, 4), (1, 1)):  # window attention with q-pooling, global attention
        attn = MaskUnitAttention(32, 64, heads=2, q_stride=q_stride, window_size=64 // q_stride,
                                 use_mask_unit_attn=units > 1)
        x = torch.randn(2, 64 * units, 32)
        ref = attn(x)  # fp32: SDPA
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = attn(x)
        assert out.dtype == torch.bfloat16 and out.shape == ref.shape
        torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)


def test_mae_encoder_never_sees_masked_units():
    m = abswin.create_model("mae_hiera_atto_224")
    seen = []
    m.blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1]))
    x = torch.randn(2, 3, 224, 224)
    loss, pred, label, mask_out = m(x, mask_ratio=0.6)
    kept = int(mask_out[0].sum())
    assert kept == int(49 * 0.4)
    assert seen == [kept * 64]  # only the kept mask units' tokens enter the encoder
    # loss over masked units only: 4 prediction patches (16px) per 32px mask unit
    assert pred.shape == label.shape == (2 * (49 - kept) * 4, 16 * 16 * 3)


def test_mae_pools_twice_classifier_three_times_same_weights():
    mae = abswin.create_model("mae_hiera_atto_224")
    clf = abswin.create_model("hiera_atto_224", num_classes=0)
    assert mae.q_pool == 2 and clf.q_pool == 3
    enc = {k: v for k, v in mae.state_dict().items() if k.startswith(("blocks.", "patch_embed.", "pos_embed"))}
    missing = clf.load_state_dict(enc, strict=False).missing_keys
    assert set(missing) == {"norm.weight", "norm.bias"}


def test_dense_features_are_spatial():
    m = abswin.create_model("hiera_atto_224").eval()
    x = torch.randn(1, 3, 224, 224)
    stages = m.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
    assert [tuple(s.shape[1:3]) for s in stages] == [(56, 56), (28, 28), (14, 14), (7, 7)]
    assert [s.shape[-1] for s in stages] == [32, 64, 128, 256]
    feats = m.forward_features(x)
    torch.testing.assert_close(feats, stages[-1])
    with torch.no_grad():
        torch.testing.assert_close(m.forward_head(feats), m(x))


def test_runs_at_other_resolutions_and_frames():
    m = abswin.create_model("hiera_atto_224", img_size=320)
    assert m(torch.randn(1, 3, 320, 320)).shape == (1, 1000)
    v = abswin.create_model("hiera_atto_16x224", num_frames=8, img_size=96)
    assert v(torch.randn(1, 3, 8, 96, 96)).shape == (1, 400)
    mae = abswin.create_model("mae_hiera_atto_16x224", num_frames=8, img_size=64)
    loss = mae(torch.randn(2, 3, 8, 64, 64), mask_ratio=0.9)[0]
    assert torch.isfinite(loss)


# ---------------------------------------------------------------- training helpers
def test_grad_checkpointing_gives_identical_gradients():
    x = torch.randn(2, 3, 224, 224)
    y = torch.tensor([1, 2])
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        m = abswin.create_model("hiera_atto_224", num_classes=5, drop_path_rate=0.3, grad_ckpt=ckpt).train()
        torch.manual_seed(1)
        nn.functional.cross_entropy(m(x), y).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-5, msg=n)


def test_drop_path_is_per_sample_and_off_in_eval():
    m = abswin.create_model("hiera_atto_224", num_classes=3, drop_path_rate=0.9)
    x = torch.randn(4, 3, 224, 224)
    m.train()
    torch.manual_seed(0)
    a = m(x)
    torch.manual_seed(1)
    b = m(x)
    assert not torch.allclose(a, b)
    m.eval()
    torch.testing.assert_close(m(x), m(x))


def test_layer_decay_param_groups():
    from abswin.optim import param_groups_lrd

    m = abswin.create_model("hiera_atto_224", num_classes=10)
    groups = param_groups_lrd(m, weight_decay=0.05, layer_decay=0.5)
    by_name = {n: g for g in groups for n in g["names"]}
    last = len(m.blocks) + 1
    assert by_name["pos_embed_window"]["layer_id"] == 0 and by_name["pos_embed_global"]["layer_id"] == 0
    assert by_name["patch_embed.proj.weight"]["layer_id"] == 0
    assert by_name["blocks.0.attn.qkv.weight"]["layer_id"] == 1
    assert by_name["blocks.5.mlp.fc1.weight"]["layer_id"] == 6
    assert by_name["head.projection.weight"]["layer_id"] == last
    assert by_name["head.projection.weight"]["lr_scale"] == 1.0
    assert by_name["blocks.0.attn.qkv.weight"]["lr_scale"] == 0.5 ** (last - 1)
    for name in ("pos_embed_window", "pos_embed_global", "blocks.0.attn.qkv.bias", "norm.weight", "blocks.2.norm1.weight"):
        assert by_name[name]["weight_decay"] == 0.0, name
    for name in ("blocks.0.attn.qkv.weight", "head.projection.weight", "patch_embed.proj.weight"):
        assert by_name[name]["weight_decay"] == 0.05, name
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    torch.optim.AdamW(groups, lr=1e-3)  # groups are valid optimizer input


@pytest.mark.parametrize(
    "name,pos,names",
    [
        ("mae_hiera_atto_224", "abswin", {"pos_embed_window", "pos_embed_global", "mask_token", "decoder_pos_embed"}),
        ("mae_hiera_atto_16x224", "absolute",
         {"pos_embed_spatial", "pos_embed_temporal", "mask_token", "decoder_pos_embed"}),
        ("hiera_atto_16x224", "abswin", {"pos_embed_window", "pos_embed_global", "pos_embed_temporal"}),
        ("hiera_atto_224", "absolute", {"pos_embed"}),
    ],
)
def test_no_weight_decay_comes_from_the_model(name, pos, names):
    """The optimizer skips weight decay on every 1-D parameter and on exactly the names the
    model's ``no_weight_decay()`` gives: every position embedding, MAE's mask token and
    decoder position embedding."""
    from abswin.optim import param_groups_lrd

    m = abswin.create_model(name, pos_embed=pos)
    assert m.no_weight_decay() == names
    groups = param_groups_lrd(m, weight_decay=0.05, layer_decay=0.5)
    undecayed = {n for g in groups if g["weight_decay"] == 0.0 for n in g["names"]}
    assert undecayed == names | {n for n, p in m.named_parameters() if p.ndim == 1}
    by_name = {n: g for g in groups for n in g["names"]}
    last = len(m.blocks) + 1
    for n in names:
        assert by_name[n]["layer_id"] == (last if n in ("mask_token", "decoder_pos_embed") else 0), n
