"""The disk a sweep will write, against the free space of each filesystem it writes to (the plan's check).

``data_needs`` is what preparing a config's data still writes; ``check_disk`` groups needs by filesystem.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cs336_basics.basics.config import ExperimentConfig

# Measured in TinyStoriesV2-GPT4 (Content-Length of the two files) and of our tokenizer: about 4 bytes of text
# per token, i.e. uint16 token files half the size of the text (the demo corpus gives the same ratio).
TINYSTORIES_TEXT_BYTES = 2_227_753_162 + 22_502_601
TOKEN_BYTES_PER_TEXT_BYTE = 0.5
DEMO_DATA_BYTES = 6_000_000  # text + tokens + tokenizer of the embedded demo corpus


@dataclass
class DiskNeed:
    what: str
    path: Path  # where it will be written
    bytes: int
    optional: bool = False  # only if bracketing adds points


@dataclass
class DiskCheck:
    """Free space on one filesystem against what will be written to it."""

    mount: Path  # the mount point of the filesystem the paths are on
    free: int
    needed: int  # by the points to run and the data
    optional: int = 0  # by the points bracketing may add

    @property
    def fits(self) -> bool:
        """Room for what the sweep will write for sure."""
        return self.needed <= self.free

    @property
    def ok(self) -> bool:
        """Room for that and for every point bracketing may add."""
        return self.needed + self.optional <= self.free


def nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    return path


def mount_point(path: Path) -> Path:
    """The top folder of the filesystem ``path`` (or its nearest existing parent) is on."""
    path = nearest_existing(path)
    dev = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == dev:
        path = path.parent
    return path


def data_needs(cfg: ExperimentConfig) -> list[DiskNeed]:
    """What preparing ``cfg``'s data will still write (nothing if its token files exist)."""
    if cfg.train_data and cfg.val_data and Path(cfg.train_data).exists() and Path(cfg.val_data).exists():
        return []
    from cs336_basics.data.prepare import DEFAULT_BPE, resolve_dataset

    spec = resolve_dataset(cfg.dataset)
    directory = spec.directory(cfg.data_dir)
    # where with_data_files puts the token files
    token_dir = spec.token_directory(cfg.data_dir, cfg.vocab_size, DEFAULT_BPE)
    tokens_ready = (token_dir / "train.npy").exists() and (token_dir / "valid.npy").exists()
    if spec.kind == "demo":
        need = DiskNeed("demo data (text, tokenizer, tokens)", directory, DEMO_DATA_BYTES)
        return [] if tokens_ready else [need]
    needs = []
    if spec.kind == "tinystories":
        text_bytes = TINYSTORIES_TEXT_BYTES
        if not (directory / "TinyStoriesV2-GPT4-train.txt").exists():
            needs.append(DiskNeed("TinyStories text (download)", directory, TINYSTORIES_TEXT_BYTES))
    else:
        assert spec.source is not None
        text_bytes = spec.source.stat().st_size
    if not tokens_ready:
        needs.append(DiskNeed("token files (uint16)", directory, int(text_bytes * TOKEN_BYTES_PER_TEXT_BYTE)))
    return needs


def check_disk(needs: list[DiskNeed]) -> list[DiskCheck]:
    """Group ``needs`` by filesystem (their mount point) and compare with its free space."""
    by_mount: dict[Path, DiskCheck] = {}
    for need in needs:
        mount = mount_point(need.path)
        if mount not in by_mount:
            by_mount[mount] = DiskCheck(mount, shutil.disk_usage(mount).free, 0)
        if need.optional:
            by_mount[mount].optional += need.bytes
        else:
            by_mount[mount].needed += need.bytes
    return list(by_mount.values())
