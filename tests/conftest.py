"""Suite-wide settings."""

import os

from hypothesis import settings

# CI runs the property tests on a fixed sequence of examples, so a submission lands or fails on its own code,
# not on which random examples a run happened to draw; local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
