"""Test-wide settings: float32 everywhere, CPU, deterministic."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
