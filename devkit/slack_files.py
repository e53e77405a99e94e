"""Slack's file upload flow for the Slack double, as strict as Slack is.

`files.getUploadURLExternal` (filename, length) answers an upload URL and a file ID; the
bytes are POSTed to that URL (raw or multipart, as Slack takes them) before it expires,
exactly `length` of them; `files.completeUploadExternal` (files=[{id, title}], channel_id,
thread_ts) shares each uploaded file once, as a message in the channel or the thread.
An unknown, expired, never uploaded or already completed file is `file_not_found`.
"""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

MIMETYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}
UPLOAD_TTL = 600.0  # seconds an upload URL takes bytes; the double's tests shorten it
UPLOAD_LIMIT = 1024 * 1024 * 1024  # Slack takes files up to 1 GB


@dataclass
class UploadedFile:
    """One file, from its upload URL to its share."""

    id: str
    name: str
    length: int
    token: str
    expires: float
    data: bytes | None = None
    title: str = ""
    channel: str = ""
    thread_ts: str = ""
    ts: str = ""  # the message that shares it
    shared: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mimetype(self) -> str:
        head = (self.data or b"")[:8]
        return next((m for magic, m in MIMETYPES.items() if head.startswith(magic)), "")


class FileError(Exception):
    """An API error for the double to answer (ok=false) or an upload URL's HTTP refusal."""

    def __init__(self, error: str, status: int = 200):
        super().__init__(error)
        self.error, self.status = error, status


class FileStore:
    """The double's files: pending uploads and shared files. The caller holds its lock."""

    def __init__(self) -> None:
        self.ttl = UPLOAD_TTL
        self.limit = UPLOAD_LIMIT
        self.reset()

    def reset(self) -> None:
        self.files: dict[str, UploadedFile] = {}
        self._ids = itertools.count(1)

    def get_url(self, params: dict[str, Any], base_url: str) -> dict[str, Any]:
        """Answer files.getUploadURLExternal."""
        name = str(params.get("filename") or "")
        try:
            length = int(params.get("length") or 0)
        except (TypeError, ValueError):
            raise FileError("invalid_arguments") from None
        if not name:
            raise FileError("invalid_arguments")
        if length <= 0:
            raise FileError("missing_argument")  # Slack: typically a length of 0
        if length > self.limit:
            raise FileError("file_upload_size_restricted")
        file_id = f"F{next(self._ids):010d}"
        token = secrets.token_urlsafe(12)
        self.files[file_id] = UploadedFile(file_id, name, length, token, time.time() + self.ttl)
        return {"upload_url": f"{base_url}upload/{file_id}/{token}", "file_id": file_id}

    def receive(self, path: str, body: bytes, form_file: bytes | None) -> None:
        """Take the bytes POSTed to an upload URL; raise FileError (an HTTP status) if not."""
        parts = path.strip("/").split("/")
        file = self.files.get(parts[1]) if len(parts) == 3 else None
        if file is None or not secrets.compare_digest(file.token, parts[2]):
            raise FileError("not_found", 404)
        if file.data is not None or file.shared:
            raise FileError("already_uploaded", 400)
        if time.time() > file.expires:
            raise FileError("upload_url_expired", 410)
        data = form_file if form_file is not None else body
        if len(data) != file.length:
            raise FileError(f"length_mismatch: expected {file.length}, got {len(data)}", 400)
        file.data = data

    def complete(self, params: dict[str, Any]) -> list[UploadedFile]:
        """Check files.completeUploadExternal's files; return them, to be shared."""
        files = params.get("files")
        if not isinstance(files, list) or not files:
            raise FileError("invalid_arguments")
        found = []
        for entry in files:
            if not isinstance(entry, dict):
                raise FileError("invalid_arguments")
            file = self.files.get(str(entry.get("id") or ""))
            expired = file is not None and file.data is None and time.time() > file.expires
            if file is None or file.shared or file.data is None or expired:
                raise FileError("file_not_found")
            found.append((file, str(entry.get("title") or file.name)))
        for file, title in found:
            file.title = title
        return [file for file, _ in found]

    def shared(self) -> list[UploadedFile]:
        """Return the files shared, in order."""
        return [f for f in self.files.values() if f.shared]

    def listed(self, file: UploadedFile, base_url: str) -> dict[str, Any]:
        """Return the file object Slack puts in the message that shares it."""
        return {
            "id": file.id,
            "name": file.name,
            "title": file.title,
            "mimetype": file.mimetype,
            "filetype": file.mimetype.rsplit("/", 1)[-1] if file.mimetype else "binary",
            "size": file.length,
            "url_private": f"{base_url}files/{file.id}/{file.name}",
        }
