"""The dataset home a command works in: a local SYNID_HOME as it is, or the local mirror of an s3:// home."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from synid_assets.core.dataset.layout import DatasetLayout, default_home, is_remote_home

# What readers of a finished dataset need from the store: the databases and every batch's files.
DATABASES = ("manifest.duckdb", "quality.duckdb", "evaluation.duckdb", "exports.duckdb")


@contextmanager
def dataset_home(command: str, home: str | Path | None, pull: Sequence[str], push: Sequence[str] = ()
                 ) -> Iterator[DatasetLayout]:
    """The layout of `home` (default $SYNID_HOME). With an s3:// home, `pull` is downloaded to the mirror
    first and `push` uploaded after the command succeeded, each file as one object. A store that cannot be
    used ends the command with one line naming the URL (exit 2), never the credentials."""
    home = default_home() if home is None else home
    if not is_remote_home(str(home)):
        yield DatasetLayout(home)
        return
    from synid_assets.core.dataset.remote_home import RemoteHome, RemoteHomeError

    try:
        remote = RemoteHome(str(home))
        remote.pull(*pull)
    except RemoteHomeError as exc:
        print(f"synid {command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    yield DatasetLayout(remote.local)
    try:
        remote.push(*push)
    except RemoteHomeError as exc:
        print(f"synid {command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
