"""Torch datasets over :mod:`train.data` samples, with the paper's augmentations.

Each image is first turned into the viewer's model input (``engine.content_area.model_input``:
crop to the visible field, resize, black outside it); then, for training, the paper's
augmentations run with torchvision.transforms.v2: contrast, colour shift, brightness, flips,
perspective and blur. The field mask travels with the image through the geometric transforms and
is applied again at the end, so the border stays black as it is at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
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

    def __init__(self, samples: Sequence[Sample], size: tuple[int, int], *, augment: bool) -> None:
        self.samples = list(samples)
        self.size = (int(size[0]), int(size[1]))
        self.transform = paper_augmentation() if augment else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.samples[i]
        if self.transform is None:
            rgb = load_model_input(s.path, self.size)
            return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))), s.index
        rgb, field = load_model_input(s.path, self.size, with_mask=True)
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))))
        mask = tv_tensors.Mask(torch.from_numpy(field[None].astype(np.uint8)))
        image, mask = self.transform(image, mask)
        out = image.as_subclass(torch.Tensor) * mask.as_subclass(torch.Tensor)
        return out.contiguous(), s.index


def worker_init(_: int) -> None:
    """DataLoader workers: one OpenCV thread each (the workers are the parallelism)."""
    cv2.setNumThreads(1)
