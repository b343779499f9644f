"""Identity filtering: similarity helpers (similarity.py), the strict and FMR rules both filters share (rules.py),
the incremental filter (incremental.py), the scale filter (scale.py, its pair search in pair_search.py) and the
leakage check (leakage.py)."""
