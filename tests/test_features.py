"""Hiera as a dense-task backbone (abswin/models/features.py, Hiera.forward_intermediates): timm's
interface (stage selection, NCHW / NCTHW maps, features_only), parity with the official
``return_intermediates`` and timm's ``forward_intermediates`` on the same weights, any input size."""

from __future__ import annotations

import hiera
import pytest
import torch
import torch.nn as nn

import abswin
from abswin.checkpoint import load_checkpoint


def test_stages_match_the_official_return_intermediates():
    torch.manual_seed(0)
    off = hiera.hiera_tiny_224(pretrained=False).eval()
    ours = abswin.create_model("hiera_tiny_224", pos_embed="absolute").eval()
    ours.load_state_dict(off.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        _, ref = off(x, return_intermediates=True)  # channels-last [B, H, W, C] per stage
        final, maps = ours.forward_intermediates(x)
    assert [tuple(m.shape) for m in maps] == [(2, 96, 56, 56), (2, 192, 28, 28), (2, 384, 14, 14), (2, 768, 7, 7)]
    for a, b in zip(maps, ref):
        torch.testing.assert_close(a, b.permute(0, 3, 1, 2), atol=1e-4, rtol=0)
    assert final.shape == (2, 49, 768)


@pytest.fixture(scope="module")
def timm_pair(tmp_path_factory):
    """timm's abs-win Hiera with random weights, and ours loaded from its state dict file."""
    import timm

    torch.manual_seed(0)
    theirs = timm.create_model("hiera_small_abswin_256", pretrained=False).eval()
    path = tmp_path_factory.mktemp("timm") / "timm.pth"
    torch.save(theirs.state_dict(), path)
    ours = abswin.create_model("hiera_small_abswin_256").eval()
    load_checkpoint(ours, path, strict=True)
    return theirs, ours, path


@pytest.mark.parametrize("indices,count", [(None, 4), (2, 2), ([0, 2], 2), ([-1], 1)])
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_stages_match_timms_forward_intermediates(timm_pair, indices, count, fmt):
    theirs, ours, _ = timm_pair
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        ref = theirs.forward_intermediates(x, indices=indices, output_fmt=fmt, intermediates_only=True)
        maps = ours.forward_intermediates(x, indices=indices, output_fmt=fmt, intermediates_only=True)
    assert len(maps) == len(ref) == count
    for a, b in zip(maps, ref):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_features_only_at_any_size(timm_pair):
    """A features_only backbone with the blocks it needs, channels and strides for an FPN neck, and
    maps at sizes other than the model's (non-square too): the same as a model built for that size."""
    _, ours, path = timm_pair
    backbone = abswin.create_model("hiera_small_abswin_256", features_only=True, out_indices=(1, 2))
    load_checkpoint(backbone.model, path)  # the removed blocks, norm and head are reported, not loaded
    assert len(backbone.model.blocks) == ours.stage_ends[2] + 1 and isinstance(backbone.model.head, nn.Identity)
    assert backbone.channels() == [192, 384] and backbone.reduction() == [8, 16]
    x = torch.randn(2, 3, 320, 224)
    with torch.no_grad():
        maps = backbone(x)
        resized = abswin.create_model("hiera_small_abswin_256", img_size=(320, 224)).eval()
        resized.load_state_dict(ours.state_dict())
        ref = resized.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(2, 192, 40, 28), (2, 384, 20, 14)]
    for a, b in zip(maps, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_video_maps_are_ncthw():
    backbone = abswin.create_model("hiera_base_16x224", features_only=True, out_indices=(-1,), num_frames=8,
                                   img_size=64).eval()
    with torch.no_grad():
        (last,) = backbone(torch.randn(1, 3, 8, 96, 64))
    assert last.shape == (1, 768, 4, 3, 2) and backbone.reduction() == [32]


def test_bad_requests_get_one_line_errors():
    m = abswin.create_model("hiera_atto_224").eval()
    assert m.stage_indices([3, 1, 1, -1]) == [1, 3]  # the maps come in stage order, each once
    assert abswin.create_model("hiera_atto_224", features_only=True, out_indices=(3, 1)).channels() == [64, 256]
    x = torch.randn(1, 3, 224, 224)
    cases = [(dict(indices=[4]), "stage index 4 out of range: this Hiera has stages 0 to 3"),
             (dict(indices=0), "the last-n stages must be 1 to 4"),
             (dict(output_fmt="NCTHW"), "output_fmt='NCTHW': this Hiera gives 'NCHW' or 'NHWC'"),
             (dict(norm=True), "norm=True is not offered")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            m.forward_intermediates(x, **kwargs)
    with pytest.raises(ValueError, match="img_size=200 is not allowed for this Hiera: it must be a positive multiple of 32"):
        m.forward_intermediates(torch.randn(1, 3, 200, 224))
    with pytest.raises(ValueError, match="output_fmt='NCHWX': this Hiera gives 'NCHW' or 'NHWC'"):
        abswin.models.HieraFeatures(abswin.create_model("hiera_atto_224"), output_fmt="NCHWX")
    with pytest.raises(TypeError, match="needs a Hiera classifier"):
        abswin.create_model("mae_hiera_atto_224", features_only=True)
