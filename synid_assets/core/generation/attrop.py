"""AttrOP: Vec2Face+'s attribute optimisation of the input vector, capped so it always ends.

As published (HaiyuWu/Vec2Face_plus @ 7aea100, `model_vec2face.py` `gen_image`): Adam (lr 0.1) on the vector
that is rendered, with
- identity loss: d = 1 - cos(ArcFace(image), class vector), counted only where d > 0.3 (`target_sim`: an image
  within cosine 0.7 of its identity costs nothing);
- quality loss: max(q_target - |MagFace(image)|, 0) / 30 with q_target 24 (the MagFace feature norm is its quality);
- yaw loss: |target yaw - |6DRepNet yaw clipped to [-90, 90]|| / 90 (the side is not scored);
- at most 30 tries. Upstream scores the batch mean and counts the 30 re-tries per batch; its checks compare the
  scaled losses with 5 (yaw) and 1 (quality), which the /90 and /30 scaling makes unreachable, and its final image
  is rendered again after the last step, with a new random mask and without the pose token, unchecked.

Here each image is scored on its own and stops when it passes: d <= 0.3, MagFace norm >= q_target - 1 and, when it
has a yaw target, | |yaw| - |target| | <= 5 degrees (the tolerances of the unscaled losses of Vec2Face's AttrOP).
The image kept is the one that was checked. An image still failing after `max_tries` renders is returned with
status "failed" (its last render), never retried beyond that. Each image's vector is its own Adam parameter and the
loss sums (not averages) the images' losses, so an image's path does not depend on the batch it is in (up to
floating-point rounding); renders use each image's fixed row mask, so the search is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IDENTITY_MARGIN = 0.3  # target_sim
QUALITY_TARGET = 24.0  # q_target
QUALITY_SCALE = 30.0
YAW_SCALE = 90.0
MAX_TRIES = 30
LEARNING_RATE = 0.1


@dataclass(frozen=True)
class AttrOPSettings:
    learning_rate: float = LEARNING_RATE
    identity_margin: float = IDENTITY_MARGIN
    quality_target: float = QUALITY_TARGET
    quality_tolerance: float = 1.0  # MagFace norm units
    yaw_tolerance: float = 5.0  # degrees
    max_tries: int = MAX_TRIES

    def __post_init__(self) -> None:
        if self.max_tries < 1:
            raise ValueError(f"AttrOP max_tries must be at least 1, not {self.max_tries}")
        if not 0.0 <= self.identity_margin <= 2.0 or self.learning_rate <= 0:
            raise ValueError("AttrOP identity_margin must be in [0, 2] and learning_rate positive")


@dataclass
class Scores:
    """Per-image measurements [n] of one render and the losses they give."""

    distance: torch.Tensor  # 1 - cos to the class vector
    quality: torch.Tensor  # MagFace feature norm
    yaw: torch.Tensor  # 6DRepNet yaw, degrees (nan where not measured)
    identity_loss: torch.Tensor
    quality_loss: torch.Tensor
    yaw_loss: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.identity_loss + self.quality_loss + self.yaw_loss


@dataclass
class AttrOPResult:
    images: torch.Tensor  # [n, 3, h, w], the last render of each image (the accepted one when it passed)
    vectors: torch.Tensor  # [n, d], the vector each image was rendered from
    tries: list[int]  # renders each image took
    passed: list[bool]
    last: list[dict[str, float | None]] = field(default_factory=list)  # distance, quality, yaw of the kept render

    @property
    def statuses(self) -> list[str]:
        return ["ok" if ok else "failed" for ok in self.passed]


def identity_loss(distance: torch.Tensor, margin: float = IDENTITY_MARGIN) -> torch.Tensor:
    """d where d > margin, else 0 (Vec2Face+'s gated identity loss)."""
    import torch

    return torch.where(distance > margin, distance, torch.zeros_like(distance))


def quality_loss(norm: torch.Tensor, target: float = QUALITY_TARGET) -> torch.Tensor:
    """max(target - norm, 0) / 30."""
    import torch

    return torch.where(norm < target, target - norm, torch.zeros_like(norm)) / QUALITY_SCALE


def yaw_loss(yaw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """| target - |yaw clipped to [-90, 90]| | / 90; 0 where target is nan (no yaw target)."""
    import torch

    loss = (target - yaw.clamp(-90.0, 90.0).abs()).abs() / YAW_SCALE
    return torch.where(torch.isnan(target), torch.zeros_like(loss), loss)


def score(
    images: torch.Tensor,
    class_vectors: torch.Tensor,
    target_yaws: torch.Tensor,
    identity_model: Callable[[torch.Tensor], torch.Tensor],
    quality_model: Callable[[torch.Tensor], torch.Tensor],
    yaw_model: Callable[[torch.Tensor], torch.Tensor] | None,
    settings: AttrOPSettings,
) -> Scores:
    """Measure generator images [n, 3, h, w] in [-1, 1]: identity distance, MagFace norm and (when any target is
    set and a yaw model is given) yaw."""
    import torch

    distance = 1.0 - torch.cosine_similarity(identity_model(images).float(), class_vectors.float(), dim=1)
    norm = quality_model(images).float().norm(dim=1)
    if yaw_model is not None and not bool(torch.isnan(target_yaws).all()):
        yaw = yaw_model(images).float()
    else:
        yaw = torch.full_like(distance, float("nan"))
    yaw_term = yaw_loss(torch.nan_to_num(yaw), target_yaws) if yaw_model is not None else torch.zeros_like(distance)
    return Scores(distance, norm, yaw, identity_loss(distance, settings.identity_margin),
                  quality_loss(norm, settings.quality_target), yaw_term)


def passes(scores: Scores, target_yaws: torch.Tensor, settings: AttrOPSettings) -> torch.Tensor:
    """[n] bool: identity within the margin, quality within its tolerance of the target, yaw within its tolerance."""
    import torch

    ok = (scores.distance <= settings.identity_margin) & (
        scores.quality >= settings.quality_target - settings.quality_tolerance)
    yaw_error = (scores.yaw.abs() - target_yaws.abs()).abs()
    return ok & (torch.isnan(target_yaws) | (yaw_error <= settings.yaw_tolerance))


def run_attrop(
    render: Callable[[torch.Tensor, Sequence[int]], torch.Tensor],
    vectors: torch.Tensor,
    class_vectors: torch.Tensor,
    target_yaws: Sequence[float | None],
    models: dict[str, Any],
    settings: AttrOPSettings = AttrOPSettings(),  # noqa: B008 (frozen dataclass)
) -> AttrOPResult:
    """Optimise each vector [n, d] until its render passes or `max_tries` renders were made.

    render(vectors [k, d], indices) -> images [k, 3, h, w] in [-1, 1] renders the images at those indices (their own
    masks and conditions); models: "identity" (ArcFace), "quality" (MagFace) and "yaw" (6DRepNet yaw in degrees, or
    None) callables on images.
    """
    import torch

    n = vectors.shape[0]
    if models.get("yaw") is None:  # no yaw model: no yaw targets
        target_yaws = [None] * n
    params = [vectors[i : i + 1].detach().clone().float().requires_grad_(True) for i in range(n)]
    optimizer = torch.optim.Adam(params, lr=settings.learning_rate)
    targets = torch.tensor([float("nan") if t is None else float(t) for t in target_yaws], device=vectors.device)
    classes = class_vectors.detach().float()
    kept_images: list[torch.Tensor | None] = [None] * n
    kept_vectors = [p.detach()[0].clone() for p in params]
    tries, passed = [0] * n, [False] * n
    last: list[dict[str, float | None]] = [{} for _ in range(n)]
    pending = list(range(n))
    for attempt in range(1, settings.max_tries + 1):
        with torch.enable_grad():
            batch = torch.cat([params[i] for i in pending])
            images = render(batch, pending).float().clamp(-1.0, 1.0)
            scores = score(images, classes[pending], targets[pending], models["identity"], models["quality"],
                           models.get("yaw"), settings)
            ok = passes(scores, targets[pending], settings).tolist()
            for row, index in enumerate(pending):
                kept_images[index] = images[row].detach()
                kept_vectors[index] = batch[row].detach().clone()
                tries[index], passed[index] = attempt, bool(ok[row])
                yaw = float(scores.yaw[row].detach())
                last[index] = {"identity_distance": float(scores.distance[row].detach()),
                               "quality": float(scores.quality[row].detach()), "yaw": None if yaw != yaw else yaw}
            failing = [row for row, good in enumerate(ok) if not good]
            if not failing or attempt == settings.max_tries:
                break
            optimizer.zero_grad(set_to_none=True)
            scores.total[failing].sum().backward()
            for row, index in enumerate(pending):  # passed images keep their vector: no gradient, no Adam step
                if ok[row]:
                    params[index].grad = None
            optimizer.step()
        pending = [pending[row] for row in failing]
    images_out = torch.stack([image for image in kept_images if image is not None])
    return AttrOPResult(images_out, torch.stack(kept_vectors), tries, passed, last)
