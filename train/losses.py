"""The hybrid loss (paper eq. 1): the sum of one cross-entropy per head, each reported."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .labels import head_targets


class HybridLoss(nn.Module):
    """``forward(outputs, raw_targets) -> (total, {head: loss})``.

    Raw targets are indices into RAW_CLASSES; each head's target is looked up from them (a raw
    class an auxiliary head does not name is that head's ``other``). With ``heads=("raw",)`` it is
    the paper's single-head baseline.
    """

    def __init__(self, heads: Sequence[str], label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.head_names = tuple(heads)
        self.label_smoothing = float(label_smoothing)
        for name in self.head_names:
            self.register_buffer(f"lookup_{name}", torch.tensor(head_targets(name), dtype=torch.long),
                                 persistent=False)

    def targets(self, raw_targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: getattr(self, f"lookup_{n}")[raw_targets] for n in self.head_names}

    def forward(self, outputs: dict[str, torch.Tensor], raw_targets: torch.Tensor):
        per_head = {n: F.cross_entropy(outputs[n].float(), t, label_smoothing=self.label_smoothing if self.training else 0.0)
                    for n, t in self.targets(raw_targets).items()}
        total = torch.stack(list(per_head.values())).sum()
        return total, per_head


def mask_head_loss(logits: torch.Tensor, masks: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The auxiliary mask head's loss (``train.models.MaskHead``): binary cross-entropy of its logit
    map (N x 1 x h x w) against each image's augmented polyp mask (N x 1 x H x W, 0/1) averaged down
    to h x w (the share of each cell that is polyp), averaged over the images whose mask is
    ``known`` (N, 0/1): zero where none is."""
    target = F.adaptive_avg_pool2d(masks.float(), logits.shape[-2:])
    per_image = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").flatten(1).mean(1)
    return (per_image * known).sum() / known.sum().clamp(min=1.0)
