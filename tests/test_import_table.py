"""The import table of docs/design.md, enforced: what a gateway installs never needs torch,
onnx or pyflink, and the core needs no extra at all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "pyflink", "onnxruntime.quantization")


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            out.add(n.module)
    return out


def _heavy(mods: set[str], also: tuple[str, ...] = ()) -> list[str]:
    return sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in (*HEAVY, *also)))


@pytest.mark.parametrize("path", sorted((REPO / "edge").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO / "edge")))
def test_edge_never_imports_training_or_cloud_packages(path: Path) -> None:
    bad = _heavy(_imports(path, top_level_only=False), also=("edgevib.cloud", "scipy.stats"))
    assert not bad, f"edge/{path.name} imports {bad}: a gateway has none of them (docs/design.md)"


@pytest.mark.parametrize("path", sorted((REPO / "edgevib").glob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_extra_at_module_level(path: Path) -> None:
    bad = _heavy(_imports(path, top_level_only=True), also=("paho", "onnxruntime", "starlette", "edgevib.cloud"))
    assert not bad, f"edgevib/{path.name} imports {bad} at module level; import it where the command runs"


@pytest.mark.parametrize("path", sorted((REPO / "edgevib" / "protocol").glob("*.py")), ids=lambda p: p.name)
def test_protocol_needs_only_numpy_and_the_core(path: Path) -> None:
    bad = _heavy(_imports(path, top_level_only=False),
                 also=("paho", "onnxruntime", "starlette", "scipy", "edgevib.cloud", "edgevib.edge"))
    assert not bad, f"edgevib/protocol/{path.name} imports {bad}: edge and cloud both import the protocol"


@pytest.mark.parametrize("path", sorted((REPO / "models").glob("*.py")), ids=lambda p: p.name)
def test_models_import_torch_and_onnx_only_inside_functions(path: Path) -> None:
    bad = _heavy(_imports(path, top_level_only=True), also=("edgevib.cloud",))
    assert not bad, f"models/{path.name} imports {bad} at module level (the edge loads models/*)"


_RUNTIME = sorted(p for d in ("edgevib", "edge", "models", "cloud") for p in (REPO / d).rglob("*.py")
                  if "tools" not in p.relative_to(REPO).parts)


@pytest.mark.parametrize("path", _RUNTIME, ids=lambda p: str(p.relative_to(REPO)))
def test_nothing_at_run_time_imports_the_developer_tools(path: Path) -> None:
    bad = _heavy(_imports(path, top_level_only=False), also=("edgevib.tools",))
    bad = [m for m in bad if m.startswith("edgevib.tools")]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}: edgevib/tools/ runs on a developer machine only " \
                    "(docs/design.md); the CLI loads it by name when its command runs"
