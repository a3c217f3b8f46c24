"""Ranking: a user and up to ``max_items`` candidate items → the items ranked by a model.

* ``keys.py``: the online feature store's Redis key layout (read and written here only).
* ``features.py``: one Redis round trip for a request's user and items.
* ``rows.py``: the fetched features and the request's context → the ``[n_items, F]`` rows.
* ``request.py``: the typed rank request, validated against the manifest.
* ``ranker.py``: fetch → assemble → one tensor call → order.
* ``load.py``: ``modelgate features load|get`` (CSV → the store, atomically).
"""
