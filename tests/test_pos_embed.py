"""Position embeddings: the abs-win invariant, the naive-interpolation bug, temporal resize."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import abswin
from abswin.models import pos_embed as pe


def _grid(model) -> torch.Tensor:
    """The model's composed spatial embedding as [1, C, H, W]."""
    h, w = model.tokens_spatial_shape[-2:]
    return model.get_pos_embed()[:, : h * w].reshape(1, h, w, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("img_size", [224, 256, 320, 448])
def test_abswin_is_tiled_window_plus_interpolated_global(img_size):
    torch.manual_seed(0)
    m = abswin.create_model("hiera_base_224", img_size=img_size)
    grid = _grid(m)
    h = img_size // 4
    glob = F.interpolate(m.pos_embed_global, size=(h, h), mode="bicubic", align_corners=False)
    window_part = grid - glob
    for i in range(0, h, 8):
        for j in range(0, h, 8):
            torch.testing.assert_close(window_part[..., i : i + 8, j : j + 8], m.pos_embed_window, atol=1e-6, rtol=0)


def test_same_weights_at_every_size():
    """A model trained at 224 runs at 256/320/384/448 with the very same parameters."""
    m224 = abswin.create_model("hiera_atto_224")
    for size in (256, 320, 384, 448):
        m = abswin.create_model("hiera_atto_224", img_size=size)
        m.load_state_dict(m224.state_dict(), strict=True)
        assert m(torch.randn(1, 3, size, size)).shape == (1, 1000)


def test_tile_and_crop_when_grid_is_not_a_multiple_of_the_window():
    torch.manual_seed(0)
    window, glob = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 7, 7)
    out = pe.abswin_embed(window, glob, (60, 44))
    assert out.shape == (1, 4, 60, 44)
    rest = out - pe.resize_global(glob, (60, 44))
    torch.testing.assert_close(rest[..., 56:, 40:], window[..., :4, :4], atol=1e-6, rtol=0)
    torch.testing.assert_close(rest[..., 8:16, 32:40], window, atol=1e-6, rtol=0)


def test_window_only_and_global_only():
    torch.manual_seed(0)
    w, g = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 7, 7)
    assert torch.equal(pe.abswin_embed(w, None, (16, 16)), w.repeat(1, 1, 2, 2))
    torch.testing.assert_close(pe.abswin_embed(None, g, (56, 56)), F.interpolate(g, (56, 56), mode="bicubic"))
    with pytest.raises(ValueError, match="needs a window embedding, a global embedding or both"):
        pe.abswin_embed(None, None, (8, 8))


def test_global_antialias_option_changes_the_kernel():
    g = torch.randn(1, 4, 7, 7)
    plain = pe.resize_global(g, (56, 56), antialias=False)
    aa = pe.resize_global(g, (56, 56), antialias=True)
    assert not torch.allclose(plain, aa)
    m = abswin.create_model("hiera_atto_224", global_pos_antialias=True)
    torch.testing.assert_close(
        _grid(m) - pe.tile_window(m.pos_embed_window, (56, 56)),
        F.interpolate(m.pos_embed_global, (56, 56), mode="bicubic", antialias=True),
        atol=1e-6, rtol=0,
    )


def test_naive_interpolation_breaks_window_alignment_abswin_keeps_it():
    """The paper's bug, measured with its own metric (Fig. 4)."""
    torch.manual_seed(0)
    window = torch.randn(1, 32, 8, 8)
    learned = pe.tile_window(window, (56, 56)) + 0.1 * torch.randn(1, 32, 56, 56)  # a tiled, learned-like embedding
    flat = learned.flatten(2).transpose(1, 2)
    at_224 = pe.window_similarity(flat, (8, 8), grid=(56, 56))
    naive_256 = pe.window_similarity(pe.resize_absolute(flat, (56, 56), (64, 64)), (8, 8), grid=(64, 64))
    abswin_256 = pe.window_similarity(pe.abswin_embed(window, None, (64, 64)), (8, 8))
    assert at_224 > 0.95
    assert naive_256 < 0.5 * at_224  # interpolating misaligns the pattern with the windows
    assert abswin_256 == pytest.approx(1.0, abs=1e-6)  # tiling keeps it exactly


def test_window_similarity_on_any_model():
    m = abswin.create_model("hiera_atto_224", pos_embed="absolute")
    s = pe.window_similarity(m.get_pos_embed(), (8, 8), grid=(56, 56))
    assert -1.0 <= s <= 1.0
    assert abs(s) < 0.2  # a random init is not tiled
    m2 = abswin.create_model("hiera_atto_224", global_pos_size=None)  # window only
    assert abswin.window_similarity(_grid(m2)) == pytest.approx(1.0, abs=1e-6)


def test_temporal_embedding_is_linearly_interpolated():
    ramp = torch.linspace(0, 7, 8).view(1, 8, 1).repeat(1, 1, 3)
    out = pe.resize_temporal(ramp, 16)
    assert out.shape == (1, 16, 3)
    diffs = out[0, 1:-1, 0].diff()
    torch.testing.assert_close(diffs, torch.full_like(diffs, 0.5))  # linear inside
    assert torch.equal(pe.resize_temporal(ramp, 8), ramp)


def test_video_16_to_32_frames():
    v16 = abswin.create_model("hiera_atto_16x224", img_size=64)
    v32 = abswin.create_model("hiera_atto_16x224", img_size=64, num_frames=32)
    assert v32.get_pos_embed().shape[1] == 16 * 16 * 16
    # the same spatial+temporal parameters resize on the fly when the input size changes
    v16.set_input_size((32, 64, 64))
    pos = v16.get_pos_embed().view(1, 16, 256, -1)
    temporal = pe.resize_temporal(v16.pos_embed_temporal, 16)
    spatial = pos - temporal[:, :, None]
    torch.testing.assert_close(spatial, spatial[:, :1].expand_as(spatial), atol=1e-6, rtol=0)
    assert v16(torch.randn(1, 3, 32, 64, 64)).shape == (1, 400)


def test_absolute_mode_resizes_naively_on_the_fly():
    m = abswin.create_model("hiera_atto_224", pos_embed="absolute", pretrain_grid=(56, 56), img_size=256)
    assert m.pos_embed.shape == (1, 56 * 56, 32)
    expected = pe.resize_absolute(m.pos_embed, (56, 56), (64, 64))
    torch.testing.assert_close(m.get_pos_embed(), expected)
    ref = F.interpolate(m.pos_embed.reshape(1, 56, 56, 32).permute(0, 3, 1, 2), (64, 64), mode="bicubic", align_corners=False)
    torch.testing.assert_close(expected, ref.permute(0, 2, 3, 1).reshape(1, -1, 32))


@pytest.mark.parametrize("method", ["lstsq", "pool"])
def test_absolute_to_abswin_recovers_a_composed_embedding(method):
    torch.manual_seed(0)
    w, g = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 7, 7)
    composed = pe.abswin_embed(w, g, (56, 56)).flatten(2).transpose(1, 2)
    dec = pe.absolute_to_abswin(composed, (56, 56), method=method)
    assert dec.window.shape == (1, 16, 8, 8) and dec.glob.shape == (1, 16, 7, 7)
    recon = pe.abswin_embed(dec.window, dec.glob, (56, 56)).flatten(2).transpose(1, 2)
    if method == "lstsq":
        assert dec.explained > 0.999
        torch.testing.assert_close(recon, composed, atol=1e-4, rtol=0)
    else:
        assert dec.explained > 0.5
    noise = torch.randn(1, 56 * 56, 16)
    assert pe.absolute_to_abswin(noise, (56, 56)).explained < 0.1  # nothing to explain in noise
