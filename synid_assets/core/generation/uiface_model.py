"""UIFace's network: IDiff-Face's conditional UNet with a learned empty context, and its attention injection.

Matched against Tencent/TFace @ 171ec1434aca0972e111663ac646c9c1e3e44b5b, `generation/uiface/`:
- `models/diffusion/unet.py` (ConditionalUNet with `learn_empty_context: True`, config
  `configs/model/unet_cond_ca_cpd25_uncond20.yaml`): IDiff-Face's UNet plus one parameter,
  `empty_context_embedding` [context_channels], used in place of the projected identity context when there is none
  (`context=None`) and for every sample whose `condition_flag` is off. 843 keys, 216,341,443 parameters.
- `models/diffusion/nn.py` (MultiHeadAttention.qkv_attention with `src_attn_map`): the attention logits
  (q k^T / sqrt(d), before the softmax) of a source pass are injected into another pass. Self-attention takes the
  source's logits as they are; cross-attention keeps its own logits but renormalises them, per query over the keys,
  to the mean and standard deviation halfway between its own and the source's (`negative=True`). Each block still
  reports its own logits (upstream returns them from q and k, whatever was injected).
Here the injection runs through the UNet's diffusers-style attention processors (`MultiHeadAttention.processor`,
called on the logits): `install_processors` puts one on every attention block, sharing an `AttentionInjection`
that records what each block computed and holds the maps to inject. The sampling that uses them is in
`uiface_sampling.py`. torch is imported with this module: import it only from loading code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from synid_assets.core.generation.idiff_face_model import ConditionalUNet, MultiHeadAttention, UNetConfig

CROSS_BLEND = 0.5  # upstream's `scale = 0.5`: target statistics halfway between own and source logits


class UIFaceUNet(ConditionalUNet):
    """ConditionalUNet(condition_type='CA', learn_empty_context=True): upstream's names, one extra parameter."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__(config)
        self.empty_context_embedding = nn.Parameter(torch.empty(config.context_channels))
        nn.init.normal_(self.empty_context_embedding)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
                use_identity: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise. context None: every sample on the learned empty context; use_identity [batch] bool:
        samples where it is False get the empty context instead of their identity (upstream's condition_flag)."""
        empty = self.empty_context_embedding.to(x.dtype).expand(len(x), -1)
        if context is None:
            return self.denoise(x, t, empty)
        c = self.context_emb(context)
        if use_identity is not None:
            c = torch.where(use_identity.to(c.device)[:, None], c, empty)
        return self.denoise(x, t, c)


def renormalized_cross_logits(own: torch.Tensor, source: torch.Tensor, blend: float = CROSS_BLEND) -> torch.Tensor:
    """Upstream's cross-attention injection: own logits standardised per query over the keys, then given the mean and
    (unbiased) standard deviation blend * source's + (1 - blend) * own's."""
    own32, source32 = own.float(), source.float()
    mean, std = own32.mean(dim=2, keepdim=True), own32.std(dim=2, keepdim=True)
    target_mean = blend * source32.mean(dim=2, keepdim=True) + (1 - blend) * mean
    target_std = blend * source32.std(dim=2, keepdim=True) + (1 - blend) * std
    return ((own32 - mean) / std * target_std + target_mean).to(own.dtype)


@dataclass
class AttentionInjection:
    """Shared by the processors of one UNet: per pass, the logits each block computed (in call order) and the
    source logits to inject (block name -> logits; cross-attention blocks only when `inject_cross`)."""

    recorded: dict[str, torch.Tensor] = field(default_factory=dict)
    source: dict[str, torch.Tensor] | None = None
    inject_cross: bool = False

    def start_pass(self, source: dict[str, torch.Tensor] | None = None, inject_cross: bool = False) -> None:
        """Before a UNet pass: forget the last pass's logits, set what this one injects (None: nothing)."""
        self.recorded = {}
        self.source = source
        self.inject_cross = inject_cross

    def maps(self, kind: str) -> dict[str, torch.Tensor]:
        """The last pass's logits of the 'self' or 'cross' attention blocks, in call order."""
        return {name: logits for name, logits in self.recorded.items() if name.endswith(f"{kind}_attention")}


class InjectionProcessor:
    """The processor of one attention block: records its own logits, returns the ones the softmax should use."""

    def __init__(self, name: str, state: AttentionInjection) -> None:
        self.name = name
        self.is_cross = name.endswith("cross_attention")
        self.state = state

    def __call__(self, attention: MultiHeadAttention, logits: torch.Tensor) -> torch.Tensor:
        self.state.recorded[self.name] = logits
        source = None if self.state.source is None else self.state.source.get(self.name)
        if source is None:
            return logits
        if not self.is_cross:
            return source  # self-attention: the empty-context pass's logits replace the block's own
        return renormalized_cross_logits(logits, source) if self.state.inject_cross else logits


def attention_blocks(unet: nn.Module) -> dict[str, MultiHeadAttention]:
    """Every self- and cross-attention block of the UNet, by module name, in forward order."""
    return {name: m for name, m in unet.named_modules() if isinstance(m, MultiHeadAttention)
            and name.endswith(("self_attention", "cross_attention"))}


def install_processors(unet: nn.Module) -> AttentionInjection:
    """Put an InjectionProcessor on every attention block of the UNet; they share the returned state."""
    state = AttentionInjection()
    for name, block in attention_blocks(unet).items():
        block.processor = InjectionProcessor(name, state)
    return state


def remove_processors(unet: nn.Module) -> None:
    """Back to plain attention (IDiff-Face's behaviour)."""
    for block in attention_blocks(unet).values():
        block.processor = None


def unet_state_of_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The UNet's own keys of a UIFace checkpoint, as upstream's `sample.py` reads them: 'eps_model.' and 'module.'
    removed (EMA `ema_averaged_model_<step>.ckpt` or DDP `model_<step>.ckpt`), the DDPM's schedule buffers left out."""
    out = {}
    for key, value in state.items():
        key = key.replace("module.", "").replace("eps_model.", "")
        if key.startswith(("image_proj.", "time_emb.", "context_emb.", "down.", "middle.", "up.", "norm.", "final.",
                           "empty_context_embedding")):
            out[key] = value
    return out
