"""Shared test setup: the tests directory is importable (support.py), TensorFlow stays quiet."""

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# The CLI caches per-file facts; keep the tests' cache out of the user's home.
os.environ["BNAUDIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="bnaudit-test-cache-")
