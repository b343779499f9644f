"""Training throughput of the `vec2face` recipe (IR-SE-50 + ArcFace, SGD, bf16 autocast, channels-last).

Times full training steps of SynID's trainer components (synid_assets.core.training: the backbone, the margin
head, the flip + RandomErasing augmentation on the device, SGD with momentum and weight decay) on random uint8
112x112 batches already on the GPU, so data loading is not counted. FLOPs per image are counted once with
torch's FlopCounterMode over one whole step (forward + backward); achieved TFLOP/s are compared with the card's
dense bf16 peak. The implied time to train Vec2Face's setting (0.5M images x 26 epochs) follows.

    python benchmarks/gpu_train.py                       # cuda, batches 128 and 512, 10k classes, 15 s each
    python benchmarks/gpu_train.py --batches 256 --seconds 30
    python benchmarks/gpu_train.py --tiny                # same code path on the CPU with a tiny IResNet, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from synid_assets.core.training.config import PRESETS, TrainConfig  # noqa: E402
from synid_assets.core.training.data import augment  # noqa: E402
from synid_assets.core.training.models import build_backbone, build_head  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets (as benchmarks/gpu_flux.py).
PEAKS = (("H200", 989.0), ("H100 PCIE", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("A100", 312.0))
TINY = dataclasses.replace(PRESETS["cpu"], channels=(8, 8, 16, 16), embedding_size=32, image_size=32)
VEC2FACE_IMAGES = 500_000  # HSFace10K / Vec2Face's 0.5M-image setting
VEC2FACE_EPOCHS = 26


def card_peak(device_name: str) -> float | None:
    upper = device_name.upper()
    return next((peak for key, peak in PEAKS if key in upper), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(config: TrainConfig, batch: int, classes: int, device: str, seconds: float,
                     warmup: int = 3) -> dict:
    """Images/s of full training steps at `batch`, with FLOPs counted over one step."""
    from torch.utils.flop_counter import FlopCounterMode

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train_throughput: CUDA requested but torch.cuda.is_available() is False")
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    backbone = build_backbone(config).to(dev, memory_format=memory_format).train()
    head = build_head(config, classes).to(dev).train()
    params = sum(p.numel() for p in backbone.parameters())
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.1, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    amp = torch.bfloat16 if cuda else None
    size = config.image_size
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, classes, (batch,), device=dev)
    generator = torch.Generator().manual_seed(0)

    def step() -> torch.Tensor:
        x = augment(images, generator, config.flip, config.random_erasing).contiguous(memory_format=memory_format)
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            embeddings = backbone(x)
        loss = torch.nn.functional.cross_entropy(head(embeddings.float(), labels), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(max(1, warmup)):
        step()
    _sync(dev)
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops_per_image = counter.get_total_flops() / batch
    _sync(dev)
    steps = 0
    start = time.perf_counter()
    while True:
        step()
        steps += 1
        if steps % 5 == 0 or not cuda:
            _sync(dev)
            if time.perf_counter() - start >= seconds:
                break
    _sync(dev)
    elapsed = time.perf_counter() - start
    rate = steps * batch / elapsed
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    peak = card_peak(name) if cuda else None
    achieved = rate * flops_per_image / 1e12
    result = {
        "model": f"{config.backbone} + {config.head}" + (" (tiny)" if config.image_size != 112 else ""),
        "parameters": params,
        "classes": classes,
        "device": name,
        "dtype": "bfloat16 autocast" if amp else "float32",
        "batch": batch,
        "steps": steps,
        "seconds": round(elapsed, 3),
        "images_per_second": rate,
        "ms_per_step": 1000.0 * elapsed / steps,
        "gflops_per_image": flops_per_image / 1e9,
        "achieved_tflops": achieved,
        "percent_of_bf16_peak": 100.0 * achieved / peak if peak else None,
        "hours_for_0.5M_x_26_epochs": VEC2FACE_IMAGES * VEC2FACE_EPOCHS / rate / 3600.0,
    }
    if cuda:
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--classes", type=int, default=10_000, help="identities in the ArcFace head (HSFace10K)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with a tiny IResNet-18")
    args = parser.parse_args(argv)
    if args.tiny:
        config, device, batches, classes, seconds = TINY, "cpu", [4, 8], 50, 0.5
        torch.set_num_threads(1)
    else:
        config, device, batches, classes, seconds = PRESETS["vec2face"], args.device, args.batches, args.classes, \
            args.seconds
    results = [train_throughput(config, batch, classes, device, seconds) for batch in batches]
    for r in results:
        peak = f"{r['percent_of_bf16_peak']:.1f}% of bf16 peak" if r["percent_of_bf16_peak"] is not None else "-"
        print(f"{r['model']} batch {r['batch']}: {r['images_per_second']:.0f} images/s, "
              f"{r['gflops_per_image']:.2f} GFLOP/image (fwd+bwd), {r['achieved_tflops']:.1f} TFLOP/s, {peak}, "
              f"{r['hours_for_0.5M_x_26_epochs']:.2f} h for 0.5M images x 26 epochs")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
