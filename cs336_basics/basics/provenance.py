"""What a run needs to be reproduced and judged: code version, data identity, software, hardware, command.

Token files are identified by size + mtime + the sha256 of their ``.npy.json`` sidecar, and by the sha256 of
their ids that the sidecar records (``tokens_sha256``, checked against the ids when the run loaded them); the
tokenizer, a small file, by its full sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import torch

_PACKAGE_DIR = Path(__file__).resolve().parents[2]


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def file_identity(path: str | os.PathLike | None) -> dict | None:
    """Size, mtime and a content hash: the sidecar's for token files, the file's own for small files."""
    if path is None:
        return None
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    identity = {"path": str(path.resolve()), "bytes": stat.st_size}
    sidecar = path.with_name(path.name + ".json")
    if sidecar.exists():
        try:
            tokens_sha256 = json.loads(sidecar.read_bytes()).get("tokens_sha256")
        except (OSError, ValueError, AttributeError):
            tokens_sha256 = None
        identity |= {
            "mtime": stat.st_mtime,
            "sidecar_sha256": _sha256(sidecar),
            "tokens_sha256": tokens_sha256,
        }
        return identity
    return {**identity, "sha256": _sha256(path)}


def git_state(directory: Path = _PACKAGE_DIR) -> dict | None:
    """The checkout's commit and whether it has uncommitted changes (None outside a git checkout)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def _package_version() -> str | None:
    try:
        return metadata.version("cs336-basics")
    except metadata.PackageNotFoundError:
        return None


def provenance(device: torch.device, train_path=None, val_path=None, tokenizer_path=None) -> dict:
    """The provenance block of a run's config.json."""
    gpu = {}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = {"gpu_name": props.name, "gpu_uuid": f"GPU-{props.uuid}", "cuda": torch.version.cuda}
        try:
            import pynvml

            pynvml.nvmlInit()
            gpu["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:  # no NVML: the driver version is then unknown, nothing else depends on it
            gpu["driver"] = None
    return {
        "package_version": _package_version(),
        "git": git_state(),
        "train_data": file_identity(train_path),
        "val_data": file_identity(val_path),
        "tokenizer": file_identity(tokenizer_path),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        **gpu,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "hostname": socket.gethostname(),
        "command": [sys.executable, *sys.argv],
    }


def run_info(cfg, runtime, model, train, val, tokenizer_path, derived_fields=()) -> dict:
    """config.json: every setting of the resolved config (with the tokenizer actually used), the device and
    precision choices made and why, provenance, and the sizes of data and model."""
    train_path = cfg.train_data or getattr(train, "filename", None)  # a memmap knows its file
    val_path = cfg.val_data or getattr(val, "filename", None)
    return dict(
        replace(cfg, tokenizer_path=tokenizer_path).to_dict(),
        runtime=runtime.as_dict(),
        provenance=provenance(runtime.device, train_path, val_path, tokenizer_path),
        train_tokens=len(train),
        val_tokens=len(val),
        parameters=model.num_parameters(exclude_embeddings=False),
        non_embedding_parameters=model.num_parameters(),
        derived_fields=list(derived_fields),
    )
