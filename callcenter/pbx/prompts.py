"""Regenerate the Indonesian voice prompts in ``sounds/`` from ``sounds/prompts.toml``.

The WAVs are committed (the PBX harness and production only copy them); this exists so that a
changed wording is one edit in the TOML plus ``python -m callcenter.pbx.prompts``, with the same
voice and format every time: espeak-ng's Indonesian voice, then sox to 8 kHz mono 16-bit PCM,
the native format of Asterisk's ``format_wav`` (no transcoding at play time).

``prompts.toml`` maps a prompt name (file name without ``.wav``) to its text, either a plain
string or a table ``{ text = "...", min_seconds = 3.0 }`` where ``min_seconds`` pads the prompt
with trailing silence up to that length (the anti-hoax reminder must last a few seconds so that
the AGI app can count on it covering the time it needs).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
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


def load_prompts(text_file: Path) -> list[Prompt]:
    data = tomllib.loads(text_file.read_text(encoding="utf-8"))
    prompts: list[Prompt] = []
    for name, value in data.items():
        if isinstance(value, str):
            prompts.append(Prompt(name, value))
        elif isinstance(value, dict) and isinstance(value.get("text"), str):
            prompts.append(Prompt(name, value["text"], float(value.get("min_seconds", 0.0))))
        else:
            raise PromptError(f"{text_file}: entry {name!r} must be a string or a table with 'text'")
    return prompts


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


def build_prompts(text_file: Path, out_dir: Path) -> list[Path]:
    """Generate every prompt listed in ``text_file`` into ``out_dir``; return the WAV paths."""
    return [build_prompt(p, out_dir) for p in load_prompts(text_file)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(__file__).resolve().parents[2]
    text_file = Path(args[0]) if args else root / "sounds" / "prompts.toml"
    out_dir = Path(args[1]) if len(args) > 1 else text_file.parent
    for path in build_prompts(text_file, out_dir):
        print(f"{path}  {wav_seconds(path):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
