"""What every asset module shares: the asset group, the eager condition, and clean failures on bad input."""

import contextlib
from collections.abc import Iterator

import dagster as dg

from synid_assets.core.batch.common import MissingStepError

GROUP = "synid"
EAGER = dg.AutomationCondition.eager()


@contextlib.contextmanager
def clear_errors() -> Iterator[None]:
    """Turn the domain's input errors into a Dagster failure with the message alone (no traceback noise)."""
    from synid_assets.core.analysis.images import ImageReadError
    from synid_assets.core.dataset.manifest import ManifestError
    from synid_assets.core.errors import BackendError
    from synid_assets.core.spec.model import AttributeSpecError

    try:
        yield
    except (AttributeSpecError, MissingStepError, BackendError, ImageReadError, ManifestError) as exc:
        # Bad input does not heal by retrying: fail once, with the message alone.
        raise dg.Failure(description=str(exc), allow_retries=False) from None
