"""The examples run as shipped."""

from __future__ import annotations

import os
import re
import shutil
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


def run_media_chain(path_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "media_chain.py"), "the index refresh"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "PATH": path_env},
    )


def report_seconds(stdout: str) -> float:
    found = re.search(r"^report : \S+\.wav: (\d+\.\d\d) s, (\d+) Hz", stdout, re.MULTILINE)
    assert found, stdout
    return float(found.group(1))


def test_media_chain_without_a_speech_converter_uses_the_labelled_stand_in(tmp_path):
    # An empty folder as PATH: no espeak-ng or espeak, whatever this machine has installed.
    proc = run_media_chain(str(tmp_path))
    assert "neither espeak-ng nor espeak is on PATH" in proc.stderr
    assert "status : COMPLETED" in proc.stdout
    assert "from stand-in: one tone per character" in proc.stdout
    text = re.search(r"^text   : (.*)$", proc.stdout, re.MULTILINE).group(1)
    assert "the index refresh" in text
    # The report read the WAV the step before wrote: 0.08 s per character of the text.
    assert report_seconds(proc.stdout) == round(len(text) * 0.08, 2)


def test_media_chain_runs_as_shipped():
    proc = run_media_chain(os.environ.get("PATH", ""))
    assert "status : COMPLETED" in proc.stdout
    assert report_seconds(proc.stdout) > 0
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        assert "from stand-in" in proc.stdout
    else:
        assert f"from {os.path.basename(exe)}" in proc.stdout
        assert "stand-in" not in proc.stderr
