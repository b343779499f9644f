"""The steps of one identity batch as plain functions over a dataset layout (no Dagster here).

One module per domain (spec, generation, embeddings, filter, dataset, report), each called by the
same-named module of synid_assets/defs/assets/; common.py holds what they share.
"""
