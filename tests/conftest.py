import os
import sys
from pathlib import Path

from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

# CI gates a change: the same commit must get the same verdict on every run, so there Hypothesis
# draws the same examples each time (derandomize). Elsewhere each run explores new ones, and a
# failure it finds is saved in .hypothesis/ and tried first on the next run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
