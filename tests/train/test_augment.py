"""The whole-batch augmentation's zoom-in (``train classify --zoom MAX --zoom-share P``): off by
default and then the batch of before, bit for bit; on, a share of the batch zoomed in about a point
of the visible field, the field travelling with it; the flags validated and carried to the run's
config and to the command that reproduces it."""

from __future__ import annotations

import json
import math
import shlex

import pytest
import torch

from chain_args import train_args
from engine.analysis.crop import SCOPE_GUIDE_INSET, inset_pixels
from train import augment
from train.augment import batch_augment
from train.cli import build_parser, main, train_config_from_args
from train.ship import run_config, train_command

SIDE, SQUARE, RADIUS = 128, 16, 40  # frame, centred white square, visible disc (pixels)


def _square_batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n grey discs (the visible field) with a white square at the centre, exactly centred so that
    flips and turns leave it where it is."""
    c = (SIDE - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    field = ((yy - c) ** 2 + (xx - c) ** 2 <= RADIUS ** 2).to(torch.uint8)
    image = torch.full((SIDE, SIDE, 3), 100, dtype=torch.uint8) * field[..., None]
    lo = (SIDE - SQUARE) // 2
    image[lo:lo + SQUARE, lo:lo + SQUARE] = 255
    return image.expand(n, -1, -1, -1).clone(), field.expand(n, -1, -1).clone()


def _random_batch(n: int = 12, side: int = 48) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8, generator=g)
    masks = (torch.rand(n, side, side, generator=g) > 0.7).to(torch.uint8)
    fields = (torch.rand(n, side, side, generator=g) > 0.2).to(torch.uint8)
    return images, masks, fields


def _replay_draws_before_zoom(g: torch.Generator, n: int) -> None:
    """The draws batch_augment made before the zoom existed (blur 0), in order and shape."""
    for shape in [(n,)] * 6 + [(n, 2)] + [(n,)] * 3 + [(n, 3, 1, 1), (n,)]:
        torch.rand(*shape, generator=g)


@pytest.mark.parametrize("with_masks", [False, True])
def test_zoom_off_is_the_batch_of_before_bit_for_bit(with_masks):
    images, masks, fields = _random_batch()
    masks = masks if with_masks else None
    kw = dict(inset=SCOPE_GUIDE_INSET, strength=0.5)
    g0, g1, g_ref = (torch.Generator().manual_seed(11) for _ in range(3))
    x0, m0 = batch_augment(images, masks, fields, g0, **kw)
    x1, m1 = batch_augment(images, masks, fields, g1, zoom=1.0, zoom_share=0.9, **kw)
    assert torch.equal(x0, x1) and (m0 is None) == (m1 is None) and (m0 is None or torch.equal(m0, m1))
    # no draw for the zoom when it is off: the generator ends where the batch of before left it
    _replay_draws_before_zoom(g_ref, len(images))
    assert torch.equal(g1.get_state(), g_ref.get_state())


def test_zoom_on_is_deterministic_and_draws_from_the_generator_only():
    images, masks, fields = _random_batch()
    kw = dict(inset=SCOPE_GUIDE_INSET, blur=0.3, strength=0.5, zoom=2.5, zoom_share=0.5)
    torch.manual_seed(0)
    a = batch_augment(images, masks, fields, torch.Generator().manual_seed(5), **kw)
    torch.manual_seed(1)  # the global generator plays no part
    b = batch_augment(images, masks, fields, torch.Generator().manual_seed(5), **kw)
    c = batch_augment(images, masks, fields, torch.Generator().manual_seed(6), **kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_zoom_grows_a_centred_square_by_the_drawn_factor(monkeypatch):
    drawn = []

    def spy(*args):
        out = real(*args)
        drawn.append(out)
        return out

    real = augment._draw_zoom
    monkeypatch.setattr(augment, "_draw_zoom", spy)
    n = 32
    images, fields = _square_batch(n)
    # strength 0: no affine, no photometric change, so only the zoom (and flips, turns) moves pixels;
    # the field given as the mask too, to see where the field went
    x, field = batch_augment(images, fields, fields, torch.Generator().manual_seed(2), strength=0.0,
                             zoom=2.0, zoom_share=0.5)
    (factor, _), = drawn
    zoomed = factor > 1
    assert 8 <= int(zoomed.sum()) <= 24 and float(factor.max()) <= 2.0
    square = x.min(1).values > 177  # white (the grey inside the field is 100, black outside it)
    side = square.flatten(1).sum(1).float().sqrt()
    assert torch.all(side[~zoomed] == SQUARE)  # the rest: untouched
    # the zoomed share: the square's area grows by the factor squared (its side by the factor, to a pixel)
    assert torch.all((side[zoomed] / SQUARE - factor[zoomed]).abs() <= 1.5 / SQUARE), (side, factor)
    assert float(factor[zoomed].max()) > 1.5  # a wide range of factors seen
    # the field travels with the image: the square stays inside it, everything outside it is black,
    # and the grey disc grows with the square (about a point of the field, so it still fills the frame's middle)
    assert torch.all(field[:, 0][square] == 1)
    assert torch.all(x.permute(1, 0, 2, 3)[:, field[:, 0] == 0] == 0)
    area = field.flatten(1).sum(1).float()
    assert torch.all(area[zoomed] > area[~zoomed].min())


def test_zoom_keeps_the_scope_guide_inset_black():
    images, masks, fields = _random_batch(16, 64)
    fields[:] = 1
    x, mask = batch_augment(images, masks, fields, torch.Generator().manual_seed(4), inset=SCOPE_GUIDE_INSET,
                            strength=0.5, zoom=4.0, zoom_share=1.0)
    x0, y0, x1, y1 = inset_pixels(SCOPE_GUIDE_INSET, (64, 64))
    assert float(x[..., y0:y1, x0:x1].abs().max()) == 0 and float(mask[..., y0:y1, x0:x1].max()) == 0
    assert float(x.amax(dim=(1, 2, 3)).min()) > 0


def test_zoom_centre_is_a_point_of_the_field():
    # one image, field a single pixel: the zoom about it leaves that pixel where it is
    field = torch.zeros(1, 8, 8, dtype=torch.bool)
    field[0, 6, 1] = True
    theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    out = augment._zoom_about_field(theta, torch.tensor([2.0]), torch.tensor([0.7]), field)
    px = torch.tensor([(2 * 1 + 1) / 8 - 1, (2 * 6 + 1) / 8 - 1])
    assert torch.allclose(out[0, :, :2] @ px + out[0, :, 2], px)
    assert torch.allclose(out[0, :, :2], torch.eye(2) / 2)
    # no field at all: about the frame's centre
    out = augment._zoom_about_field(theta, torch.tensor([2.0]), torch.tensor([0.7]), torch.zeros_like(field))
    assert torch.allclose(out[0, :, 2], torch.zeros(2))


@pytest.mark.parametrize("flags, message", [
    (("--zoom", "0.5"), "--zoom must be in [1, 4] (1: off), not 0.5"),
    (("--zoom", "5"), "--zoom must be in [1, 4] (1: off), not 5.0"),
    (("--zoom", "2", "--zoom-share", "1.5"), "--zoom-share must be in [0, 1], not 1.5"),
    (("--zoom-share", "-0.1"), "--zoom-share must be in [0, 1], not -0.1"),
])
def test_zoom_flags_are_validated_in_one_line(flags, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*train_args(tmp_path / "data", tmp_path / "split.csv", out, *flags)]) != 0
    err = capsys.readouterr().err
    assert err == f"endoview: error: {message}\n"
    assert not out.exists()


def test_zoom_flags_reach_the_config_and_the_reproduce_command(tmp_path):
    parser = build_parser()
    args = parser.parse_args(train_args(tmp_path, tmp_path / "s.csv", tmp_path / "o", "--zoom", "2.5",
                                        "--zoom-share", "0.3"))
    cfg = train_config_from_args(args)
    assert (cfg.zoom, cfg.zoom_share) == (2.5, 0.3)
    assert (cfg.to_dict()["zoom"], cfg.to_dict()["zoom_share"]) == (2.5, 0.3)
    default = train_config_from_args(parser.parse_args(train_args(tmp_path, tmp_path / "s.csv", tmp_path / "o")))
    assert (default.zoom, default.zoom_share) == (1.0, 0.5)  # off: runs as before
    row = {"config": {**cfg.resolved().to_dict(), "fold": 1}, "heads": list(cfg.heads), "run": "runs/z"}
    command = train_command(row)
    assert "--zoom 2.5 --zoom-share 0.3" in command
    again = train_config_from_args(parser.parse_args(shlex.split(command)[1:]))
    assert (again.zoom, again.zoom_share) == (2.5, 0.3)
    # a run from before the flags existed trained without the zoom, and its command says so
    old = {k: v for k, v in row["config"].items() if k not in ("zoom", "zoom_share")}
    assert (run_config({"config": old})["zoom"], run_config({"config": old})["zoom_share"]) == (1.0, 0.5)
    assert "--zoom 1.0 --zoom-share 0.5" in train_command({**row, "config": old})


def test_a_run_with_zoom_trains_and_records_it(synthetic, tmp_path):
    out = tmp_path / "zoom"
    assert main([*train_args(*synthetic, out, "--zoom", "2", "--zoom-share", "0.5"), "--steps-per-epoch", "1",
                 "--no-recalibrate-bn", "--threads", "1"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["zoom"], cfg["zoom_share"]) == (2.0, 0.5)
    assert math.isfinite(json.loads((out / "summary.json").read_text())["metrics"]["mcc"])


def test_zoom_keeps_a_small_polyp_in_view_and_centres_the_rest_on_the_field():
    # a small polyp in a corner of a full field: zoomed in 4x about a random point of the field it
    # would leave the view in most images (and the label "polyp" would sit on bare mucosa); about
    # a point of its mask, it stays in view in every one
    n, side = 32, 64
    images = torch.full((n, side, side, 3), 100, dtype=torch.uint8)
    fields = torch.ones(n, side, side, dtype=torch.uint8)
    masks = torch.zeros(n, side, side, dtype=torch.uint8)
    masks[:, 4:10, 4:10] = 1
    images[:, 4:10, 4:10] = 255
    g = torch.Generator().manual_seed(8)
    x, mask = batch_augment(images, masks, fields, g, strength=0.0, zoom=4.0, zoom_share=1.0)
    assert torch.all(mask.flatten(1).sum(1) > 0)
    assert torch.all((x.min(1).values > 177).flatten(1).sum(1) > 0)  # the white polyp pixels too
    # the same batch without masks: zoomed about points of the field, the corner mostly leaves the view
    x, _ = batch_augment(images, None, fields, torch.Generator().manual_seed(8), strength=0.0, zoom=4.0,
                         zoom_share=1.0)
    assert int(((x.min(1).values > 177).flatten(1).sum(1) > 0).sum()) < n // 2


# ------------------------------------------------------------------------- white balance


def test_white_balance_off_is_the_batch_of_before_and_on_gives_each_image_its_own_channel_gains():
    images, masks, fields = _random_batch()
    kw = dict(blur=0.0, strength=0.0)  # no other photometric change: only the gains differ
    x0, _ = batch_augment(images, masks, fields, torch.Generator().manual_seed(5), **kw)
    x_off, _ = batch_augment(images, masks, fields, torch.Generator().manual_seed(5), white_balance=0.0, **kw)
    assert torch.equal(x0, x_off)  # nothing drawn: old recipes reproduce bit for bit
    flat = torch.full_like(images, 100)  # a grey picture shows the gains themselves
    x, _ = batch_augment(flat, None, torch.ones_like(fields), torch.Generator().manual_seed(5),
                         white_balance=0.3, **kw)
    gains = x.mean(dim=(2, 3)) / 100.0  # N x 3
    assert ((gains > math.exp(-0.3) - 0.01) & (gains < math.exp(0.3) + 0.01)).all()
    spread = gains.max(dim=1).values / gains.min(dim=1).values
    assert (spread > 1.02).float().mean() > 0.8  # the channels differ within an image ...
    assert gains[:, 0].std() > 0.05  # ... and from image to image


@pytest.mark.parametrize("flag, value, bad, message", [
    ("--white-balance", 0.2, "0.9", "--white-balance must be in [0, 0.7] (0: off), not 0.9"),
    ("--exposure", 0.4, "1.5", "--exposure must be in [0, 1] (0: the --augment-strength range), not 1.5"),
])
def test_the_photometric_flags_are_validated_and_reproduced(tmp_path, capsys, flag, value, bad, message):
    key = flag[2:].replace("-", "_")
    parser = build_parser()
    cfg = train_config_from_args(parser.parse_args(train_args(tmp_path, tmp_path / "s.csv", tmp_path / "o",
                                                              flag, str(value))))
    assert getattr(cfg, key) == value and cfg.augment_options[key] == value
    row = {"config": {**cfg.resolved().to_dict(), "fold": 1}, "heads": list(cfg.heads), "run": "runs/w"}
    assert f"{flag} {value}" in train_command(row)
    old = {k: v for k, v in row["config"].items() if k != key}  # a run from before the flag
    assert run_config({"config": old})[key] == 0.0 and flag not in train_command({**row, "config": old})
    out = tmp_path / "run"
    assert main([*train_args(tmp_path / "data", tmp_path / "split.csv", out, flag, bad)]) != 0
    assert capsys.readouterr().err == f"endoview: error: {message}\n"


# ------------------------------------------------------------------------- exposure


def test_exposure_off_is_the_batch_of_before_and_on_widens_the_gamma_whatever_the_strength():
    images, masks, fields = _random_batch()
    kw = dict(blur=0.0, strength=0.0)  # strength 0: no gamma at all unless --exposure draws one
    x0, _ = batch_augment(images, masks, fields, torch.Generator().manual_seed(5), **kw)
    x_off, _ = batch_augment(images, masks, fields, torch.Generator().manual_seed(5), exposure=0.0, **kw)
    assert torch.equal(x0, x_off)  # old recipes reproduce bit for bit
    mid = torch.full_like(images, 128)  # a mid-grey picture shows the gamma: 255 * (128/255) ** gamma
    x, _ = batch_augment(mid, None, torch.ones_like(fields), torch.Generator().manual_seed(5), exposure=0.4, **kw)
    gamma = torch.log(x.mean(dim=(1, 2, 3)) / 255.0) / math.log(128 / 255)
    assert ((gamma > math.exp(-0.4) - 0.01) & (gamma < math.exp(0.4) + 0.01)).all()
    assert gamma.max() > 1.2 and gamma.min() < 0.85  # darker and brighter pictures both drawn
    x_same, _ = batch_augment(mid, None, torch.ones_like(fields), torch.Generator().manual_seed(5), **kw)
    assert torch.allclose(x_same, torch.full_like(x_same, 128.0), atol=0.01)  # without it: untouched
