"""A cross-modal chain on the workflow engine: text, then speech, then a report on the audio.

    python examples/media_chain.py ["topic"]

`compose` writes a sentence from the workflow input. `speak` turns it into WAV audio with
espeak-ng (or espeak) when one is on PATH and hands the bytes on as a `Media` item of MIME type
audio/wav, with the sentence as its content. `inspect_audio` gets that media from the step before
(`step_input.audio`) and reads it with the stdlib `wave` module: duration, sample rate, channels,
sample width, and the speaking rate against the sentence's word count.

Without a converter the example says so on stderr and `speak` writes a stand-in instead: one tone
per character (silence for a space) with the stdlib `wave` module. That is real WAV audio, with the
text's length and rhythm, but not speech; its media name and the step's `source` say so. The chain
runs end to end either way. Exit status 0 when the run COMPLETED, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import shutil
import sys
import tempfile
import wave
from array import array

from leasecron.kernel import Media, RunStatus, Step, StepInput, StepOutput, Workflow

WAV_TYPES = ("audio/wav", "audio/x-wav", "audio/wave")
STAND_IN = "stand-in: one tone per character, stdlib wave (not speech)"
STAND_IN_RATE = 22_050  # espeak-ng's own rate, so both paths report alike
TONE_SECONDS = 0.08


def converter() -> str | None:
    """The text-to-speech program on PATH, if any."""
    return shutil.which("espeak-ng") or shutil.which("espeak")


def compose(step_input: StepInput) -> str:
    topic = step_input.input or "the morning digest"
    return f"A lease, not a leader, decides which replica runs {topic}; every slot fires once."


async def speak(step_input: StepInput) -> StepOutput:
    text = str(step_input.previous_step_content)
    exe = converter()
    if exe is None:
        audio, name, source = tones(text), "stand-in-tones.wav", STAND_IN
    else:
        audio, name, source = await synthesize(exe, text), "speech.wav", os.path.basename(exe)
    return StepOutput(
        content=text,
        media=[Media.audio("audio/wav", content=audio, name=name)],
        metadata={"source": source},
    )


async def synthesize(exe: str, text: str) -> bytes:
    """Speech as WAV bytes. Written to a file with -w rather than read from --stdout: the header
    espeak-ng streams to stdout cannot know the length yet and claims about a billion frames."""
    with tempfile.TemporaryDirectory(prefix="media-chain-") as tmp:
        path = os.path.join(tmp, "speech.wav")
        proc = await asyncio.create_subprocess_exec(
            exe,
            "-w",
            path,
            "--stdin",  # the text on stdin: a sentence starting with "-" is no option
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate(text.encode())
        if proc.returncode != 0:
            detail = err.decode(errors="replace").strip()
            raise RuntimeError(f"{exe} exited with status {proc.returncode}: {detail}")
        with open(path, "rb") as f:
            return f.read()


def tones(text: str) -> bytes:
    """16-bit mono WAV: TONE_SECONDS per character, silence for whitespace, a pitch per letter."""
    per_char = int(STAND_IN_RATE * TONE_SECONDS)
    samples = array("h")
    for ch in text:
        if ch.isspace():
            samples.frombytes(bytes(2 * per_char))
            continue
        step = 2 * math.pi * 220.0 * 2 ** ((ord(ch.lower()) % 24) / 12) / STAND_IN_RATE
        samples.extend(int(12_000 * math.sin(step * i)) for i in range(per_char))
    if sys.byteorder == "big":  # WAV samples are little-endian
        samples.byteswap()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(STAND_IN_RATE)
        out.writeframes(samples.tobytes())
    return buf.getvalue()


def inspect_audio(step_input: StepInput) -> str | StepOutput:
    clips = [m for m in step_input.audio if m.mime_type in WAV_TYPES and m.content is not None]
    if not clips:
        got = ", ".join(f"{m.kind} {m.mime_type}" for m in step_input.media) or "no media"
        return StepOutput(success=False, error=f"no inline WAV audio from the step before ({got})")
    words = len(str(step_input.get_step_content("compose") or "").split())
    lines = []
    for clip in clips:
        with wave.open(io.BytesIO(clip.content)) as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            claimed = wav.getnframes()
            # Count the frames actually there: a header written before the length was known
            # (a stream) claims more than the file holds.
            frames = len(wav.readframes(claimed)) // (channels * width)
        seconds = frames / rate
        line = (
            f"{clip.name}: {seconds:.2f} s, {rate} Hz, {channels} channel(s), {8 * width}-bit, "
            f"{len(clip.content):,} bytes"
        )
        if seconds > 0 and words:
            line += f", {words / seconds:.1f} words/s"
        if claimed != frames:
            line += f" (header claimed {claimed:,} frames, file holds {frames:,})"
        lines.append(line)
    return "\n".join(lines)


async def main(topic: str | None) -> int:
    if converter() is None:
        print(
            "media_chain: neither espeak-ng nor espeak is on PATH, so the speech step uses a "
            f"{STAND_IN}. For real speech: apt-get install espeak-ng",
            file=sys.stderr,
        )
    wf = Workflow(
        id="media-chain",
        steps=[compose, Step("speak", executor=speak, timeout_seconds=60), inspect_audio],
    )
    out = await wf.arun(topic)
    text, speech = out.get_step_output("compose"), out.get_step_output("speak")
    if text is not None:
        print(f"text   : {text.content}")
    if speech is not None and speech.success:
        clip = speech.audio[0]
        print(
            f"audio  : {clip.name}, {clip.mime_type}, {len(clip.content or b''):,} bytes, "
            f"from {speech.metadata['source']}"
        )
    if out.status == RunStatus.COMPLETED:
        print(f"report : {out.content}")
    else:
        print(f"media_chain: run {out.status}: {out.error}", file=sys.stderr)
    print(f"status : {out.status}")
    return 0 if out.status == RunStatus.COMPLETED else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None)))
