"""`synid models check|download`: the models a resource profile needs."""

from __future__ import annotations

import argparse
import sys

from synid_assets.core.config.profiles import ProfileError


def run_models(action: str, profile_name: str, cache_dir: str | None) -> int:
    """List, check or download the models a profile needs. HF_TOKEN is read, never shown."""
    from synid_assets.core.config.models import check_models, download_models, profile_models
    from synid_assets.core.config.profiles import load_profile

    try:
        profile = load_profile(profile_name)
    except ProfileError as exc:
        print(f"synid models: {exc}", file=sys.stderr)
        return 2
    refs = profile_models(profile)
    if not refs:
        print(f"profile {profile['name']}: embedded backends only, nothing to download")
        return 0
    if action == "download":
        try:
            for ref, path in download_models(refs, cache_dir):
                print(f"{ref.role:<26} {ref.repo_id}  ->  {path}  [{ref.license}]")
        except Exception as exc:  # network, auth, gated repo: say which model, never the token
            print(f"synid models download: {type(exc).__name__}: {exc}", file=sys.stderr)
            print("gated repos (FLUX.1-dev) need an accepted licence and HF_TOKEN in the environment", file=sys.stderr)
            return 1
        return 0
    missing = 0
    for ref, present, where in check_models(refs, cache_dir):
        missing += not present
        state = "ok     " if present else "MISSING"
        print(f"{state} {ref.role:<26} {ref.repo_id}@{ref.revision or 'main'}  {where}  [{ref.license}]")
    if missing:
        print(f"{missing} model(s) missing: run `synid models download {profile_name}`", file=sys.stderr)
    return 1 if missing else 0


def register(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="models a resource profile needs")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    for action, text in (("check", "say which models are missing (no network)"),
                         ("download", "fetch them with huggingface_hub (token from HF_TOKEN)")):
        command = model_commands.add_parser(action, help=text)
        command.add_argument("profile")
        command.add_argument("--cache-dir", default=None, help="default: the Hugging Face cache")
    models.set_defaults(handler=lambda args: run_models(args.models_command, args.profile, args.cache_dir))
