"""Test fixtures for suites that use neon_notebook: a pytest plugin, loaded automatically.

Installing the package registers ``neon_notebook.testing.plugin`` with pytest
(entry point ``pytest11``, name ``neon_notebook``): any test may ask for
``neon_session``, ``neon_compute``, ``neon_direct_url``... (see the plugin's
docstring). ``pytest -p no:neon_notebook`` turns it off.
"""
