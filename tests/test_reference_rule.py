"""CS336's rule, checked on the source: the reference model, loss and optimizer use no torch.nn.functional,
no torch.nn layers beyond Parameter and the containers, no torch.optim beyond Optimizer, and no fused
softmax/log-sum-exp. kernels.py (the fast path, chosen explicitly) is out of scope by design."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cs336_basics.basics as basics

REFERENCE_MODULES = ("layers.py", "functional.py", "model.py", "optim.py")
ALLOWED_NN = {"Module", "ModuleList", "ModuleDict", "Parameter", "ParameterList", "ParameterDict", "init"}
ALLOWED_OPTIM = {"Optimizer"}
FUSED = {"softmax", "log_softmax", "logsumexp", "cross_entropy", "scaled_dot_product_attention"}


def violations(source: str) -> list[str]:
    """Every forbidden import, attribute or call in ``source`` as 'line N: what'."""
    tree = ast.parse(source)
    found: list[str] = []
    aliases: dict[str, str] = {}  # local name -> dotted torch path it was bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        path = None
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names]
            paths = names if isinstance(node, ast.Import) else [f"{node.module}.{n}" for n in names]
            for p in paths:
                if _forbidden(p):
                    found.append(f"line {node.lineno}: import {p}")
            continue
        if isinstance(node, ast.Attribute):
            path = _dotted(node, aliases)
            if path and _forbidden(path):
                found.append(f"line {node.lineno}: {path}")
            elif node.attr in FUSED and not (path or "").startswith("cs336_basics."):  # x.softmax(), ...
                found.append(f"line {node.lineno}: .{node.attr}")
    return sorted(set(found))


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def _forbidden(path: str) -> bool:
    p = path.split(".")
    if p[:3] == ["torch", "nn", "functional"]:
        return True
    if p[:2] == ["torch", "nn"] and len(p) > 2:
        return p[2] not in ALLOWED_NN
    if p[:2] == ["torch", "optim"] and len(p) > 2:
        return p[2] not in ALLOWED_OPTIM
    return False


@pytest.mark.parametrize("name", REFERENCE_MODULES)
def test_reference_modules_follow_the_rule(name):
    source = (Path(basics.__file__).parent / name).read_text(encoding="utf-8")
    assert violations(source) == []


def test_the_scan_catches_what_the_rule_forbids():
    kernels = (Path(basics.__file__).parent / "kernels.py").read_text(encoding="utf-8")
    assert any("torch.nn.functional" in v for v in violations(kernels))
    bad = """
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import Linear
y = F.silu(x)
z = nn.Linear(3, 4)
torch.nn.LayerNorm(3)
torch.optim.AdamW([])
torch.logsumexp(x, -1)
x.softmax(-1)
torch.nn.utils.clip_grad_norm_([], 1.0)
"""
    v = violations(bad)
    expected = ["import torch.nn.functional", "import torch.nn.Linear", "torch.nn.functional.silu", "torch.nn.Linear",
                "torch.nn.LayerNorm", "torch.optim.AdamW", ".logsumexp", ".softmax", "torch.nn.utils"]  # fmt: skip
    for e in expected:
        assert any(e in line for line in v), (e, v)
    ok = "import torch\nfrom torch import nn\nclass M(nn.Module):\n    w = nn.Parameter(torch.ones(1))\n"
    ok += "nn.init.trunc_normal_(w)\nclass O(torch.optim.Optimizer): pass\ny = softmax(x, -1)\n"
    assert violations(ok) == []
