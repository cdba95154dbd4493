import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

# CI gates a change: the same commit must get the same verdict on every run, so there Hypothesis
# draws the same examples each time (derandomize). Elsewhere each run explores new ones, and a
# failure it finds is saved in .hypothesis/ and tried first on the next run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _dumps_outside_the_repository(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m emu run` writes crash dumps to dumps/ by default: in tests, to a temporary folder."""
    import emu.cli

    monkeypatch.setattr(emu.cli, "DEFAULT_DUMP_DIR", tmp_path_factory.mktemp("dumps"))


@pytest.fixture(autouse=True, scope="session")
def _no_dumps_left_in_the_repository() -> Iterator[None]:
    """A test that runs `python -m emu` in a subprocess must pass --no-dumps or a --dump-dir."""
    yield
    assert not (ROOT / "dumps").exists(), "a test wrote crash dumps into the repository's dumps/"
