"""UIFace's two-stage sampling (`sample_ddim_2stage` of Tencent/TFace @ 171ec14, `generation/uiface/diffusion/ddpm.py`).

Every DDIM step runs the UNet twice: an unconditioned pass on the learned empty context, then a conditioned pass
that gets the unconditioned pass's attention logits injected (`uiface_model.py`).
- Stage 1 (t >= `stage_two_below`, 500 in `configs/sample_ddim_config.yaml`): each sample's conditioned pass uses the
  empty context until that sample switches to its identity context; only self-attention is injected, and the noise
  prediction is the conditioned pass's. After each step the sample's cross-attention map (`attention_map`, upstream's
  `get_attn_map`) is compared with the one of the step before; when the change (`map_change`, upstream's
  `calculate_rmse`) is below `switch_threshold` (0.006, `MSE_th`), the sample uses its identity from the next step on.
  Each sample switches on its own trace, whatever the rest of its batch does.
- Stage 2 (t < 500, for every sample that has not switched by then): self- and cross-attention are injected and the
  prediction is classifier-free guidance, (1 + s) * cond - s * uncond with s = `guidance_scale` (1.0, `cfg_scale`).
Upstream's `calculate_rmse` is mean(sqrt(mse elementwise)) over the map, that is the mean absolute difference; it is
computed as upstream does, since the published threshold was set on that quantity.
A sample that has not switched runs the same computation in both passes (empty context, and self-attention logits
replaced by equal ones), so its conditioned pass is the unconditioned one: stage 1 runs the conditioned pass only on
the samples that have switched, which gives the same result with fewer UNet passes.
The steps are diffusers' DDIMScheduler (eta 0) on the published schedule (idiff_face.make_scheduler): timesteps
980, 960, ..., 0 as upstream's `range(0, T, T // 50)`. Upstream's own DDIM step reads alpha_bar one index early for the
previous timestep (`alphas_prev[t - 20]` = alpha_bar[t - 21], and 1 at t = 20); diffusers uses alpha_bar[t - 20].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SWITCH_THRESHOLD = 0.006  # MSE_th
STAGE_TWO_BELOW = 500  # step_th: every sample is on its identity (with guidance) for t < 500
GUIDANCE_SCALE = 1.0  # cfg_scale
MAP_SIZE = 32  # get_attn_map's img_size (the latent's size)


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """UIFace's guidance: (1 + s) * cond - s * uncond."""
    return (1 + scale) * cond - scale * uncond


def attention_map(cross_logits: list[torch.Tensor], batch: int, size: int = MAP_SIZE) -> torch.Tensor:
    """Upstream's get_attn_map: [batch, size, size] in [0, 1], one map per sample from every cross-attention block.

    Per block: softmax of the logits over the queries (the image positions), mean over keys and heads, divided by
    its maximum, resized bilinearly to size x size and clamped; then the mean over blocks, min-max normalised.
    """
    import torch
    import torch.nn.functional as F

    per_block = []
    for logits in cross_logits:
        queries, keys = logits.shape[1], logits.shape[2]
        side = int(round(queries ** 0.5))
        weights = torch.softmax(logits.float().reshape(batch, -1, queries, keys), dim=-2).mean(dim=-1).mean(dim=1)
        weights = weights / weights.max(dim=1, keepdim=True).values
        resized = F.interpolate(weights.reshape(batch, 1, side, side), size=(size, size), mode="bilinear",
                                align_corners=False).squeeze(1)
        per_block.append(resized.clamp(0, 1))
    mean = torch.stack(per_block, dim=1).mean(dim=1)
    low = mean.reshape(batch, -1).min(dim=1).values[:, None, None]
    high = mean.reshape(batch, -1).max(dim=1).values[:, None, None]
    return (mean - low) / (high - low).clamp_min(1e-12)  # a flat map (never seen) gives 0, not upstream's NaN


def map_change(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Upstream's calculate_rmse between consecutive maps: mean over the map of sqrt((a - b)^2), per sample."""
    return (previous.float() - current.float()).pow(2).sqrt().mean(dim=(1, 2))


def update_switch(switched: torch.Tensor, previous: torch.Tensor | None, current: torch.Tensor,
                  threshold: float = SWITCH_THRESHOLD) -> torch.Tensor:
    """The adaptive partition: a sample switches (for good) when its map changed by less than threshold."""
    if previous is None:
        return switched
    return switched | (map_change(previous, current) < threshold)


def identity_start_steps(timesteps: list[int], maps: torch.Tensor, threshold: float = SWITCH_THRESHOLD,
                         stage_two_below: int = STAGE_TWO_BELOW) -> list[int]:
    """Replay the rule on a recorded trace: the first timestep at which each sample uses its identity context.

    `maps[i]` is the [batch, H, W] map recorded at stage-1 step `timesteps[i]` (timesteps descending); a switch decided
    after step i applies from step i + 1, and stage 2 puts every remaining sample on its identity.
    """
    import torch

    all_steps = list(timesteps)
    switched = torch.zeros(maps.shape[1], dtype=torch.bool)
    start = [None] * maps.shape[1]
    previous = None
    for i, t in enumerate(all_steps):
        for b in range(len(start)):
            if start[b] is None and (switched[b] or t < stage_two_below):
                start[b] = int(t)
        if t < stage_two_below or i >= len(maps):
            continue
        switched = update_switch(switched, previous, maps[i], threshold)
        previous = maps[i]
    return [s if s is not None else -1 for s in start]


@dataclass
class SamplingTrace:
    """What one batch's sampling did: the stage-1 timesteps and maps, and each sample's first identity timestep."""

    timesteps: list[int] = field(default_factory=list)
    stage_one_maps: list[torch.Tensor] = field(default_factory=list)  # [batch, 32, 32] per stage-1 step (CPU)
    identity_from: list[int] = field(default_factory=list)


def _rows(logits: dict[str, torch.Tensor], index: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
    """The logits of the samples in index (logits are [batch * heads, queries, keys], batch-major)."""
    out = {}
    for name, value in logits.items():
        per_sample = value.reshape(batch, -1, *value.shape[1:])[index]
        out[name] = per_sample.reshape(-1, *value.shape[1:])
    return out


def sample_two_stage(unet, scheduler, latents: torch.Tensor, context: torch.Tensor,
                     guidance_scale: float = GUIDANCE_SCALE, switch_threshold: float = SWITCH_THRESHOLD,
                     stage_two_below: int = STAGE_TWO_BELOW, trace: SamplingTrace | None = None) -> torch.Tensor:
    """Denoise latents [batch, C, H, W] (float32) conditioned on context [batch, 512]; returns the final latents.

    `unet` is a UIFaceUNet (any dtype: its inputs are cast to the context's dtype), `scheduler` a DDIMScheduler with
    its timesteps set. Processors are installed for the call and removed after it.
    """
    import torch

    from synid_assets.core.generation.uiface_model import install_processors, remove_processors

    dtype, device, batch = context.dtype, latents.device, len(latents)
    state = install_processors(unet)
    switched = torch.zeros(batch, dtype=torch.bool, device=device)
    identity_from = torch.full((batch,), -1, dtype=torch.long)
    previous = None
    x = latents
    try:
        with torch.inference_mode():
            for t in scheduler.timesteps:
                t_int = int(t)
                stage_two = t_int < stage_two_below
                first = (identity_from < 0) & (switched.cpu() | stage_two)  # one device sync per step
                identity_from[first] = t_int  # the first step that uses each sample's identity
                steps = torch.full((batch,), t_int, device=device, dtype=torch.long)
                state.start_pass()
                uncond = unet(x.to(dtype), steps, None)
                empty_logits = dict(state.recorded)
                if stage_two:
                    state.start_pass(source=empty_logits, inject_cross=True)
                    cond = unet(x.to(dtype), steps, context)
                    eps = classifier_free_guidance(cond.float(), uncond.float(), guidance_scale)
                else:
                    eps = uncond.float()
                    current = attention_map(list(state.maps("cross").values()), batch)
                    index = switched.nonzero().squeeze(1)
                    if len(index):  # only switched samples differ from the unconditioned pass
                        state.start_pass(source=_rows(empty_logits, index, batch), inject_cross=False)
                        cond = unet(x[index].to(dtype), steps[index], context[index])
                        eps[index] = cond.float()
                        current[index] = attention_map(list(state.maps("cross").values()), len(index))
                    switched = update_switch(switched, previous, current, switch_threshold)
                    previous = current
                    if trace is not None:
                        trace.stage_one_maps.append(current.cpu())
                if trace is not None:
                    trace.timesteps.append(t_int)
                x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    finally:
        state.start_pass()  # drop the recorded logits
        remove_processors(unet)
    if trace is not None:
        trace.identity_from = identity_from.tolist()
    return x
