"""The training loop: SGD on backbone + margin head, a checkpoint each epoch, resume from the newest one.

An output dir holds `training.json` (the config, the export, the classes, each epoch's loss) and
`checkpoints/epoch_NNN.pt` (model, head, optimizer and config). Each epoch's shuffling, augmentation and dropout
draw from generators seeded by (seed, epoch), so a training killed after epoch k and resumed gives the same
weights as one that was never stopped (on the CPU; GPU kernels are not bit-deterministic).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synid_assets.core.dataset.layout import atomic_write_bytes, atomic_writer
from synid_assets.core.training.config import TrainConfig, TrainingError, from_dict

if TYPE_CHECKING:
    import torch

_CHECKPOINT = re.compile(r"^epoch_(\d{3,})\.pt$")
# Settings a resumed run may change: they do not change what is learned.
_RESUMABLE_CHANGES = {"workers", "device", "threads", "keep_checkpoints", "notes", "epochs"}


def checkpoint_path(out_dir: Path, epoch: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"epoch_{epoch:03d}.pt"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every finished epoch's checkpoint in an output dir, oldest first."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name))]
    return sorted(found)


def lr_at(config: TrainConfig, epoch_progress: float) -> float:
    """Learning rate at a fractional epoch: linear warmup, then x lr_gamma at each of lr_steps."""
    if config.warmup_epochs > 0 and epoch_progress < config.warmup_epochs:
        return config.lr * (epoch_progress + 1e-3) / config.warmup_epochs
    decays = sum(1 for step in config.lr_steps if epoch_progress >= step)
    return config.lr * config.lr_gamma**decays


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temp file beside `path`, fsync, rename: a kill never leaves a half checkpoint."""
    import torch

    with atomic_writer(path) as handle:
        torch.save(state, handle)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by `train`; TrainingError names the file when it is not one."""
    import torch

    path = Path(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise TrainingError(f"{path}: not a readable checkpoint: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or not {"backbone", "config", "epoch"} <= set(state):
        raise TrainingError(f"{path}: not a `synid train` checkpoint (no backbone/config/epoch)")
    return state


def _same_recipe(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    current = config.to_dict()
    return sorted(k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k) != current[k])


def _batches(dataset, order: torch.Tensor, config: TrainConfig, pin: bool, seed: int) -> Iterator[tuple[Any, Any]]:
    import torch

    full = len(order) // config.batch_size * config.batch_size  # drop the last partial batch, as trainers do
    if dataset.images is not None:
        for start in range(0, full, config.batch_size):
            index = order[start : start + config.batch_size]
            yield dataset.images[index], dataset.labels[index]
        return
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=order[:full].tolist(),
        drop_last=True,
        num_workers=config.workers,
        pin_memory=pin,
        persistent_workers=False,
        # Its own generator for the workers' seeds: the global one (dropout) draws the same as with cached images.
        generator=torch.Generator().manual_seed(seed),
    )
    yield from loader


def _progress(total: int, epoch: int, epochs: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="batch", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, leave=True)


def train(
    export_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    progress: bool = True,
    stop_after_epochs: int | None = None,
) -> dict[str, Any]:
    """Train on an export into `out_dir`, resuming from its newest checkpoint; returns a summary.

    `stop_after_epochs` ends this call after that many epochs (the next call resumes): for tests and for
    training in slices.
    """
    import torch
    import torch.nn.functional as F

    from synid_assets.core.generation.torch_runtime import resolve_device
    from synid_assets.core.training.data import augment, open_export
    from synid_assets.core.training.models import build_backbone, build_head

    out = Path(out_dir)
    meta_path = out / "training.json"
    if out.is_dir() and any(out.iterdir()) and not meta_path.exists():
        raise TrainingError(f"{out}: not empty and not a `synid train` output dir (no training.json); "
                            "use another --out")
    checkpoints = list_checkpoints(out)
    resume = read_checkpoint(checkpoints[-1][1]) if checkpoints else None
    if resume is not None:
        changed = _same_recipe(resume["config"], config)
        if changed:
            raise TrainingError(
                f"{checkpoints[-1][1]}: was trained with other settings ({', '.join(changed)}); "
                "resume with the same preset/config or train into another --out"
            )
    dataset = open_export(export_dir, config.image_size, config.cache_images)
    if len(dataset) < config.batch_size:
        raise TrainingError(f"{export_dir}: {len(dataset)} images, fewer than one batch of {config.batch_size}")
    if resume is not None and int(resume.get("num_classes", -1)) != dataset.num_classes:
        raise TrainingError(
            f"{checkpoints[-1][1]}: trained on {resume.get('num_classes')} classes, the export has "
            f"{dataset.num_classes}; train into another --out"
        )

    device = torch.device(resolve_device(config.device))
    cuda = device.type == "cuda"
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    backbone = build_backbone(config)
    head = build_head(config, dataset.num_classes)
    memory_format = torch.channels_last if cuda and config.channels_last else torch.contiguous_format
    backbone = backbone.to(device, memory_format=memory_format)
    head = head.to(device)
    parameters = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    amp_dtype = None
    if cuda and config.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume is not None:
        backbone.load_state_dict(resume["backbone"])
        head.load_state_dict(resume["head"])
        optimizer.load_state_dict(resume["optimizer"])
        if resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        history = list(resume.get("history", []))
        start_epoch = int(resume["epoch"])
    meta = {
        "config": config.to_dict(),
        "export_dir": str(Path(export_dir).resolve()),
        "images": len(dataset),
        "num_classes": dataset.num_classes,
        "device": str(device),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
        "history": history,
    }
    atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())
    if resume is not None and progress:
        print(f"resuming {out} after epoch {start_epoch} ({checkpoints[-1][1].name})", file=sys.stderr)

    steps_per_epoch = len(dataset) // config.batch_size
    epochs_run = 0
    last_rate = 0.0
    for epoch in range(start_epoch, config.epochs):
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
            break
        # Every random draw of the epoch from (seed, epoch): a resumed epoch repeats an uninterrupted one.
        epoch_seed = config.seed * 100_003 + epoch
        torch.manual_seed(epoch_seed)
        generator = torch.Generator().manual_seed(epoch_seed)
        order = torch.randperm(len(dataset), generator=generator)
        backbone.train()
        head.train()
        loss_sum, seen, started = 0.0, 0, time.perf_counter()
        bar = _progress(steps_per_epoch, epoch + 1, config.epochs, progress)
        for step, (images, labels) in enumerate(_batches(dataset, order, config, cuda, epoch_seed)):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, epoch + step / steps_per_epoch)
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            x = augment(images, generator, config.flip, config.random_erasing)
            x = x.contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                embeddings = backbone(x)
            loss = F.cross_entropy(head(embeddings.float(), labels), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(backbone.parameters(), max_norm=5.0)
            scaler.step(optimizer)
            scaler.update()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(f"{out}: the loss became {value} in epoch {epoch + 1}; lower lr in the config")
            loss_sum += value * len(labels)
            seen += len(labels)
            last_rate = seen / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{value:.3f}", img_s=f"{last_rate:.0f}", lr=f"{optimizer.param_groups[0]['lr']:.4g}")
            bar.update(1)
        bar.close()
        epochs_run += 1
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "images_per_s": last_rate,
                        "seconds": time.perf_counter() - started})
        state = {
            "epoch": epoch + 1,
            "config": config.to_dict(),
            "num_classes": dataset.num_classes,
            "backbone": backbone.state_dict(),
            "head": head.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "history": history,
        }
        _save_checkpoint(checkpoint_path(out, epoch + 1), state)
        meta["history"] = history
        atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())
        if config.keep_checkpoints > 0:
            for _, old in list_checkpoints(out)[: -config.keep_checkpoints]:
                old.unlink(missing_ok=True)
    final = list_checkpoints(out)
    return {
        "out_dir": str(out),
        "resumed_after_epoch": start_epoch if resume is not None else None,
        "epochs_run": epochs_run,
        "epochs_done": final[-1][0] if final else 0,
        "checkpoint": str(final[-1][1]) if final else None,
        "images": len(dataset),
        "classes": dataset.num_classes,
        "loss": history[-1]["loss"] if history else None,
        "images_per_s": history[-1]["images_per_s"] if history else None,
    }


def load_trained_backbone(
    model_path: str | Path, device: str = "cpu"
) -> tuple[torch.nn.Module, TrainConfig, Path, int]:
    """(backbone in eval mode, its config, the checkpoint file, its epoch) from an output dir or a checkpoint."""
    from synid_assets.core.training.config import DEFAULT_PRESET, PRESETS
    from synid_assets.core.training.models import build_backbone

    path = Path(model_path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise TrainingError(f"{path}: no checkpoint (checkpoints/epoch_NNN.pt): not a trained `synid train` dir")
        path = found[-1][1]
    elif not path.exists():
        raise TrainingError(f"{path}: model not found (give a `synid train` output dir or a checkpoint in it)")
    state = read_checkpoint(path)
    saved = {k: v for k, v in state["config"].items() if k != "notes"}
    config = from_dict(saved, PRESETS[DEFAULT_PRESET], str(path))
    backbone = build_backbone(config)
    try:
        backbone.load_state_dict(state["backbone"])
    except RuntimeError as exc:
        raise TrainingError(f"{path}: weights do not match its config: {str(exc).splitlines()[0]}") from None
    return backbone.to(device).eval(), config, path, int(state["epoch"])
