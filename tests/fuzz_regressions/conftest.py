"""The fuzz targets' property checks (fuzz/properties.py) are plain Python: put
fuzz/ on the path so these tests replay reproducers through the same checks the
fuzzer ran, without atheris."""

from __future__ import annotations

import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ) not in sys.path:
    sys.path.insert(0, str(FUZZ))
