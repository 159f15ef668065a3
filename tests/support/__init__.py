"""Helpers that several test modules share (test modules never import one another):
`delivery` for the sending tests, `web` for the preference-centre tests, `browser` for what the
browser tests measure. Fixtures stay in `tests/conftest.py`."""
