"""Images per second of the embedding-space generators on one GPU: Vec2Face, Vec2Face+, IDiff-Face and UIFace.

Each is built at its released size with random weights (no download: the architecture, not the weights, sets the
speed), saved in its released layout and loaded through the project's own loader. Then the project's own
`generate()` is timed end to end (vectors in, PIL images out) over batch sizes:
- Vec2Face: the document path (one fMAE forward per image); batch 256 is always measured;
- Vec2Face+: live images with the LoRA pose token (yaws cycled), AttrOP off (AttrOP adds up to 30 render-and-backward
  tries per image, on estimator weights that random models never satisfy);
- IDiff-Face: DDIM `--steps` (default 50), one UNet pass per step, then the VQ decoder;
- UIFace: the two-stage DDIM sampling (`--steps`), two UNet passes per step (one in stage 1 for samples that have not
  switched to their identity yet: see uiface_sampling.py), then the VQ decoder.
For the two diffusion models FLOPs are counted (torch.utils.flop_counter on one UNet pass and one decode, times the
samples the UNet actually processed during the timed call), and the achieved TFLOP/s are set against the card's dense
bf16 peak (the H100/H200 data-sheet figures of gpu_flux.py, chosen by the card's name): once for the whole
generate() and once for the bare UNet forward at the same batch (the "UNet % peak" column; target >= 40 % at the
best batch).

    python benchmarks/gpu_seeds.py                        # H100/H200: bf16, batches 16,64,256, a few minutes
    python benchmarks/gpu_seeds.py --generators uiface --batches 64,256,512
    python benchmarks/gpu_seeds.py --smoke                # tiny models on the CPU (float32), same code, seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(REPO))

from benchmarks.gpu_flux import card_peak  # noqa: E402

GENERATORS = ("vec2face", "vec2face_plus", "idiff_face", "uiface")
VEC2FACE_BATCH = 256  # the reference batch for Vec2Face images/s


@dataclass
class Setup:
    """A loaded generator, the requests it is timed on, and (diffusion models) how to count its FLOPs."""

    generator: object
    requests: Callable[[int, int], list]  # (count, offset) -> requests
    unet: object | None = None  # the diffusion UNet, for FLOP counting and the bare-UNet timing
    latent: int = 32
    note: str = ""


def _vector(index: int) -> list[float]:
    import numpy as np

    v = np.random.default_rng(index).normal(size=512)
    return (v / np.linalg.norm(v)).tolist()


def document_requests(count: int, offset: int) -> list:
    from synid_assets.core.generation.types import DocumentRequest, IdentityRecord

    return [DocumentRequest(IdentityRecord(f"bench-{i:05d}", "bench", i, i, {}, "person"), "", 10_000 + i,
                            identity_vector=_vector(i)) for i in range(offset, offset + count)]


def live_requests(count: int, offset: int) -> list:
    from synid_assets.core.generation.types import IdentityRecord, LiveRequest

    return [LiveRequest(IdentityRecord(f"bench-{i:05d}", "bench", i, i, {}, "person"), "", i % 5, 10_000 + i,
                        f"bench/{i}.png", document_embedding=_vector(i)) for i in range(offset, offset + count)]


# ---------------------------------------------------------------- one setup per generator (full size or tiny)


def setup_vec2face(root: Path, args: argparse.Namespace) -> Setup:
    from synid_assets.core.generation.vec2face import Vec2FaceDocumentGenerator
    from synid_assets.random_models.vec2face import TINY_HEADS, build_tiny_vec2face, build_vec2face

    if args.smoke:
        path, heads = build_tiny_vec2face(root / "vec2face.pth"), {"num_heads": TINY_HEADS,
                                                                     "decoder_num_heads": TINY_HEADS}
    else:
        path, heads = build_vec2face(root / "vec2face.pth"), {}
    generator = Vec2FaceDocumentGenerator(model_id=str(path), dtype=args.dtype, device=args.device, **heads)
    return Setup(generator, document_requests)


def setup_vec2face_plus(root: Path, args: argparse.Namespace) -> Setup | None:
    """Vec2Face+ (another module): skipped, with a line saying so, where it is not in this checkout."""
    if importlib.util.find_spec("synid_assets.core.generation.vec2face_plus") is None:
        return None
    import torch

    from synid_assets.core.generation.vec2face_model import Vec2FaceConfig
    from synid_assets.core.generation.vec2face_plus import MAIN_FILE, POSE_FILE, Vec2FacePlusLiveGenerator
    from synid_assets.core.generation.vec2face_plus_model import POSE_CHANNELS
    from synid_assets.random_models.vec2face import build_vec2face
    from synid_assets.random_models.vec2face_plus import build_pose_checkpoint, build_tiny_vec2face_plus, tiny_options

    if args.smoke:
        options = tiny_options(build_tiny_vec2face_plus(root / "vec2face_plus"))
    else:
        main = build_vec2face(root / "vec2face_plus" / MAIN_FILE, Vec2FaceConfig())
        state = torch.load(main, map_location="cpu", weights_only=True)["model_vec2face"]
        build_pose_checkpoint(root / "vec2face_plus" / POSE_FILE, state, Vec2FaceConfig(), 8, POSE_CHANNELS)
        options = {"model_id": str(root / "vec2face_plus")}
    options.update(attrop=False, dtype=args.dtype, device=args.device)
    return Setup(Vec2FacePlusLiveGenerator(**options), live_requests, note="pose LoRA, AttrOP off")


def setup_idiff_face(root: Path, args: argparse.Namespace) -> Setup:
    from synid_assets.core.generation.idiff_face import IDiffFaceDocumentGenerator
    from synid_assets.random_models.idiff_face import build_idiff_face, build_tiny_idiff_face

    model = (build_tiny_idiff_face if args.smoke else build_idiff_face)(root / "idiff-face")
    generator = IDiffFaceDocumentGenerator(model_id=str(model), scheduler="ddim", steps=args.steps, dtype=args.dtype,
                                           device=args.device)
    generator.load()
    return Setup(generator, document_requests, unet=generator._unet, note=f"DDIM {args.steps} steps")


def setup_uiface(root: Path, args: argparse.Namespace) -> Setup:
    from synid_assets.core.generation.uiface import UIFaceDocumentGenerator
    from synid_assets.random_models.uiface import build_tiny_uiface, build_uiface

    model = (build_tiny_uiface if args.smoke else build_uiface)(root / "uiface")
    generator = UIFaceDocumentGenerator(model_id=str(model), steps=args.steps, dtype=args.dtype, device=args.device)
    generator.load()
    return Setup(generator, document_requests, unet=generator._unet, note=f"two-stage DDIM {args.steps} steps")


SETUPS = {"vec2face": setup_vec2face, "vec2face_plus": setup_vec2face_plus, "idiff_face": setup_idiff_face,
          "uiface": setup_uiface}


# ---------------------------------------------------------------- measuring


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def pass_flops(setup: Setup, device: str) -> tuple[float, float]:
    """(FLOPs of one UNet pass of one sample, FLOPs of one decode) counted on real forwards."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet, decoder = setup.unet, setup.generator._decoder
    dtype = next(unet.parameters()).dtype
    x = torch.randn(1, 3, setup.latent, setup.latent, device=device, dtype=dtype)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            unet(x, torch.tensor([500], device=device), torch.randn(1, 512, device=device, dtype=dtype))
        unet_flops = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            decoder(x)
    return float(unet_flops), float(counter.get_total_flops())


def time_unet(setup: Setup, batch: int, device: str, passes: int) -> float:
    """Seconds per bare UNet forward of `batch` samples (plain conditioned pass, after two warm-up passes)."""
    import torch

    dtype = next(setup.unet.parameters()).dtype
    x = torch.randn(batch, 3, setup.latent, setup.latent, device=device, dtype=dtype)
    t = torch.full((batch,), 500, device=device)
    c = torch.randn(batch, 512, device=device, dtype=dtype)
    with torch.inference_mode():
        for _ in range(2):
            setup.unet(x, t, c)
        _sync(device)
        start = time.perf_counter()
        for _ in range(passes):
            setup.unet(x, t, c)
        _sync(device)
    return (time.perf_counter() - start) / passes


def time_generate(setup: Setup, batch: int, repeats: int, device: str) -> tuple[float, int]:
    """(fastest wall time of one generate() of `batch` requests, UNet samples processed in it), after a warm-up."""
    generator = setup.generator
    generator.batch_size = batch
    generator.generate(setup.requests(batch, 0))
    processed = [0]
    hook = None
    if setup.unet is not None:  # count samples through the UNet (UIFace's stage 1 skips some conditioned passes)
        hook = setup.unet.register_forward_pre_hook(lambda module, inputs: processed.__setitem__(
            0, processed[0] + len(inputs[0])))
    best, best_processed = float("inf"), 0
    try:
        for repeat in range(repeats):
            processed[0] = 0
            requests = setup.requests(batch, (repeat + 1) * batch)
            _sync(device)
            start = time.perf_counter()
            images = generator.generate(requests)
            _sync(device)
            elapsed = time.perf_counter() - start
            assert len(images) == batch
            if elapsed < best:
                best, best_processed = elapsed, processed[0]
    finally:
        if hook is not None:
            hook.remove()
    return best, best_processed


def run(args: argparse.Namespace) -> int:
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("gpu_seeds: no CUDA device (use --smoke for the CPU check)", file=sys.stderr)
        return 2
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    peak = card_peak(device_name, args.peak_tflops)
    peak_text = f"{peak:.0f} TFLOP/s bf16 dense" if peak else "unknown (pass --peak-tflops)"
    print(f"card: {device_name}, peak {peak_text}; dtype {args.dtype}; diffusion steps {args.steps}; "
          f"torch {torch.__version__}", flush=True)
    header = (f"{'generator':<14} {'batch':>5} {'images/s':>9} {'s/batch':>8} {'TFLOP/s':>8} {'% peak':>7} "
              f"{'UNet TFLOP/s':>12} {'UNet % peak':>11}  note")
    rows = [header, "-" * len(header)]
    for name in args.generators:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            start = time.perf_counter()
            setup = SETUPS[name](Path(tmp), args)
            if setup is None:
                rows.append(f"{name:<14} not in this checkout (hook: setup_{name} builds it when its module exists)")
                continue
            setup.generator.load()
            print(f"{name}: built and loaded in {time.perf_counter() - start:.1f} s", flush=True)
            flops = pass_flops(setup, args.device) if setup.unet is not None else None
            batches = sorted(set(args.batches) | ({VEC2FACE_BATCH} if name == "vec2face" and not args.smoke else set()))
            for batch in batches:
                try:
                    seconds, processed = time_generate(setup, batch, args.repeats, args.device)
                except torch.cuda.OutOfMemoryError:
                    rows.append(f"{name:<14} {batch:>5} out of memory")
                    torch.cuda.empty_cache()
                    continue
                text = f"{name:<14} {batch:>5} {batch / seconds:>9.1f} {seconds:>8.3f}"
                if flops is not None:
                    total = processed * flops[0] + batch * flops[1]
                    tflops = total / seconds / 1e12
                    unet_tflops = batch * flops[0] / time_unet(setup, batch, args.device, args.unet_passes) / 1e12
                    pct = f"{100 * tflops / peak:.1f}" if peak else "n/a"
                    unet_pct = f"{100 * unet_tflops / peak:.1f}" if peak else "n/a"
                    text += f" {tflops:>8.3g} {pct:>7} {unet_tflops:>12.3g} {unet_pct:>11}"
                    note = f"{setup.note}; {processed / batch:.1f} UNet passes/image"
                else:
                    text += f" {'-':>8} {'-':>7} {'-':>12} {'-':>11}"
                    note = setup.note
                rows.append(f"{text}  {note}")
                print(rows[-1], flush=True)
            setup.generator.unload()
            del setup
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    print("\n".join(["", *rows]))
    if args.out:
        Path(args.out).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", "--tiny", action="store_true", help="tiny models on the CPU: a check, not a figure")
    parser.add_argument("--generators", default=",".join(GENERATORS), help=f"comma list of {GENERATORS}")
    parser.add_argument("--batches", default=None, help="comma list (default 16,64,256; --smoke 1,2)")
    parser.add_argument("--steps", type=int, default=None, help="diffusion steps (default 50; --smoke 6)")
    parser.add_argument("--dtype", default=None, help="default bfloat16 (--smoke float32)")
    parser.add_argument("--repeats", type=int, default=2, help="timed generate() calls per batch (fastest shown)")
    parser.add_argument("--unet-passes", type=int, default=10, help="timed bare UNet passes per batch")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the card's bf16 dense peak")
    parser.add_argument("--workdir", default=None, help="where the random-weight checkpoints are written")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    args.generators = [g for g in args.generators.split(",") if g]
    unknown = set(args.generators) - set(GENERATORS)
    if unknown:
        parser.error(f"unknown generators {sorted(unknown)} (known: {GENERATORS})")
    args.batches = [int(b) for b in (args.batches or ("1,2" if args.smoke else "16,64,256")).split(",")]
    args.steps = args.steps or (6 if args.smoke else 50)
    args.dtype = args.dtype or ("float32" if args.smoke else "bfloat16")
    args.device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        args.repeats, args.unet_passes = 1, 1
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
