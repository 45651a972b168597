"""Training-step throughput: ``python -m train.bench --arch resnet152 --batch-size 8 --device cpu``.

Times full training steps (forward of all four heads, hybrid loss, backward, SGD step) on random
uint8 batches at the model's input size, after warm-up; on CUDA with AMP and channels_last as
``train classify`` runs them. Prints the device (GPU name), ms per step and images per second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from .labels import HEAD_NAMES
from .losses import HybridLoss
from .models import ARCHS, build_model, normalize


def bench(arch: str, batch_size: int, steps: int, *, device: str = "cpu", image_size: int = 224,
          amp: bool | None = None, warmup: int = 3) -> dict:
    dev = torch.device(device)
    amp = dev.type == "cuda" if amp is None else amp
    torch.manual_seed(0)
    model, _ = build_model(arch, weights="none", announce=False)
    model.to(dev).train()
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    loss_fn = HybridLoss(HEAD_NAMES).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x8 = torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8, device=dev)
    y = torch.randint(0, 23, (batch_size,), device=dev)

    def step() -> None:
        x = normalize(x8)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
            out = model(x)
        total, _ = loss_fn(out, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(warmup):
        step()
    sync()
    times = []
    t_all = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_all
    return {
        "arch": arch, "batch_size": batch_size, "image_size": image_size, "steps": steps, "amp": amp,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "ms_per_step_median": 1000 * statistics.median(times), "ms_per_step_mean": 1000 * wall / steps,
        "images_per_s": batch_size * steps / wall, "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=tuple(ARCHS), nargs="+", default=list(ARCHS))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    for arch in args.arch:
        r = bench(arch, args.batch_size, args.steps, device=args.device, image_size=args.image_size,
                  amp=False if args.no_amp else None)
        print(json.dumps(r) if args.json else
              f"{r['arch']:<20} batch {r['batch_size']:>3} @ {r['image_size']}px on {r['device']}"
              f"{' AMP' if r['amp'] else ''}: {r['ms_per_step_median']:.1f} ms/step (median of {r['steps']}), "
              f"{r['images_per_s']:.1f} images/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
