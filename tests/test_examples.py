"""The examples run as shipped."""

from __future__ import annotations

import json
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


def test_agent_schedules_example_creates_lists_triggers_and_fires():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "agent_schedules.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    calls = re.findall(r"^tool  (\w+)\((.*)\)$", out, re.MULTILINE)
    assert [name for name, _ in calls] == ["create_schedule", "list_schedules", "trigger_schedule"]
    created = json.loads(calls[0][1])
    assert (created["cron"], created["timezone"], created["endpoint"]) == (
        "0 9 * * 1-5",
        "Europe/Berlin",
        "/agents/reminder/runs",
    )
    assert created["payload"]["message"]
    assert '"error"' not in out
    message = json.dumps(created["payload"]["message"])[1:-1]
    received = re.findall(r"^agent received .(.*). at (\S+)$", out, re.MULTILINE)
    # the trigger at once, then the first weekday 9:00 in Berlin (Friday)
    assert received == [
        (message, "2026-05-28T22:26:40+02:00"),
        (message, "2026-05-29T09:00:00+02:00"),
    ]
    assert "runs  manual:success, schedule:success" in out
    assert "next  2026-06-01T07:00:00Z" in out  # Monday 9:00 in Berlin: the weekend is skipped
    assert "bob   404" in out  # another user cannot see ann's schedule
