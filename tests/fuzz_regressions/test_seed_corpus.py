"""Every committed seed passes its target's properties: keeps the fuzz harness
(fuzz/properties.py, fuzz/session_driver.py) working in the normal suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from properties import TARGETS

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"
SEEDS = sorted(path for path in CORPUS.glob("*/*") if path.is_file())


def test_every_target_has_seeds() -> None:
    assert {path.parent.name for path in SEEDS} == set(TARGETS)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_seed_passes_its_properties(seed: Path) -> None:
    TARGETS[seed.parent.name](seed.read_bytes())
