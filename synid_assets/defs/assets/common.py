"""What every asset module shares: the asset group, the eager condition, clean failures on bad input, and the
dataset files a step reads and writes when SYNID_HOME is an s3:// URL."""

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from synid_assets.core.batch.common import MissingStepError

GROUP = "synid"
EAGER = dg.AutomationCondition.eager()


@contextlib.contextmanager
def clear_errors() -> Iterator[None]:
    """Turn the domain's input errors into a Dagster failure with the message alone (no traceback noise)."""
    from synid_assets.core.analysis.images import ImageReadError
    from synid_assets.core.dataset.layout import DiskFullError
    from synid_assets.core.dataset.manifest import ManifestError
    from synid_assets.core.errors import BackendError
    from synid_assets.core.spec.model import AttributeSpecError

    try:
        yield
    except (AttributeSpecError, MissingStepError, BackendError, ImageReadError, ManifestError, DiskFullError) as exc:
        # Bad input (or a full disk) does not heal by retrying: fail once, with the message alone.
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def batch_files(batch_id: str) -> str:
    """Everything of one batch: its tables, records and images."""
    return f"batches/{batch_id}"


def batch_records(batch_id: str) -> list[str]:
    """One batch's tables and JSON records, without its images."""
    return [f"batches/{batch_id}/*.parquet", f"batches/{batch_id}/*.json"]


# What the order-stable filter reads of every earlier batch: which were sampled, decided, and the running state.
FILTER_STATE = ["batches/*/identities.parquet", "batches/*/filter_decisions.parquet", "batches/*/filter_state.json"]
ALL_BATCH_RECORDS = ["batches/*/*.parquet", "batches/*/*.json"]


@contextlib.contextmanager
def synced_home(dataset: Any, pull: Sequence[str] = (), push: Sequence[str] = ()) -> Iterator[Any]:
    """The dataset layout a step body works in.

    A local SYNID_HOME is used as it is (nothing more happens). With an s3:// home the layout is the local
    mirror: the step pulls the store's current copy of `pull` first, and pushes the files it wrote under `push`
    afterwards, each file as one object. After a failure what was written is pushed too (as on a local disk),
    so a rerun on another machine resumes from it. A store that cannot be reached fails the step with one line
    (retryable); a missing bucket or bad credentials fail it without retries.
    """
    remote = dataset.remote()
    layout = dataset.layout()
    if remote is None:
        yield layout
        return
    from synid_assets.core.dataset.remote_home import RemoteHomeError

    with _remote_errors():
        remote.pull(*pull)
    try:
        yield layout
    except Exception as exc:
        with contextlib.suppress(RemoteHomeError):
            remote.push(*push)
        lancedb_error = remote.lancedb_error(exc)  # LanceDB opens its tables on the store itself
        if lancedb_error is not None:
            raise dg.Failure(description=str(lancedb_error), allow_retries=True) from None
        raise
    with _remote_errors():
        remote.push(*push)


@contextlib.contextmanager
def _remote_errors() -> Iterator[None]:
    from synid_assets.core.dataset.remote_home import RemoteHomeError

    try:
        yield
    except RemoteHomeError as exc:
        raise dg.Failure(description=str(exc), allow_retries=exc.retryable) from None
