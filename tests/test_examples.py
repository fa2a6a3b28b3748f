"""The examples run as shipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_simulated_day_example_fires_every_slot_once():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "simulated_day.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # 288 five-minute slots + 24 hourly + 960 ninety-second slots in one day
    assert "1272 fires in one simulated day; delivered twice: 0" in out
