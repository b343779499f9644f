"""`synid demo`: materialize the whole graph on the embedded defaults, then print a summary."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from synid_assets.core.config.profiles import REPO_ROOT, ProfileError, default_attributes_dir
from synid_assets.core.dataset.layout import default_home


def _prepare_homes() -> tuple[Path | str, Path]:
    """SYNID_HOME (default ./data) and DAGSTER_HOME (default $SYNID_HOME/dagster) with the instance config.

    An s3:// SYNID_HOME is checked (endpoint, bucket, credentials) and DAGSTER_HOME defaults to the dagster
    directory beside its local mirror's files (RemoteHomeError on a store that cannot be used).
    """
    home = default_home()
    if isinstance(home, str):
        from synid_assets.core.dataset.remote_home import RemoteHome

        remote = RemoteHome(home)
        remote.check()
        local = remote.local
    else:
        local = home
    local.mkdir(parents=True, exist_ok=True)
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or local / "dagster").resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance_yaml = dagster_home / "dagster.yaml"
    if not instance_yaml.exists() and (REPO_ROOT / "dagster.yaml").exists():
        shutil.copyfile(REPO_ROOT / "dagster.yaml", instance_yaml)
    os.environ["SYNID_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return home, dagster_home


def _failure_messages(result: Any) -> list[str]:
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            text = (data.user_failure_data.description if data.user_failure_data else None) or (
                data.error.message.strip() if data.error else "step failed"
            )
            messages.append(f"{event.step_key}: {text}")
    return messages or ["run failed"]


_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class DemoInterrupted(Exception):
    """SIGTERM or SIGINT ended a run of the demo; args[0] is its run id."""


def demo_job(name: str, profile: str | None) -> Any:
    """The named job of the SynID definitions, rebuilt by Dagster from this module (see `_execute`)."""
    from synid_assets.definitions import build_definitions

    return build_definitions(profile).resolve_job_def(name)


def _execute(instance: Any, job_name: str, profile: str | None, run_config: dict, tags: dict[str, str]) -> Any:
    """One run on the code location's executor, as the UI launches it (execute_in_process swaps in its own).

    SynID's executor records this process as the run's owner, waits for pool slots without spinning and
    ends the run on SIGTERM/SIGINT (Dagster's own would retry an interrupted step, or not notice one while
    it waits for a slot). A run ended so raises DemoInterrupted.
    """
    import dagster as dg
    from dagster._core.events import RunFailureReason

    from synid_assets.core.dataset.run_owner import RunOwner

    job = dg.build_reconstructable_job(__name__, demo_job.__name__, reconstructable_args=(job_name, profile))
    # The owner tags are on the run from its creation, so a run killed before its executor starts is found too.
    result = dg.execute_job(job, instance=instance, run_config=run_config, tags={**tags, **RunOwner.current().tags()})
    for event in result.all_events:
        data = event.event_specific_data if event.is_run_failure else None
        if getattr(data, "failure_reason", None) == RunFailureReason.UNEXPECTED_TERMINATION:
            raise DemoInterrupted(result.run_id)
    return result


def _interrupt_on_sigterm_and_sigint() -> dict[int, Any]:
    """SIGTERM ends the demo as Ctrl-C does; returns the previous handlers (none off the main thread).

    SIGINT is set too: a shell starts background jobs with SIGINT ignored, and Dagster gives SIGTERM
    whatever SIGINT has after each run, which would make SIGTERM ignored from the second run on.
    """
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, signal.default_int_handler)
        except ValueError:  # not the main thread: signals stay as they are
            break
    return previous


def run_demo(
    identities: int, live: int, attributes: str | None, seed: int | None, profile: str | None
) -> int:
    """Materialize the whole graph on the embedded defaults for `identities` identities."""
    if identities < 1 or live < 0:
        print("synid demo: --identities must be >= 1 and --live >= 0", file=sys.stderr)
        return 2
    from synid_assets.core.dataset.remote_home import RemoteHomeError

    try:
        home, dagster_home = _prepare_homes()
    except RemoteHomeError as exc:
        print(f"synid demo: {exc}", file=sys.stderr)
        return 2
    os.environ["SYNID_LIVE"] = str(live)
    if seed is not None:
        os.environ["SYNID_SEED"] = str(seed)
    if attributes:
        os.environ["SYNID_ATTRIBUTES"] = str(Path(attributes).resolve())
    import dagster as dg

    from synid_assets.definitions import build_definitions
    from synid_assets.defs.runs import recover_dead_runs, release_runs_of_this_process

    try:
        defs = build_definitions(profile)
    except ProfileError as exc:
        print(f"synid demo: {exc}", file=sys.stderr)
        return 2
    instance = dg.DagsterInstance.get()
    previous_handlers = _interrupt_on_sigterm_and_sigint()
    progress = {"stage": "startup"}
    try:
        # A run whose process was killed (OOM, SIGKILL, crash) would hold its pool slot forever.
        for message in recover_dead_runs(instance):
            print(f"recovered: {message}", flush=True)
        print(f"SYNID_HOME={home}\nDAGSTER_HOME={dagster_home}\nattributes: {defs.resources['dataset'].attributes_dir}")
        if _materialize(instance, defs, identities, live, profile, progress) != 0:
            return 1
        progress["stage"] = "the summary"
        _print_summary(home)
        return 0
    except (KeyboardInterrupt, DemoInterrupted) as exc:
        release_runs_of_this_process(instance, "synid demo was interrupted (SIGTERM or SIGINT)")
        run = f" (run {exc.args[0]} marked failed, its pool slots freed)" if isinstance(exc, DemoInterrupted) else ""
        print(f"synid demo: interrupted during {progress['stage']}{run}; rerun it to finish", file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)


def _materialize(
    instance: Any, defs: Any, identities: int, live: int, profile: str | None, progress: dict[str, str]
) -> int:
    from synid_assets.defs.partitions import batch_key, identity_batches

    dataset = defs.resources["dataset"]
    progress["stage"] = "the attribute spec"
    result = _execute(instance, "attribute_spec_job", profile, _QUIET, {})
    if not result.success:
        print("attribute spec is invalid; nothing was generated:", file=sys.stderr)
        for message in _failure_messages(result):
            print(f"  {message}", file=sys.stderr)
        return 1

    batches = math.ceil(identities / dataset.batch_size)
    keys = [batch_key(i) for i in range(batches)]
    known = set(instance.get_dynamic_partitions(identity_batches.name))
    instance.add_dynamic_partitions(identity_batches.name, [k for k in keys if k not in known])
    for number, key in enumerate(keys):
        size = min(dataset.batch_size, identities - number * dataset.batch_size)
        print(f"materializing {key}: {size} identities x {live} live images ...", flush=True)
        progress["stage"] = key
        run_config = {**_QUIET, "ops": {"identity_attributes": {"config": {"batch_size": size}}}}
        result = _execute(instance, "synid_batch", profile, run_config, {"dagster/partition": key})
        if not result.success:
            print(f"batch {key} failed:", file=sys.stderr)
            for message in _failure_messages(result):
                print(f"  {message}", file=sys.stderr)
            return 1
    return 0


def _print_summary(home: Path | str) -> None:
    import duckdb

    from synid_assets.core.dataset.layout import DatasetLayout

    if isinstance(home, str):  # an s3:// home: read the manifest object the run uploaded
        from synid_assets.core.dataset.remote_home import RemoteHome

        remote = RemoteHome(home)
        manifest = remote.fetch("manifest.duckdb") or remote.local / "manifest.duckdb"
        where = {"manifest": f"{remote.url}/manifest.duckdb", "images": f"{remote.url}/batches",
                 "embeddings": remote.lancedb_uri}
    else:
        layout = DatasetLayout(home)
        manifest = layout.manifest_path
        where = {"manifest": layout.manifest_path, "images": layout.batches_dir, "embeddings": layout.lancedb_uri}
    with duckdb.connect(str(manifest), read_only=True) as con:
        status = con.execute("SELECT status, count(*) FROM identities GROUP BY 1 ORDER BY 1").fetchall()
        images = con.execute(
            "SELECT kind, count(*), count(*) FILTER (face_detected), avg(similarity_to_document) "
            "FROM images GROUP BY 1 ORDER BY 1"
        ).fetchall()
    print("\nidentities by status: " + ", ".join(f"{s} {n}" for s, n in status))
    for kind, n, detected, sim in images:
        extra = f", mean similarity to document {sim:.3f}" if sim is not None else ""
        print(f"{kind} images: {n}, face detected in {detected}{extra}")
    print(
        f"\noutputs:\n  manifest   {where['manifest']}\n  images     {where['images']}/<batch>/"
        f"{{documents,live,aligned_*}}\n  embeddings {where['embeddings']}\n"
        "\nnext:\n  make ui                      # Dagster UI on http://127.0.0.1:3000 with these runs\n"
        "  .venv/bin/synid query \"SELECT * FROM identities LIMIT 5\""
    )


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="materialize every asset on the embedded defaults")
    demo.add_argument("--identities", type=int, default=32)
    demo.add_argument("--live", type=int, default=2, help="live images per accepted identity (0 allowed)")
    demo.add_argument("--attributes", default=None, help=f"attribute spec dir (default {default_attributes_dir()})")
    demo.add_argument("--seed", type=int, default=None, help="dataset seed (default: the profile's)")
    demo.add_argument("--profile", default=None, help="resource profile name or YAML path (default local)")
    demo.set_defaults(
        handler=lambda args: run_demo(args.identities, args.live, args.attributes, args.seed, args.profile)
    )
