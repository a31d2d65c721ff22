"""Event files as the commands read them: JSON Lines, plain or gzip-compressed (told by the first bytes, whatever the
name), or ``-`` for stdin; a UTF-8 byte order mark before the first line is skipped."""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from driftwatch.errors import InputError

__all__ = ["EventFile"]

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


class EventFile:
    """An event file to read line by line: JSON Lines, plain or gzip-compressed (told by its first bytes, whatever
    its name), or ``-`` for stdin. A UTF-8 byte order mark before the first line is skipped."""

    def __init__(self, events: str) -> None:
        self.name = "stdin" if events == "-" else events
        self.size: int | None = None
        if events == "-":
            self.raw: BinaryIO = sys.stdin.buffer
        else:
            path = Path(events)
            try:
                self.raw = path.open("rb")
                if path.is_file():
                    self.size = path.stat().st_size
            except OSError as e:
                raise InputError(f"{path}: cannot open: {e.strerror}") from e
        peek = getattr(self.raw, "peek", None)
        head = peek(2)[:2] if peek is not None else b""
        self.gzip = gzip.GzipFile(fileobj=self.raw, mode="rb") if head == _GZIP_MAGIC else None
        self.reader: Iterable[bytes] = self.raw if self.gzip is None else self.gzip

    def position(self) -> int | None:
        """Bytes of the file read so far (compressed bytes for a compressed file); None when unknown."""
        try:
            return self.raw.tell()
        except OSError:
            return None

    def batches(self, size: int) -> Iterator[tuple[list[bytes], list[int]]]:
        """Non-blank lines in batches of ``size``, with each line's 1-based number in the file."""
        batch: list[bytes] = []
        numbers: list[int] = []
        try:
            for number, line in enumerate(self.reader, start=1):
                line = line.strip()
                if number == 1 and line.startswith(_BOM):
                    line = line[len(_BOM) :].strip()
                if not line:
                    continue
                batch.append(line)
                numbers.append(number)
                if len(batch) >= size:
                    yield batch, numbers
                    batch, numbers = [], []
        except EOFError as e:  # gzip: the compressed stream ends before its end marker
            raise InputError(f"{self.name}: the compressed file ends early (truncated?): {e}") from e
        except OSError as e:  # gzip: corrupt data; or a read error
            raise InputError(f"{self.name}: cannot read: {e}") from e
        if batch:
            yield batch, numbers

    def close(self) -> None:
        if self.gzip is not None:
            self.gzip.close()
        if self.raw is not sys.stdin.buffer:
            self.raw.close()

    def __enter__(self) -> EventFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
