"""Backbones (analysis/frs.py's IResNet modules) and the margin heads ArcFace, CosFace and AdaFace."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from synid_assets.core.training.config import BACKBONE_UNITS, TrainConfig, parse_backbone

if TYPE_CHECKING:
    import torch

def build_backbone(config: TrainConfig) -> torch.nn.Module:
    """The IResNet of `config` with random weights, for `config.image_size` square inputs.

    The modules and their names are frs_models.IResNetBackbone's (TreB1eN's layout, BN1d affine), so an IR-SE-50
    trained here loads as SynID's `arcface` FRS. Inputs other than 112 px change only the output Linear's
    input size (the feature map is no longer 7x7).
    """
    import torch
    from torch import nn

    from synid_assets.core.analysis.frs_models import IResNetBackbone

    mode, depth = parse_backbone(config.backbone)
    model = IResNetBackbone(
        depth,
        mode,
        "treb1en",
        bn1d_affine=True,
        units=BACKBONE_UNITS[depth],
        channels=config.channels,
        embedding_size=config.embedding_size,
    )
    if config.image_size != 112:
        with torch.no_grad():
            model.eval()
            features = model.body(model.input_layer(torch.zeros(1, 3, config.image_size, config.image_size)))
        model.output_layer[3] = nn.Linear(features[0].numel(), config.embedding_size)
        model.train()
    return model


def build_head(config: TrainConfig, num_classes: int) -> torch.nn.Module:
    """The classification head of `config.head` for `num_classes` identities; forward(embeddings, labels) -> logits.

    The classes are defined here, not at module level, so importing this module does not import torch.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    class _CosineHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.empty(num_classes, config.embedding_size))
            nn.init.normal_(self.weight, std=0.01)
            self.scale = float(config.scale)
            self.margin = config.head_margin

        def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
            # In float32 whatever the autocast dtype: the margins act on angles near 0 and pi.
            return F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float())).clamp(-1.0, 1.0)

    class ArcFaceHead(_CosineHead):
        """cos(theta + m) for the true class (InsightFace's ArcFace, with its fallback past pi - m)."""

        def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            cos = self.cosine(embeddings)
            target = cos.gather(1, labels[:, None])
            sin = (1.0 - target * target).clamp_min(1e-9).sqrt()
            with_margin = target * math.cos(self.margin) - sin * math.sin(self.margin)
            # Past theta = pi - m, cos(theta + m) is no longer decreasing: use cos(theta) - m sin(m) instead.
            fallback = target - math.sin(math.pi - self.margin) * self.margin
            with_margin = torch.where(target > math.cos(math.pi - self.margin), with_margin, fallback)
            return cos.scatter(1, labels[:, None], with_margin) * self.scale

    class CosFaceHead(_CosineHead):
        """cos(theta) - m for the true class."""

        def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            cos = self.cosine(embeddings)
            target = cos.gather(1, labels[:, None]) - self.margin
            return cos.scatter(1, labels[:, None], target) * self.scale

    class AdaFaceHead(_CosineHead):
        """AdaFace (mk-minchul/AdaFace head.py): angular and additive margins scaled by the feature norm's z-score."""

        def __init__(self, h: float = 0.333, t_alpha: float = 0.01, eps: float = 1e-3) -> None:
            super().__init__()
            self.h, self.t_alpha, self.eps = h, t_alpha, eps
            self.register_buffer("batch_mean", torch.ones(1) * 20)
            self.register_buffer("batch_std", torch.ones(1) * 100)

        def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            cos = self.cosine(embeddings).clamp(-1 + self.eps, 1 - self.eps)
            norms = embeddings.float().norm(dim=1, keepdim=True).clamp(0.001, 100).detach()
            if self.training:
                with torch.no_grad():
                    std = norms.std() if norms.shape[0] > 1 else torch.zeros_like(self.batch_std[0])
                    self.batch_mean.mul_(1 - self.t_alpha).add_(self.t_alpha * norms.mean())
                    self.batch_std.mul_(1 - self.t_alpha).add_(self.t_alpha * std)
            scaler = ((norms - self.batch_mean) / (self.batch_std + self.eps) * self.h).clamp(-1, 1)
            target = cos.gather(1, labels[:, None])
            theta = (target.acos() - self.margin * scaler).clamp(self.eps, math.pi - self.eps)
            target = theta.cos() - (self.margin + self.margin * scaler)
            return cos.scatter(1, labels[:, None], target) * self.scale

    heads = {"arcface": ArcFaceHead, "cosface": CosFaceHead, "adaface": AdaFaceHead}
    return heads[config.head]()
