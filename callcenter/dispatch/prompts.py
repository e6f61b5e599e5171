"""The spoken briefing an agency's duty officer hears, in Indonesian, and its WAV cache.

Text-to-speech (espeak-ng ``-v id`` + sox to 8 kHz mono, the same pipeline as the committed prompts)
takes a few hundred milliseconds of CPU in a subprocess, so it runs in a worker thread, never on the
event loop, and starts as soon as a dispatch does: by the time the officer picks up the briefing is
ready. Files are named by the SHA-1 of their text, so the same incident briefed to three agencies,
or briefed again after a retry, is generated once; a change in any field gives a new file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import structlog

from callcenter.dispatch.speech import Prompt, build_prompt
from callcenter.forms.categories import CATEGORIES, PRIORITIES
from callcenter.store.models import Incident

log = structlog.get_logger("callcenter.dispatch.prompts")

INTRO = "Pusat Panggilan Darurat satu satu dua. Ada penugasan darurat untuk instansi Anda."
MENU = "Tekan satu untuk menerima penugasan ini. Tekan dua untuk mengulang."
THANKS = "Terima kasih. Penugasan diterima dan dicatat. Mohon segera menuju lokasi."
#: Said when the briefing text could not be generated: the officer still accepts, and reads the rest
#: on the agency console.
GENERIC = "Rincian kejadian dapat dilihat pada layar petugas."

_CATEGORY = {c.code: c.label_id for c in CATEGORIES}
_PRIORITY = {p.code: p.label_id for p in PRIORITIES}


def spell_digits(value: str) -> str:
    """``0812-345`` → ``0 8 1 2, 3 4 5``: espeak reads a bare number as one big number otherwise."""
    groups = ["".join(ch for ch in part if ch.isdigit()) for part in value.replace("+", " ").split("-")]
    return ", ".join(" ".join(g) for g in groups if g)


def _clean(text: str) -> str:
    # Free text typed by a call-taker: one line, and never something espeak could take for an option.
    return " ".join(text.split()).lstrip("-")


def briefing_text(incident: Incident) -> str:
    """Category, priority, location, victims, access route, callback number and reference, in that order.

    The order is what the officer needs first: what and where before who called.
    """
    parts = [INTRO, f"Kejadian: {_CATEGORY.get(incident.category, incident.category)}."]
    parts.append(f"Prioritas: {_PRIORITY.get(incident.priority, incident.priority)}.")
    place = [_clean(incident.address)]
    if incident.subdistrict:
        place.append(f"desa {_clean(incident.subdistrict)}")
    if incident.district:
        place.append(f"kecamatan {_clean(incident.district)}")
    parts.append("Lokasi: " + ", ".join(p for p in place if p) + ".")
    if incident.landmark.strip():
        parts.append(f"Patokan: {_clean(incident.landmark)}.")
    if incident.victims_count:
        victims = f"Korban: {incident.victims_count} orang"
        if incident.victims_condition.strip():
            victims += f", {_clean(incident.victims_condition)}"
        parts.append(victims + ".")
    else:
        parts.append("Korban: belum ada laporan korban.")
    if incident.access_route.strip():
        parts.append(f"Akses: {_clean(incident.access_route)}.")
    parts.append(f"Nomor pelapor: {spell_digits(incident.callback_number)}.")
    parts.append(f"Nomor kejadian: {spell_digits(incident.reference)}.")
    return " ".join(parts)


@dataclass(frozen=True)
class PromptFile:
    """A generated prompt: where we wrote it, and the name Asterisk's STREAM FILE wants (no extension)."""

    host_path: Path
    asterisk_name: str


class PromptCache:
    """WAVs keyed by text hash in ``directory``; ``asterisk_directory`` is the same place as Asterisk sees it."""

    def __init__(self, directory: Path, asterisk_directory: str = "") -> None:
        self.directory = directory
        self.asterisk_directory = PurePosixPath(asterisk_directory or str(directory.resolve()))
        self._inflight: dict[str, asyncio.Future[PromptFile]] = {}

    @staticmethod
    def name_for(text: str) -> str:
        return "brief-" + hashlib.sha1(text.encode("utf-8")).hexdigest()

    def _file(self, name: str) -> PromptFile:
        return PromptFile(self.directory / f"{name}.wav", str(self.asterisk_directory / name))

    async def ensure(self, text: str) -> PromptFile:
        """The prompt for ``text``, generated once (concurrent requests share one generation).

        Raises PromptError / OSError / CalledProcessError when generation fails; the caller decides
        what the officer hears instead.
        """
        name = self.name_for(text)
        found = self._file(name)
        if found.host_path.exists():
            # Reused: retention deletes prompts unused for [retention] prompts_hours, not this one.
            with contextlib.suppress(OSError):
                found.host_path.touch()
            return found
        pending = self._inflight.get(name)
        if pending is None:
            pending = asyncio.ensure_future(self._generate(name, text))
            self._inflight[name] = pending
            pending.add_done_callback(lambda _f: self._inflight.pop(name, None))
        # shield: one waiter giving up (a hung-up officer) must not cancel the others' generation.
        return await asyncio.shield(pending)

    async def _generate(self, name: str, text: str) -> PromptFile:
        started = asyncio.get_running_loop().time()
        await asyncio.to_thread(build_prompt, Prompt(name, text), self.directory)
        log.info("dispatch.prompt_generated", name=name, seconds=round(asyncio.get_running_loop().time() - started, 3))
        return self._file(name)


__all__ = ["GENERIC", "INTRO", "MENU", "THANKS", "PromptCache", "PromptFile", "briefing_text", "spell_digits"]
