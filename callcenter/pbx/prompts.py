"""Regenerate the Indonesian voice prompts in ``sounds/`` from ``sounds/prompts.toml``.

The WAVs are committed (the PBX harness and production only copy them); this exists so that a
changed wording is one edit in the TOML plus ``python -m callcenter.pbx.prompts``, with the same
voice and format every time: espeak-ng's Indonesian voice, then sox to 8 kHz mono 16-bit PCM,
the native format of Asterisk's ``format_wav`` (no transcoding at play time).

``prompts.toml`` maps a prompt name (file name without ``.wav``) to its text, either a plain
string or a table ``{ text = "...", min_seconds = 3.0 }`` where ``min_seconds`` pads the prompt
with trailing silence up to that length (the anti-hoax reminder must last a few seconds so that
the AGI app can count on it covering the time it needs). The pipeline itself is
``callcenter/dispatch/speech.py``, shared with the dispatch briefings.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from callcenter.dispatch.speech import Prompt, PromptError, build_prompt, wav_seconds


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
