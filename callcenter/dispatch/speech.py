"""Text to speech for the PBX: espeak-ng's Indonesian voice, then sox to 8 kHz mono 16-bit PCM.

That is the native format of Asterisk's ``format_wav`` (no transcoding at play time). One pipeline for
the committed voice prompts (``python -m callcenter.pbx.prompts``) and the briefings generated per
dispatch (``dispatch/prompts.py``), so both sound the same.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

VOICE = "id"
#: Slightly slower than espeak's default 175 wpm: callers are stressed, lines are noisy.
SPEED_WPM = 165
RATE = 8000


class PromptError(RuntimeError):
    """A prompt could not be generated (missing tool, bad TOML entry)."""


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    min_seconds: float = 0.0


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / float(w.getframerate())


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise PromptError(f"{name} is not installed (apt-get install espeak-ng sox)")
    return found


def build_prompt(prompt: Prompt, out_dir: Path) -> Path:
    espeak, sox = _tool("espeak-ng"), _tool("sox")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{prompt.name}.wav"
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(
            [espeak, "-v", VOICE, "-s", str(SPEED_WPM), "-w", str(raw), prompt.text],
            check=True,
            capture_output=True,
        )
        converted = Path(tmp) / "out.wav"
        effects = ["rate", str(RATE), "norm", "-3"]
        subprocess.run(
            [sox, str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(converted), *effects],
            check=True,
            capture_output=True,
        )
        missing = prompt.min_seconds - wav_seconds(converted)
        if missing > 0:
            padded = Path(tmp) / "padded.wav"
            subprocess.run([sox, str(converted), str(padded), "pad", "0", f"{missing:.3f}"], check=True)
            converted = padded
        # Replace atomically: a running PBX copying sounds/ never sees a half-written file.
        staging = target.with_suffix(".wav.tmp")
        shutil.copyfile(converted, staging)
        staging.replace(target)
    return target
