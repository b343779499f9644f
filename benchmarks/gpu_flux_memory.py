"""Peak GPU memory and seconds per image of the FLUX document profiles, run as the profiles run them.

For each profile (default: resources/flux-24gb.yaml, then resources/flux-80gb.yaml) this builds a FLUX.1-dev-sized
FluxPipeline with random weights (transformer 11.9B, T5 v1.1 XXL encoder 4.8B, CLIP-L text, FLUX VAE: the sizes, not
the weights, set memory and speed), writes a random rank-64 LoRA on every attention projection (the profiles load
the CFD LoRA), and hands both to the profile's own `FluxDocumentGenerator` (`use_pipeline`): LoRA loading, fp8
layerwise weight storage, CPU offload, attention backend and compile are the product's code, with the profile's
settings. It then generates `batch_size` document images at the profile's size and steps and reports peak GPU
memory (allocated and reserved by PyTorch; the CUDA context adds about 0.5 GB on top), the host's peak RSS, and
seconds per image.

    python benchmarks/gpu_flux_memory.py                     # both profiles on one GPU, about 3 min on an H100/H200
    python benchmarks/gpu_flux_memory.py --profiles resources/flux-24gb.yaml --steps 4
    python benchmarks/gpu_flux_memory.py --tiny              # same code on CPU with tiny components, seconds
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(REPO))

DEFAULT_PROFILES = "resources/flux-24gb.yaml,resources/flux-80gb.yaml"
PROMPT = (
    "Photograph of a woman. The subject has a neutral face expression. The subject has brown eyes and short curly "
    "black hair. The subject is shown from the neck up, wearing plain grey clothing, against a plain white background."
)


def _requests(count: int):
    from synid_assets.core.generation.types import DocumentRequest, IdentityRecord

    out = []
    for index in range(count):
        identity = IdentityRecord(f"bench-{index:05d}", "bench", index, 0, {}, "woman")  # one guidance for all
        out.append(DocumentRequest(identity, PROMPT, 1000 + index))
    return out


def _host_peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def measure_profile(profile_path: Path, args: argparse.Namespace, tmp: Path) -> list[dict]:
    import torch

    from synid_assets.core.config.profiles import load_profile
    from synid_assets.core.config.registry import create_backend
    from synid_assets.random_models.flux import (
        FLUX_DEV_CLIP,
        FLUX_DEV_T5,
        FLUX_DEV_TRANSFORMER,
        FLUX_DEV_VAE,
        TINY_CLIP,
        TINY_T5,
        TINY_TRANSFORMER,
        TINY_VAE,
        flux_pipeline,
        save_random_flux_lora,
    )

    options = dict(load_profile(str(profile_path))["document_generator"])  # validated as `synid` reads it
    backend = options.pop("backend")
    if backend != "flux":
        raise SystemExit(f"{profile_path}: document_generator backend is {backend!r}, not flux")
    options["model_id"] = "random FLUX.1-dev-sized weights (benchmark)"
    if args.steps:
        options["steps"] = args.steps
    if args.tiny:  # CPU: no offload (it needs an accelerator); tiny components make tiny images
        options.update(device="cpu", offload="none", width=32, height=32, compile=False, attention_backend=None)
        configs, build_device = (TINY_TRANSFORMER, TINY_CLIP, TINY_T5, TINY_VAE), "cpu"
    else:
        configs, build_device = (FLUX_DEV_TRANSFORMER, FLUX_DEV_CLIP, FLUX_DEV_T5, FLUX_DEV_VAE), "cuda"
    dtype = getattr(torch, options.get("dtype", "bfloat16"))

    started = time.perf_counter()
    pipe = flux_pipeline(*configs, device=build_device, dtype=dtype)
    params = {name: sum(p.numel() for p in getattr(pipe, name).parameters())
              for name in ("transformer", "text_encoder", "text_encoder_2", "vae")}  # fmt: skip
    if options.get("lora"):
        lora_dir = save_random_flux_lora(pipe.transformer, tmp / f"lora-{profile_path.stem}", rank=args.lora_rank)
        options.update(lora=str(lora_dir), lora_weight_name=None)
    pipe.to("cpu")  # where from_pretrained leaves a loaded pipeline
    if build_device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    built = time.perf_counter() - started

    generator = create_backend("document_generator", "flux", options)
    started = time.perf_counter()
    generator.use_pipeline(pipe)
    del pipe
    setup = time.perf_counter() - started
    results = []
    batch_sizes = args.batch_sizes or [generator.batch_size]
    if not args.batch_sizes:  # one warm-up image: first offload moves, kernel selection
        generator.generate(_requests(1))
    for batch_size in batch_sizes:
        generator.batch_size = batch_size  # chunking only: the same loaded pipeline serves every size
        requests = _requests(batch_size)
        if build_device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        images = generator.generate(requests)
        if build_device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        result = {
            "profile": profile_path.name,
            "params_b": {k: round(v / 1e9, 3) for k, v in params.items()},
            "options": {k: options.get(k) for k in ("dtype", "transformer_storage_dtype", "offload", "compile",
                                                    "attention_backend", "steps", "width", "height")},
            "batch_size": batch_size,
            "lora_rank": args.lora_rank if options.get("lora") else None,
            "images": len(images),
            "size": images[0].image.size,
            "s_per_image": seconds / len(images),
            "build_s": built,
            "setup_s": setup,
            "host_peak_gb": _host_peak_gb(),
        }  # fmt: skip
        if build_device == "cuda":
            result["gpu_peak_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
            result["gpu_peak_reserved_gb"] = torch.cuda.max_memory_reserved() / 2**30
        print(f"{result['profile']}: {result}", flush=True)
        results.append(result)
        del images
    generator.unload()
    del generator
    gc.collect()
    if build_device == "cuda":
        torch.cuda.empty_cache()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", default=DEFAULT_PROFILES, help="comma-separated profile YAML files")
    parser.add_argument("--steps", type=int, default=None, help="override the profiles' steps (memory is the same)")
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument(
        "--batch-sizes", default=None, help="comma-separated batch sizes run on one loaded pipeline (default: the "
        "profile's batch_size, after a one-image warm-up); peak memory is reset before each"
    )  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="tiny components on CPU: tests the script")
    args = parser.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else None
    import torch

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # random-weight VAEs can overflow the uint8 cast
    if not args.tiny and not torch.cuda.is_available():
        print("no CUDA device: run with --tiny to test this script on CPU", file=sys.stderr)
        return 2
    card = "CPU (tiny components)" if args.tiny else torch.cuda.get_device_name(0)
    print(f"device: {card}; torch {torch.__version__}", flush=True)
    results, failed = [], False
    with tempfile.TemporaryDirectory(prefix="synid-flux-mem-") as tmp:
        for name in args.profiles.split(","):
            path = Path(name) if Path(name).is_absolute() else REPO / name
            try:
                results += measure_profile(path, args, Path(tmp))
            except Exception as error:  # report and go on to the next profile: one failure is itself a finding
                failed = True
                print(f"{path.name}: FAILED: {type(error).__name__}: {error}", flush=True)
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
    print()
    print(f"FLUX document profiles on {card}, random FLUX.1-dev-sized weights")
    header = (f"{'profile':<16} {'storage':<14} {'offload':<8} {'batch':>5} {'size':>9} {'steps':>5} {'s/image':>8} "
              f"{'GPU alloc GiB':>13} {'GPU resv GiB':>12} {'host peak GiB':>13}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in results:
        o = r["options"]
        size = f"{r['size'][0]}x{r['size'][1]}"
        alloc = f"{r['gpu_peak_allocated_gb']:.1f}" if "gpu_peak_allocated_gb" in r else "n/a"
        resv = f"{r['gpu_peak_reserved_gb']:.1f}" if "gpu_peak_reserved_gb" in r else "n/a"
        print(f"{r['profile']:<16} {str(o['transformer_storage_dtype'] or o['dtype']):<14} {o['offload']:<8} "
              f"{r['batch_size']:>5} {size:>9} {o['steps']:>5} {r['s_per_image']:>8.2f} {alloc:>13} {resv:>12} "
              f"{r['host_peak_gb']:>13.1f}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
