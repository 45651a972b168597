"""Torch datasets over :mod:`train.data` samples, with the paper's augmentations.

Each image is first turned into the viewer's model input (``engine.analysis.crop.model_input``:
crop to the visible field, resize, black outside it); then, for training, the paper's
augmentations run with torchvision.transforms.v2: contrast, colour shift, brightness, flips,
perspective and blur. The field mask travels with the image through the geometric transforms and
is applied again at the end, so the border stays black as it is at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from .data import Sample, load_model_input


def _colour_shift(image: torch.Tensor, max_shift: int = 12, p: float = 0.5) -> torch.Tensor:
    """Add one random offset per RGB channel (a colour cast), uint8 saturating."""
    if torch.rand(()) >= p:
        return image
    shift = torch.randint(-max_shift, max_shift + 1, (3, 1, 1), dtype=torch.int16)
    out = (image.to(torch.int16) + shift).clamp_(0, 255).to(torch.uint8)
    return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.Image) else out


def paper_augmentation() -> v2.Transform:
    """Contrast, colour shift, brightness, flips, perspective, blur (paper, section 2.3)."""
    return v2.Compose([
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomVerticalFlip(p=0.5),
        v2.RandomPerspective(distortion_scale=0.2, p=0.3, fill=0),
        v2.ColorJitter(brightness=0.2, contrast=0.2),
        v2.Lambda(_colour_shift, tv_tensors.Image),
        v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=0.3),
    ])


class ImageDataset(torch.utils.data.Dataset):
    """``(uint8 RGB CHW tensor, raw class index)`` per sample, at ``size`` = (height, width)."""

    def __init__(self, samples: Sequence[Sample], size: tuple[int, int], *, augment: bool,
                 inset: tuple[float, float, float, float] | None = None) -> None:
        self.samples = list(samples)
        self.size = (int(size[0]), int(size[1]))
        self.transform = paper_augmentation() if augment else None
        self.inset = inset

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.samples[i]
        if self.transform is None:
            rgb = load_model_input(s.path, self.size, inset=self.inset)
            return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))), s.index
        rgb, field = load_model_input(s.path, self.size, with_mask=True, inset=self.inset)
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))))
        mask = tv_tensors.Mask(torch.from_numpy(field[None].astype(np.uint8)))
        image, mask = self.transform(image, mask)
        out = image.as_subclass(torch.Tensor) * mask.as_subclass(torch.Tensor)
        return out.contiguous(), s.index


def worker_init(_: int) -> None:
    """DataLoader workers: one OpenCV thread each (the workers are the parallelism)."""
    cv2.setNumThreads(1)


# --------------------------------------------------------------------------------------------
# whole-batch augmentation (arrays decoded once and kept in memory)


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _draw_zoom(g: torch.Generator, n: int, zoom: float, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(zoom factor per image: log-uniform in [1, ``zoom``] on ``share`` of the batch, else 1;
    a uniform draw in [0, 1) per image that picks the centre): always 3 x ``n`` draws from ``g``."""
    on = torch.rand(n, generator=g) < share
    factor = torch.exp(torch.rand(n, generator=g) * math.log(zoom))
    pick = torch.rand(n, generator=g)
    return torch.where(on, factor, torch.ones_like(factor)), pick


def _zoom_about_field(theta: torch.Tensor, factor: torch.Tensor, pick: torch.Tensor,
                      field: torch.Tensor) -> torch.Tensor:
    """``theta`` (N x 2 x 3, output -> input as F.affine_grid reads it) followed by a zoom in by
    ``factor`` about a point of the visible field (``field``: N x H x W bool, in the output frame
    of ``theta``): the ``pick`` quantile of its pixels in raster order, the centre of the frame
    when the field is empty. The point stays where it is, so the zoomed window (1/factor of each
    side) always lies inside the frame. One resampling: the zoom is composed into ``theta``."""
    n, h, w = field.shape
    flat = field.reshape(n, -1)
    counts = flat.sum(1)
    rank = (pick * counts).long().clamp(max=(counts - 1).clamp(min=0)) + 1
    index = torch.searchsorted(flat.long().cumsum(1), rank[:, None]).squeeze(1).clamp(max=h * w - 1)
    row, col = torch.div(index, w, rounding_mode="floor"), index % w
    centre = torch.stack([(2 * col + 1) / w - 1, (2 * row + 1) / h - 1], 1).float()  # align_corners=False
    centre[counts == 0] = 0.0
    # output u -> centre + (u - centre) / factor -> theta: linear part / factor, offset moved
    a, t = theta[:, :, :2], theta[:, :, 2]
    inv = (1 / factor).view(n, 1, 1)
    offset = t + (a @ (centre * (1 - inv.view(n, 1)))[:, :, None])[:, :, 0]
    return torch.cat([a * inv, offset[:, :, None]], 2)


def batch_augment(images: torch.Tensor, masks: torch.Tensor | None, fields: torch.Tensor,
                  g: torch.Generator, *, inset: tuple[float, float, float, float] | None = None,
                  blur: float = 0.0, strength: float = 1.0, zoom: float = 1.0,
                  zoom_share: float = 0.5, white_balance: float = 0.0,
                  exposure: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch (uint8 N x H x W x 3 images, uint8 N x H x W masks or None, uint8 N x H x W fields)
    -> (float NCHW 0..255, float N1HW mask or None), on the whole batch in torch.

    Flips, 90-degree turns, a random affine (scale, rotation, shift), brightness, contrast,
    saturation, colour cast, gamma and, with ``blur`` > 0, a Gaussian blur on that share of the
    batch. ``strength`` scales the affine and photometric ranges (1: the segmenter's; a classifier
    learning from random initialisation on a thousand images needs milder ones, or it learns
    nothing in the steps a CPU affords). The visible field travels with the image and is applied again at the end (black outside
    it, as at inference); with ``inset`` the scope-guide box is black again too, where the model
    will always see it black. With ``zoom`` > 1, ``zoom_share`` of the batch is also zoomed in
    (:func:`_zoom_about_field`) about a point of the image's mask where it has a non-empty one (a
    polyp stays in view), else of its field, whatever ``strength``; with ``zoom`` = 1 nothing is drawn for it
    and the batch is what it was before the option existed. With ``white_balance`` W > 0, each
    image's red, green and blue are also multiplied by their own gains drawn log-uniformly from
    [exp(-W), exp(W)], whatever ``strength`` (another endoscope's or processor's white balance: the
    additive colour cast above is too small for it); with 0 nothing is drawn for it. With
    ``exposure`` E > 0 the gamma is drawn log-uniformly from [exp(-E), exp(E)] whatever
    ``strength`` (another light source or exposure: a darker or brighter picture), instead of
    exp(±0.3 x strength); the draw takes the same generator steps either way. Every draw comes
    from ``g``: the same generator state gives the same batch.
    """
    n = images.shape[0]
    x = images.permute(0, 3, 1, 2).float()
    if masks is None:
        masks = torch.zeros_like(fields)
    y = torch.cat([masks[:, None].float(), fields[:, None].float()], 1)
    # flips and 90-degree turns (the field is square-resized, the scope has no up)
    flip_h = torch.rand(n, generator=g) < 0.5
    flip_v = torch.rand(n, generator=g) < 0.5
    turn = torch.rand(n, generator=g) < 0.5
    x[flip_h], y[flip_h] = x[flip_h].flip(-1), y[flip_h].flip(-1)
    x[flip_v], y[flip_v] = x[flip_v].flip(-2), y[flip_v].flip(-2)
    x[turn], y[turn] = x[turn].transpose(-1, -2), y[turn].transpose(-1, -2)
    # random affine (applied to 80 % of the batch): scale, rotation, shift
    on = (torch.rand(n, generator=g) < 0.8).float()
    k = float(strength)
    scale = torch.exp(_uniform(g, n, math.log(0.75), math.log(1.3)) * on * k)
    angle = _uniform(g, n, -math.pi / 6, math.pi / 6) * on * k
    shift = (torch.rand(n, 2, generator=g) * 0.3 - 0.15) * on[:, None] * k
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if zoom > 1:
        factor, pick = _draw_zoom(g, n, zoom, zoom_share)
        moved = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5
        # about a point of the polyp where the image has one (a zoom away from it would keep the
        # label "polyp" on bare mucosa: the close-up shortcut itself), else of the visible field
        has_polyp = moved[:, 0].flatten(1).any(1).view(n, 1, 1)
        theta = _zoom_about_field(theta, factor, pick, torch.where(has_polyp, moved[:, 0], moved[:, 1]))
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask, field = (y[:, :1] > 0.5).float(), (y[:, 1:] > 0.5).float()
    # photometric: brightness, contrast, saturation, colour cast, gamma
    x = x / 255.0
    x = x * _uniform(g, n, 1 - 0.3 * k, 1 + 0.3 * k).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * _uniform(g, n, 1 - 0.3 * k, 1 + 0.3 * k).view(n, 1, 1, 1) + mean
    grey = x.mean(1, keepdim=True)
    x = (x - grey) * _uniform(g, n, 1 - 0.3 * k, 1 + 0.3 * k).view(n, 1, 1, 1) + grey
    x = x + (torch.rand(n, 3, 1, 1, generator=g) * 0.12 - 0.06) * k
    if white_balance > 0:
        x = x * torch.exp((torch.rand(n, 3, 1, 1, generator=g) * 2 - 1) * white_balance)
    e = exposure if exposure > 0 else 0.3 * k
    x = x.clamp(0, 1) ** torch.exp(_uniform(g, n, -e, e)).view(n, 1, 1, 1)
    if blur > 0:
        on = torch.rand(n, generator=g) < blur
        if on.any():
            sigma = float(_uniform(g, 1, 0.3, 1.5))
            k = torch.arange(-3, 4, dtype=torch.float32)
            k = torch.exp(-(k ** 2) / (2 * sigma ** 2))
            k = (k / k.sum()).to(x.dtype)
            xb = x[on]
            c = xb.shape[1]
            xb = F.conv2d(F.pad(xb, (3, 3, 0, 0), mode="replicate"), k.view(1, 1, 1, 7).repeat(c, 1, 1, 1), groups=c)
            xb = F.conv2d(F.pad(xb, (0, 0, 3, 3), mode="replicate"), k.view(1, 1, 7, 1).repeat(c, 1, 1, 1), groups=c)
            x[on] = xb
    if inset is not None:
        from engine.analysis.crop import inset_pixels

        x0, y0, x1, y1 = inset_pixels(inset, tuple(field.shape[-2:]))
        field[..., y0:y1, x0:x1] = 0
        mask[..., y0:y1, x0:x1] = 0
    x = (x * 255.0).clamp(0, 255) * field  # black outside the field, as at inference
    return x, mask
