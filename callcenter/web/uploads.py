"""Photos and small text parts from multipart forms: agency officers' updates and citizens' reports.

A photo is checked by its first bytes (not by the name or the type the browser claims), streamed to
a temporary file with its size checked as it arrives (a 2 GB upload is refused after the limit, not
after it filled the disk), and renamed to a random final name only once complete. It is served back
with a fixed type, ``nosniff`` and a sandboxing CSP, so a crafted file can never run as a page.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from aiohttp import BodyPartReader, web

from callcenter.web.access import Reply, error

_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"))
#: Content types of the photo kinds a stored name ends with.
PHOTO_TYPES = {"jpg": "image/jpeg", "png": "image/png"}


def photo_kind(head: bytes) -> str | None:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


async def read_text(part: BodyPartReader, limit: int) -> str:
    """A text part of at most ``limit`` bytes of UTF-8 (413 or 422 naming the part otherwise)."""
    data = bytearray()
    while chunk := await part.read_chunk(4096):
        data += chunk
        if len(data) > limit:
            raise Reply(error(413, f"{part.name} too long"))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        name = str(part.name)
        raise Reply(
            error(422, "invalid input", fields={name: "Bukan teks UTF-8."}, fields_en={name: "Not UTF-8 text."})
        ) from None


async def save_photo(part: BodyPartReader, directory: Path, prefix: str, limit: int) -> str | None:
    """Stream a JPEG/PNG photo into ``directory`` as ``{prefix}-{random}.{jpg|png}``; its name, or None
    for an empty file part (no photo chosen). 415 for anything else, 413 past ``limit`` bytes."""
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - one stat call, not worth a thread
    temp = directory / f".upload-{secrets.token_hex(16)}"
    size = 0
    kind: str | None = None
    head = b""
    try:
        with temp.open("xb") as out:
            while chunk := await part.read_chunk(64 * 1024):
                if kind is None:
                    head += chunk
                    if len(head) < 8 and not head.startswith(b"\xff\xd8\xff"):
                        continue
                    kind = photo_kind(head)
                    if kind is None:
                        raise Reply(error(415, "photo must be a JPEG or PNG image"))
                    chunk, head = head, b""
                size += len(chunk)
                if size > limit:
                    raise Reply(error(413, f"photo larger than {limit} bytes"))
                out.write(chunk)
        if kind is None:
            if head:  # a few bytes that are no image header
                raise Reply(error(415, "photo must be a JPEG or PNG image"))
            temp.unlink()
            return None
        name = f"{prefix}-{secrets.token_hex(16)}.{kind}"
        os.replace(temp, directory / name)
        return name
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise


def photo_response(directory: Path, name: str, kind: str) -> web.StreamResponse:
    """A stored photo (``name`` already matched against its pattern), or 404 when the file is gone."""
    path = (directory / name).resolve()
    if path.parent != directory.resolve() or not path.is_file():
        return error(404, "no such photo")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": PHOTO_TYPES[kind],
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, max-age=3600",
            "Content-Disposition": "inline",
        },
    )


__all__ = ["PHOTO_TYPES", "photo_kind", "photo_response", "read_text", "save_photo"]
