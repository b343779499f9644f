"""A dataset on disk: layout and atomic writes, seeds, the LanceDB embedding store, table schemas, the manifest."""
