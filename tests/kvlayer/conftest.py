"""Fixtures of the KV layer's tests: none of their own so far (each module opens its stores
with the settings of tests/support/settings.py); tmp_path is pytest's."""
