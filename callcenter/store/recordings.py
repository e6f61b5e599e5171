"""Where a call's recording may be: inside the record directory, a ``.wav`` MixMonitor wrote.

The path a call row holds came over FastAGI from the dialplan's hangup handler (``MIXMONITOR_FILENAME``).
It is checked three times, by the same rules: when the ``hangup`` route stores it (anything else is not
stored), when a supervisor plays it, and right before retention deletes it — a row that a bug, a forged
session or a restored backup left pointing elsewhere must never make us serve or delete another file.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

#: The only kind of file a recording is (``MixMonitor(${CC_RECORD_DIR}/${UNIQUEID}.wav)``).
RECORDING_SUFFIX = ".wav"
#: ``calls.recording`` is ``String(255)``.
RECORDING_MAX = 255


def recording_in_dir(recording: str | None, record_dir: str) -> PurePosixPath | None:
    """``recording`` as a normalised absolute path strictly inside ``record_dir`` (both as Asterisk sees
    them), or None: relative, ``..``, NUL, another directory, not a ``.wav`` or too long. Lexical only."""
    if not recording or not record_dir or "\x00" in recording or len(recording) > RECORDING_MAX:
        return None
    path = PurePosixPath(recording)
    base = PurePosixPath(record_dir)
    if not path.is_absolute() or not base.is_absolute() or ".." in path.parts:
        return None
    normalized = PurePosixPath(os.path.normpath(str(path)))
    if not normalized.is_relative_to(base) or normalized == base or normalized.suffix.lower() != RECORDING_SUFFIX:
        return None
    return normalized


def recording_host_path(recording: str | None, record_dir: str, root: str) -> Path | None:
    """The file on this host (``root`` prefixes a chroot's view) if ``recording`` is inside the record
    directory both lexically and once symlinks are resolved; None otherwise. Need not exist."""
    inside = recording_in_dir(recording, record_dir)
    if inside is None:
        return None
    real_base = Path(root + record_dir.rstrip("/")).resolve()
    real = Path(root + str(inside)).resolve()
    if not real.is_relative_to(real_base) or real == real_base:
        return None
    return real


def recording_file(recording: str | None, record_dir: str, root: str) -> Path | None:
    """An existing recording file inside the record directory (see ``recording_host_path``), or None."""
    path = recording_host_path(recording, record_dir, root)
    return path if path is not None and path.is_file() else None


__all__ = ["RECORDING_SUFFIX", "recording_file", "recording_host_path", "recording_in_dir"]
