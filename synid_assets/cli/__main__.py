"""`python -m synid_assets.cli`."""

import sys

from synid_assets.cli import main

sys.exit(main())
