"""A trunk plus named heads (STYLE.md 11): MobileNetV3-Large and ResNet-152 from torchvision.

``HybridClassifier.forward`` takes normalised NCHW float images and returns ``{head: logits}``.
:func:`normalize` is the one definition of the input normalisation: training applies it to the
uint8 batches, and :class:`WithPreprocessing` puts the same ops inside the exported graph
(uint8 RGB NHWC in, softmax probabilities of one head out).

Weights (``--weights``): ``none`` (random initialisation), a local file (a torchvision ImageNet
state dict of the architecture), ``imagenet`` (torchvision's download; fails at once without a
network) or ``auto`` (``imagenet`` where it can be fetched, random initialisation otherwise). The
source actually used is returned as text for the log and the manifest.
"""

from __future__ import annotations

import copy
import logging
import socket
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from .errors import TrainError
from .labels import HEADS, TRIMMED_HEAD

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: arch -> (torchvision builder, ImageNet weights enum name, paper batch size)
ARCHS: dict[str, tuple[str, str, int]] = {
    "mobilenet_v3_large": ("mobilenet_v3_large", "MobileNet_V3_Large_Weights", 128),
    "resnet152": ("resnet152", "ResNet152_Weights", 32),
}
DISPLAY = {"mobilenet_v3_large": "MobileNetV3", "resnet152": "ResNet-152"}


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or 0..255 float) RGB NCHW -> ImageNet-normalised float NCHW."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1) * 255.0
    return (images.float() - mean) / std


#: the key of the mask head's output in a training-mode forward's dict (never a head's name)
MASK_KEY = "_polyp_mask"
#: where the mask head reads the MobileNetV3-Large trunk: the output of ``features[:13]``, 112
#: channels at 1/16 of the input (10 x 10 at 160 px)
MASK_SPLIT = 13
MASK_CHANNELS = 112


class MaskHead(nn.Module):
    """A polyp-mask logit map (N x 1 x h x w) from the trunk's stride-16 features. It only trains:
    the mask loss teaches the trunk where a polyp is, and no exported, evaluated or trimmed model
    keeps it (:meth:`HybridClassifier.trimmed`, ``train.checkpoint.model_from_checkpoint``)."""

    def __init__(self, channels: int = MASK_CHANNELS, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden),
                                  nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class HybridClassifier(nn.Module):
    """``trunk`` (image -> feature vector) followed by one linear head per label set, and
    optionally a training-only :class:`MaskHead` (:meth:`add_mask_head`)."""

    def __init__(self, arch: str, trunk: nn.Module, feature_dim: int, heads: Mapping[str, int]) -> None:
        super().__init__()
        self.arch = arch
        self.feature_dim = feature_dim
        self.trunk = trunk
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, n) for name, n in heads.items()})
        self.mask_head: MaskHead | None = None

    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(self.heads)

    def add_mask_head(self) -> HybridClassifier:
        """Attach the auxiliary polyp-mask head (MobileNetV3-Large only); returns self."""
        if self.arch != "mobilenet_v3_large":
            raise TrainError(f"the auxiliary mask head reads MobileNetV3-Large's trunk; not {self.arch}")
        self.mask_head = MaskHead()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.mask_head is None or not self.training:
            features = self.trunk(x)
            return {name: head(features) for name, head in self.heads.items()}
        t = self.trunk
        f = t.features[:MASK_SPLIT](x)
        mask = self.mask_head(f)
        features = t.classifier(torch.flatten(t.avgpool(t.features[MASK_SPLIT:](f)), 1))
        out = {name: head(features) for name, head in self.heads.items()}
        out[MASK_KEY] = mask
        return out

    def trimmed(self, keep: str = TRIMMED_HEAD) -> HybridClassifier:
        """A copy with the head ``keep`` only (the paper's network trimming)."""
        if keep not in self.heads:
            raise TrainError(f"cannot trim to head {keep!r}: the model has {', '.join(self.heads)}")
        out = HybridClassifier(self.arch, copy.deepcopy(self.trunk), self.feature_dim,
                               {keep: self.heads[keep].out_features})
        out.heads[keep].load_state_dict(self.heads[keep].state_dict())
        return out.train(self.training)


class WithPreprocessing(nn.Module):
    """uint8 RGB NHWC in, softmax probabilities out: cast, scale, normalise, transpose in-graph.

    ``model`` returns logits, or a dict of logits of which ``head`` is taken.
    """

    def __init__(self, model: nn.Module, head: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float().permute(0, 3, 1, 2)  # Cast first: TensorRT refuses uint8 intermediates
        x = (x - self.mean) / self.std
        out = self.model(x)
        if isinstance(out, dict):
            out = out[self.head or TRIMMED_HEAD]
        return torch.softmax(out, dim=1)


@torch.no_grad()
def ema_update(ema_state: list[torch.Tensor], model_state: list[torch.Tensor], decay: float, step: int) -> None:
    """One step of the weights' exponential moving average (the state dicts' values, in order): decay
    ramps up as (1 + step) / (10 + step) to ``decay``; integer buffers are copied."""
    d = min(decay, (1 + step) / (10 + step))
    for e, m in zip(ema_state, model_state):
        if e.dtype.is_floating_point:
            e.mul_(d).add_(m.detach(), alpha=1 - d)
        else:
            e.copy_(m)


def without_mask_head(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without the training-only mask head's entries (a checkpoint's weights, for the
    model that is evaluated and exported)."""
    return {k: v for k, v in state.items() if not k.startswith("mask_head.")}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# construction and weights


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise TrainError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def paper_batch_size(arch: str) -> int:
    _check_arch(arch)
    return ARCHS[arch][2]


def _imagenet_state_dict(arch: str) -> tuple[dict[str, torch.Tensor], str]:
    """torchvision's ImageNet weights (its cache, or a download); TrainError at once without a network."""
    weights = getattr(torchvision.models, ARCHS[arch][1]).DEFAULT
    url = weights.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name
    if not cached.is_file():
        host = urllib.parse.urlparse(url).hostname or ""
        try:
            socket.create_connection((host, 443), timeout=5).close()
        except OSError as err:
            raise TrainError(
                f"cannot download the ImageNet weights of {arch} from {host} ({err}); pass a local "
                f"file with --weights PATH (torchvision's {weights}) or --weights none"
            ) from err
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # noqa: BLE001 - urllib/hash errors of many kinds: one message
        raise TrainError(f"downloading the ImageNet weights of {arch} from {url} failed: {err}") from err
    return state, f"torchvision {weights} (ImageNet)"


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise TrainError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle/zip errors: one message naming the file
        raise TrainError(f"cannot read weights file {path}: {err}") from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TrainError(f"{path} does not hold a state dict (name -> tensor)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def build_model(arch: str, heads: Mapping[str, int] | None = None, *, weights: str = "none",
                announce: bool = True) -> tuple[HybridClassifier, str]:
    """The torchvision ``arch`` with its classifier replaced by the named heads.

    Returns the model and a description of the weights used (said in the log and the manifest).
    ``announce=False``: no log line (a model rebuilt to receive a checkpoint's weights).
    """
    _check_arch(arch)
    heads = dict(heads) if heads is not None else {n: len(v) for n, v in HEADS.items()}
    net = getattr(torchvision.models, ARCHS[arch][0])(weights=None)
    source = "random initialisation"
    spec = str(weights)
    if spec == "auto":
        try:
            state, source = _imagenet_state_dict(arch)
        except TrainError as err:
            log.warning("%s; training %s from random initialisation", err, arch)
            state = None
        if state is not None:
            net.load_state_dict(state)
    elif spec == "imagenet":
        state, source = _imagenet_state_dict(arch)
        net.load_state_dict(state)
    elif spec != "none":
        path = Path(spec).expanduser()
        state = _load_weights_file(path)
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise TrainError(f"{path} does not fit torchvision's {arch} ({first}...)") from err
        source = f"file {path}"
    if not announce:
        pass
    elif source == "random initialisation":
        log.warning("%s starts from RANDOM INITIALISATION (no ImageNet weights)", arch)
    else:
        log.info("%s starts from %s", arch, source)

    if arch == "mobilenet_v3_large":
        feature_dim = net.classifier[-1].in_features
        net.classifier[-1] = nn.Identity()  # keep Linear(960, 1280) + Hardswish + Dropout
    else:
        feature_dim = net.fc.in_features
        net.fc = nn.Identity()
    return HybridClassifier(arch, net, feature_dim, heads), source
