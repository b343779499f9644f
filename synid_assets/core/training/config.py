"""The training recipe: one dataclass, two presets, and overrides read from a YAML or JSON file."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class TrainingError(Exception):
    """Bad training input (config, export, model dir, .bin file): the message names the file and the problem."""


# Units per stage; 50/100 as SynID's FRS backbones (frs_models.STAGE_UNITS), 18/34 as InsightFace's iresnet.py.
BACKBONE_UNITS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
}
_BACKBONE_NAME = re.compile(r"^(ir|ir_se)(\d+)$")


def parse_backbone(name: str) -> tuple[str, int]:
    """'ir_se50' -> ('ir_se', 50); ValueError for a name that is not an IResNet we build."""
    match = _BACKBONE_NAME.match(name.lower().replace("-", "_"))
    if not match or int(match.group(2)) not in BACKBONE_UNITS:
        depths = "/".join(str(d) for d in BACKBONE_UNITS)
        raise ValueError(f"unknown backbone {name!r}; use ir{{{depths}}} or ir_se{{{depths}}}")
    return match.group(1), int(match.group(2))


HEADS = ("arcface", "cosface", "adaface")
DEFAULT_MARGINS = {"arcface": 0.5, "cosface": 0.35, "adaface": 0.4}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; stored in every checkpoint so a model can be rebuilt from it."""

    backbone: str = "ir_se50"  # ir18 / ir50 / ir100, with or without SE ("ir_se50")
    channels: tuple[int, int, int, int] | None = None  # stage widths; None: 64, 128, 256, 512
    embedding_size: int = 512
    image_size: int = 112  # crops are resized to this square (112 = the export's aligned crops)
    head: str = "arcface"
    scale: float = 64.0
    margin: float | None = None  # None: arcface 0.5, cosface 0.35, adaface 0.4
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 26
    lr_steps: tuple[int, ...] = (12, 20, 24)  # epochs at which the lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0
    flip: bool = True
    random_erasing: bool = True
    workers: int = 4  # DataLoader processes decoding JPEGs (unused when cache_images)
    cache_images: bool = False  # decode every image once into memory (small datasets)
    seed: int = 0
    amp: bool = True  # bf16 autocast on a GPU that has it, else fp16 with a grad scaler; never on the CPU
    channels_last: bool = True  # on GPU only
    device: str = "auto"
    threads: int = 0  # CPU threads for torch; 0: torch's default (one per core). 1 is far faster on a busy machine
    keep_checkpoints: int = 0  # 0: keep every epoch's checkpoint; n: only the newest n
    notes: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def head_margin(self) -> float:
        return DEFAULT_MARGINS[self.head] if self.margin is None else float(self.margin)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["channels"] = list(self.channels) if self.channels is not None else None
        data["lr_steps"] = list(self.lr_steps)
        return data


DEFAULT_PRESET = "vec2face"  # Vec2Face's published recipe; presets are named after the recipe they follow
PRESETS: dict[str, TrainConfig] = {
    # Vec2Face's published recipe (HSFace training: IR-SE-50 + ArcFace, SGD, 26 epochs, flip + RandomErasing).
    DEFAULT_PRESET: TrainConfig(),
    # The CPU demonstration: an IResNet-18 layout at a quarter of the width on 56x56 crops, fast on 2 cores.
    "cpu": TrainConfig(
        backbone="ir18",
        channels=(16, 32, 64, 128),
        embedding_size=128,
        image_size=56,
        head="cosface",
        scale=32.0,
        batch_size=64,
        lr=0.1,
        epochs=12,
        lr_steps=(8, 11),
        warmup_epochs=1.0,
        random_erasing=False,
        workers=0,
        cache_images=True,
    ),
}


def validate(config: TrainConfig, source: str = "config") -> TrainConfig:
    """TrainingError naming `source` when a field is out of range."""
    try:
        parse_backbone(config.backbone)
    except ValueError as exc:
        raise TrainingError(f"{source}: {exc}") from None
    problems = []
    if config.head not in HEADS:
        problems.append(f"head {config.head!r} is not one of {', '.join(HEADS)}")
    if config.channels is not None and (len(config.channels) != 4 or min(config.channels) < 1):
        problems.append(f"channels needs 4 positive stage widths, got {list(config.channels)}")
    for name in ("embedding_size", "batch_size", "epochs"):
        if int(getattr(config, name)) < 1:
            problems.append(f"{name} must be >= 1")
    if config.image_size < 16 or config.image_size % 16 not in (0, 8):
        problems.append(f"image_size must be >= 16 and a multiple of 8, got {config.image_size}")
    if config.lr <= 0:
        problems.append("lr must be > 0")
    if list(config.lr_steps) != sorted(config.lr_steps):
        problems.append(f"lr_steps must be increasing, got {list(config.lr_steps)}")
    if problems:
        raise TrainingError(f"{source}: " + "; ".join(problems))
    return config


def from_dict(data: dict[str, Any], base: TrainConfig, source: str = "config") -> TrainConfig:
    """`base` with the fields in `data` replaced; unknown fields or wrong types are a TrainingError."""
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise TrainingError(f"{source}: unknown training setting(s) {unknown}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name in ("channels", "lr_steps") and value is not None:
            if not isinstance(value, (list, tuple)):
                raise TrainingError(f"{source}: {name} must be a list, got {value!r}")
            value = tuple(int(v) for v in value)
        elif name in ("flip", "random_erasing", "cache_images", "amp", "channels_last") and not isinstance(value, bool):
            raise TrainingError(f"{source}: {name} must be true or false, got {value!r}")
        values[name] = value
    try:
        return validate(dataclasses.replace(base, **values), source)
    except TypeError as exc:
        raise TrainingError(f"{source}: {exc}") from None


def load_config(preset: str | None = None, config_file: str | Path | None = None) -> TrainConfig:
    """The preset (default `vec2face`), with the file's settings on top; a file may name its own `preset`."""
    data: dict[str, Any] = {}
    source = "preset"
    if config_file is not None:
        path = Path(config_file)
        source = str(path)
        if not path.is_file():
            raise TrainingError(f"{path}: training config not found")
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text) or {}
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise TrainingError(f"{path}: cannot read the training config: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - yaml's errors share no base with ValueError
            raise TrainingError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise TrainingError(f"{path}: expected a mapping of training settings, got {type(data).__name__}")
        data = dict(data)
    file_preset = data.pop("preset", None)
    name = preset or file_preset or DEFAULT_PRESET  # the command line's preset wins over the file's
    if name not in PRESETS:
        raise TrainingError(f"{source}: unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return from_dict(data, PRESETS[name], source)
