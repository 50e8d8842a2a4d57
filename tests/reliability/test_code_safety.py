"""No module of the package can hand network input to pickle, eval/exec, yaml.load or a shell.

An AST scan of ``edgevib/``, ``edge/``, ``models/`` and ``cloud/`` (the installed package)
for: imports of pickle-like modules (pickle, marshal, shelve, dill, cloudpickle, joblib);
calls of ``eval``/``exec``/``compile``; any call with ``shell=True``; ``os.system``/
``os.popen``/``asyncio.create_subprocess_shell``; ``yaml.load``/``full_load``/``unsafe_load``
without a safe loader; ``torch.load`` without ``weights_only=True``; ``np.load`` with
``allow_pickle`` not literally False; and dynamic imports whose module name is not a
literal. The scan is stricter than "network input": these are banned outright, and the
few dynamic imports are allow-listed below with the reason a reviewer can check.

A self-test feeds the scanner one snippet per rule, so a scanner that finds nothing fails.
Also checks that ruff's S-rules for exec/eval/pickle stay selected in pyproject.toml.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("edgevib", "edge", "models", "cloud")
PICKLE_LIKE = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}

# (path, rule) -> why it is safe. Each names where the module name comes from.
ALLOW: dict[tuple[str, str], str] = {
    ("edgevib/cli.py", "dynamic_import"): "module names from the constant table _PARTS (the CLI's own sub-commands)",
    ("edgevib/extras.py", "dynamic_import"): "require(module): callers pass literal module names of optional extras",
    ("edge/adapters/__init__.py", "dynamic_import"): "BUILTIN[name][0]: module names from the constant table "
                                                     "BUILTIN, imported only for a name found in it",
    ("models/arch/__init__.py", "dynamic_import"): "Arch.module: set by the registered trainer files of "
                                                   "models/arch/, looked up by a name found in the registry",
}


def _name(node: ast.AST) -> str:
    """Dotted name of a call target: ``os.system``, ``yaml.load``, ``eval``; '' if not a plain name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base or '?'}.{node.attr}"  # x().eval() is '?.eval', not the builtin
    return ""


def _kw(call: ast.Call, key: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == key), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def scan(source: str, filename: str = "<snippet>") -> list[tuple[int, str, str]]:
    """(line, rule, text) for every banned construct in ``source``."""
    out: list[tuple[int, str, str]] = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                if m.split(".")[0] in PICKLE_LIKE:
                    out.append((node.lineno, "pickle_import", m))
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        last = name.rsplit(".", 1)[-1]
        if name in ("eval", "exec", "compile", "builtins.eval", "builtins.exec"):
            out.append((node.lineno, "eval_exec", name))
        shell = _kw(node, "shell")
        if shell is not None and not _is_const(shell, False):
            out.append((node.lineno, "shell_true", name))
        if name in ("os.system", "os.popen", "system", "popen") or last == "create_subprocess_shell":
            out.append((node.lineno, "os_shell", name))
        if name.startswith("yaml.") and last in ("load", "full_load", "unsafe_load", "load_all", "unsafe_load_all"):
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if last.startswith(("unsafe", "full")) or loader is None or "Safe" not in _name(loader):
                out.append((node.lineno, "yaml_load", name))
        if name == "torch.load" and not _is_const(_kw(node, "weights_only"), True):
            out.append((node.lineno, "torch_load", name))
        if name in ("np.load", "numpy.load") and _kw(node, "allow_pickle") is not None \
                and not _is_const(_kw(node, "allow_pickle"), False):
            out.append((node.lineno, "np_pickle", name))
        if (name in ("importlib.import_module", "import_module", "__import__")
                and not (node.args and isinstance(node.args[0], ast.Constant))):
            out.append((node.lineno, "dynamic_import", name))
    return out


def test_scanner_finds_each_banned_construct() -> None:
    snippet = "\n".join([
        "import pickle", "from marshal import loads", "import cloudpickle as cp",
        "eval(x)", "exec(code)", "compile(src, 'f', 'exec')",
        "subprocess.run(cmd, shell=True)", "subprocess.Popen(cmd, shell=flag)", "os.system('ls')", "os.popen(c)",
        "yaml.load(doc)", "yaml.load(doc, Loader=yaml.FullLoader)", "yaml.unsafe_load(doc)",
        "torch.load(p)", "torch.load(p, weights_only=False)", "np.load(p, allow_pickle=True)",
        "importlib.import_module(name)", "__import__(n)",
        # allowed forms: not reported
        "subprocess.run(['ls'], shell=False)", "yaml.load(doc, Loader=yaml.SafeLoader)", "yaml.safe_load(doc)",
        "torch.load(p, weights_only=True)", "np.load(p, allow_pickle=False)", "net.eval()", "net.to(d).eval()",
        "importlib.import_module('json')",
    ])
    rules = [r for _, r, _ in scan(snippet)]
    assert rules.count("pickle_import") == 3
    assert rules.count("eval_exec") == 3
    assert rules.count("shell_true") == 2
    assert rules.count("os_shell") == 2
    assert rules.count("yaml_load") == 3
    assert rules.count("torch_load") == 2
    assert rules.count("np_pickle") == 1
    assert rules.count("dynamic_import") == 2
    assert len(rules) == 18, scan(snippet)


def test_package_has_no_pickle_eval_yaml_load_or_shell() -> None:
    files = [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]
    assert len(files) > 30, f"expected the package's modules under {PACKAGES}, found {len(files)}"
    found, allowed_used = [], set()
    for f in files:
        rel = f.relative_to(REPO).as_posix()
        for line, rule, text in scan(f.read_text(), rel):
            if (rel, rule) in ALLOW:
                allowed_used.add((rel, rule))
            else:
                found.append(f"{rel}:{line}: {rule} ({text})")
    assert found == [], "banned constructs (fix, or allow-list with a reason):\n" + "\n".join(found)
    # A stale allow-list entry hides nothing today but would hide something tomorrow.
    assert allowed_used == set(ALLOW), f"allow-list entries no longer needed: {set(ALLOW) - allowed_used}"


def test_ruff_security_rules_stay_selected() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    lint = cfg["tool"]["ruff"]["lint"]
    selected = set(lint.get("select", [])) | set(lint.get("extend-select", []))
    ignored = set(lint.get("ignore", [])) | set(lint.get("extend-ignore", []))
    for rule in ("S102", "S307", "S301"):  # exec, eval, pickle
        assert rule in selected or "S" in selected, f"ruff rule {rule} is no longer selected in pyproject.toml"
        assert rule not in ignored and "S" not in ignored, f"ruff rule {rule} is ignored in pyproject.toml"
