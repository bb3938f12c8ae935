"""Download the TinyStoriesV2-GPT4 text files with resume, size check and an atomic final rename.

Standard library only (``urllib``). Bytes go to ``<name>.part``; an interrupted transfer keeps it and the
next call continues with an HTTP ``Range`` request. The file appears under its final name only once its
size matches the server's (``Content-Length`` / ``Content-Range`` total).
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from cs336_basics.data.chunking import byte_bar, cannot_write
from cs336_basics.errors import UserError

DEFAULT_BASE_URL = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main"
BASE_URL_ENV = "CS336_TINYSTORIES_URL"
TINYSTORIES_FILES = {"train": "TinyStoriesV2-GPT4-train.txt", "valid": "TinyStoriesV2-GPT4-valid.txt"}
BLOCK_BYTES = 1 << 20
TIMEOUT_S = 60.0
RETRY_DELAY_S = 1.0


def part_path(dest: str | os.PathLike) -> Path:
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def _by_hand(url: str, dest: Path) -> str:
    return f"fetch {url} by hand (e.g. `curl -L -o {dest} {url}`) and put it at {dest}"


def _content_range_total(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000)."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _fetch_once(url: str, dest: Path, *, progress: bool, timeout: float) -> int | None:
    """One HTTP request that appends to ``dest.part``. Returns the expected total size (None if unknown)."""
    part = part_path(dest)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "cs336-data/1.0"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            _, total = _content_range_total(err.headers.get("Content-Range"))
            err.close()
            if total == have:
                return total
            part.unlink()  # the partial file does not fit the remote one: start over next time
            raise ConnectionError(f"server rejected resume at byte {have}; restarting") from None
        raise
    with response:
        if response.status == 206:
            start, total = _content_range_total(response.headers.get("Content-Range"))
            if start != have:
                raise ConnectionError(f"server resumed at byte {start}, not {have}")
            mode = "ab"
        else:  # 200: the server ignored Range, so start over
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            have, mode = 0, "wb"
        with open(part, mode) as f, byte_bar(dest.name, total, progress, initial=have) as bar:
            while block := response.read(BLOCK_BYTES):
                f.write(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
    return total


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    progress: bool = True,
    retries: int = 3,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already exists; resume a ``dest.part`` left behind.

    A dropped connection is retried ``retries`` times, each time resuming where it stopped. Raises
    ``UserError`` (one line, saying how to fetch the file by hand) when it cannot finish.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise cannot_write(f"create {dest.parent}", err) from None
    part = part_path(dest)
    for attempt in range(retries + 1):
        try:
            total = _fetch_once(url, dest, progress=progress, timeout=timeout)
        except urllib.error.HTTPError as err:
            raise UserError(
                f"cannot download {url} (HTTP {err.code} {err.reason}); {_by_hand(url, dest)}"
            ) from None
        except urllib.error.URLError as err:
            raise UserError(f"cannot download {url} ({err.reason}); {_by_hand(url, dest)}") from None
        except PermissionError as err:
            raise cannot_write(f"write {part}", err) from None
        except (OSError, HTTPException) as err:  # dropped connection, timeout, reset, bad resume
            reason = f"{type(err).__name__}: {err}"
        else:
            have = part.stat().st_size if part.exists() else 0
            if total is None or have == total:
                os.replace(part, dest)
                return dest
            if have > total:
                part.unlink()
                reason = f"got {have} bytes, more than the {total} announced; discarded the partial file"
            else:
                reason = f"connection closed after {have} of {total} bytes"
        if attempt < retries:
            time.sleep(min(RETRY_DELAY_S * 2**attempt, 30.0))
    have = part.stat().st_size if part.exists() else 0
    raise UserError(
        f"download of {url} interrupted ({reason}); re-run the same command to resume from byte {have} "
        f"(kept in {part}), or {_by_hand(url, dest)}"
    )


def download_tinystories(
    data_dir: str | os.PathLike = "data",
    *,
    base_url: str | None = None,
    splits: tuple[str, ...] = ("train", "valid"),
    progress: bool = True,
) -> dict[str, Path]:
    """Fetch the TinyStoriesV2-GPT4 train/valid text into ``data_dir/tinystories/``; return split -> path.

    The files are under ``base_url`` if given, else ``$CS336_TINYSTORIES_URL``, else Hugging Face's dataset.
    """
    base = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    out = Path(data_dir) / "tinystories"
    return {
        split: download_file(
            f"{base}/{TINYSTORIES_FILES[split]}", out / TINYSTORIES_FILES[split], progress=progress
        )
        for split in splits
    }
