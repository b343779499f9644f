"""Identity filtering: similarity helpers, the incremental filter, the scale filter and the leakage check."""
