"""``edgevib deploy``: put an agent on a gateway.

``edgevib deploy bundle --config gw.toml --out gw.tar.gz`` builds a self-contained
tarball (see ``docs/deploy.md``): the edgevib wheel, a pinned lock of the edge-only
dependencies (and their wheels unless ``--no-wheels``), the config, the model, TLS files
and signing key it names, a systemd unit template and ``install.sh``.
``edgevib deploy ssh USER@HOST --bundle gw.tar.gz`` copies it with ``scp`` and runs
``install.sh`` over ``ssh``. Both run on a developer machine with a repository checkout.

Inside the bundle, paths that only exist on the gateway are written as the tokens
``@PREFIX@`` and ``@CONFDIR@``; ``install.sh`` replaces them with the paths it installs to.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevib import __version__
from edgevib.config import read_toml
from edgevib.errors import ConfigError, FatalError

log = logging.getLogger(__name__)

_COMP = "deploy"
BUNDLE_ROOT = "edgevib-bundle"
UNIT_NAME = "edgevib-agent.service"
UNIT_TEMPLATE = UNIT_NAME + ".in"
LOCK_NAME = "requirements-edge.txt"
DEFAULT_PREFIX = "/opt/edgevib"
DEFAULT_CONFDIR = "/etc/edgevib"
STATE_DIR = "/var/lib/edgevib"  # the unit's StateDirectory= and WorkingDirectory=
DEFAULT_ZOO_MODEL = Path("models") / "zoo" / "faulttype.onnx"
# What install.sh accepts as PREFIX/CONFDIR, and what file names in the bundle may hold:
# no quotes, spaces, '%' (systemd specifiers) or '|' (the sed delimiter).
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/-]*")
_SSH_TARGET = re.compile(r"(?:([A-Za-z_][A-Za-z0-9._-]{0,31})@)?([A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]+\])")
# Top-level config keys holding a file the bundle carries, and where it goes on the gateway.
_TLS_KEYS = ("ca", "cert", "key")


class DeployError(FatalError):
    """Building or shipping a bundle failed; the message names the step and the fix."""


# -- TOML writing (the config is re-written with gateway paths) ------------------------------

def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x, where) for x in v) + "]"
    raise DeployError(_COMP, f"config value {where}={v!r} ({type(v).__name__})",
                      "use strings, numbers, booleans, arrays and tables only")


def dumps_toml(data: Mapping[str, Any]) -> str:
    """A TOML document for a dict of scalars, arrays and (nested) tables; checked by re-parsing."""
    out: list[str] = []

    def table(d: Mapping[str, Any], path: tuple[str, ...]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, Mapping)}
        tables = {k: v for k, v in d.items() if isinstance(v, Mapping)}
        if path and (scalars or not tables):
            out.append(f"\n[{'.'.join(_toml_key(p) for p in path)}]")
        for k, v in scalars.items():
            out.append(f"{_toml_key(k)} = {_toml_value(v, '.'.join((*path, k)))}")
        for k, v in tables.items():
            table(v, (*path, k))

    table(data, ())
    text = "\n".join(out).lstrip("\n") + "\n"
    if tomllib.loads(text) != dict(data):
        raise DeployError(_COMP, "the re-written config does not read back as written",
                          "simplify the config (no dates, no arrays of tables) and report this")
    return text


# -- what goes into a bundle -----------------------------------------------------------------

def repo_root(start: Path | None = None) -> Path:
    """The edgevib checkout holding ``pyproject.toml`` and ``deploy/install.sh``."""
    here = (start or Path(__file__).resolve().parent).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "deploy" / "install.sh").is_file():
            return d
    raise DeployError(_COMP, f"no edgevib checkout at or above {here}",
                      "run from a clone of the repository or pass --repo DIR")


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def edge_lock(repo: Path, extra: str = "edge") -> list[tuple[str, str]]:
    """``(name, version)`` for every package ``edgevib[extra]`` needs, pinned from this environment.

    Top-level requirements come from the checkout's ``pyproject.toml``; their own
    requirements are followed through the installed metadata (markers evaluated here).
    """
    from importlib import metadata

    try:
        from packaging.requirements import Requirement
    except ModuleNotFoundError as exc:
        raise DeployError(_COMP, "module 'packaging' missing", "pip install packaging") from exc

    project = read_toml(repo / "pyproject.toml")["project"]
    roots = list(project.get("dependencies", [])) + list(project.get("optional-dependencies", {}).get(extra, []))
    pins: dict[str, str] = {}
    todo: list[tuple[str, str]] = [(r, "") for r in roots]
    while todo:
        text, via = todo.pop()
        req = Requirement(text)
        name = _dist_name(req.name)
        if name == "edgevib":
            continue
        if name in pins:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError as exc:
            raise DeployError(_COMP, f"{req.name} (needed by {via or 'edgevib[' + extra + ']'}) is not installed here",
                              f"pip install -e '.[{extra}]' in the environment that builds bundles") from exc
        version = dist.version
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            raise DeployError(_COMP, f"installed {req.name}=={version} does not satisfy {req}",
                              f"pip install -e '.[{extra}]' to get a matching version")
        pins[name] = version
        for sub in dist.requires or []:
            r = Requirement(sub)
            envs = [{"extra": e} for e in (req.extras or {""})]
            if r.marker is None or any(r.marker.evaluate(e) for e in envs):
                todo.append((sub, name))
    return sorted(pins.items())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: Sequence[str], what: str, fix: str, cwd: Path | None = None) -> str:
    log.debug("deploy: running %s", cmd)
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, check=False, cwd=cwd)
    except FileNotFoundError as exc:
        raise DeployError(_COMP, f"{what}: {cmd[0]} not found", fix) from exc
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip()[-800:]
        raise DeployError(_COMP, f"{what} failed (exit {r.returncode}): {tail}", fix)
    return r.stdout


def build_wheel(repo: Path, out_dir: Path) -> Path:
    """``pip wheel --no-deps`` of a clean copy of the checkout (no build dirs left in the repo)."""
    project = read_toml(repo / "pyproject.toml")
    dirs = sorted(set(project.get("tool", {}).get("setuptools", {}).get("package-dir", {}).values()) | {"edgevib"})
    top_dirs = sorted({d.split("/")[0] for d in dirs})
    with tempfile.TemporaryDirectory(prefix="edgevib-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in"):
            if (repo / name).is_file():
                shutil.copy2(repo / name, src / name)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache")
        for d in top_dirs:
            if not (repo / d).is_dir():
                raise DeployError(_COMP, f"package directory {d!r} missing in {repo}",
                                  "restore it or fix [tool.setuptools] package-dir in pyproject.toml")
            shutil.copytree(repo / d, src / d, ignore=ignore)
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
              "-w", str(out_dir), str(src)],
             "building the edgevib wheel", "pip install 'setuptools>=69' into this environment")
    wheels = sorted(out_dir.glob("edgevib-*.whl"))
    if len(wheels) != 1:
        raise DeployError(_COMP, f"expected one edgevib wheel, found {[w.name for w in wheels]}",
                          "clear the output directory and retry")
    return wheels[0]


def download_wheels(lock: Path, out_dir: Path, *, platforms: Sequence[str] = (),
                    python_version: str | None = None) -> list[Path]:
    """``pip download`` the pinned wheels (binary only) for the gateway's platform/Python."""
    before = set(out_dir.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
           "-d", str(out_dir), "-r", str(lock)]
    for p in platforms:
        cmd += ["--platform", p]
    if python_version:
        cmd += ["--python-version", python_version, "--implementation", "cp"]
    _run(cmd, "downloading the edge dependencies",
         "check the network / pip index, pass the gateway's --platform and --python-version, "
         "or build with --no-wheels (the gateway then installs from its own pip index)")
    return sorted(set(out_dir.glob("*.whl")) - before)


def _git_describe(repo: Path) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=False).stdout.strip() != ""
    except FileNotFoundError:
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def _local_file(value: Any, key: str, config_dir: Path) -> Path:
    """A path from the config as this machine sees it: relative to the config file, then cwd."""
    if not isinstance(value, str) or not value:
        raise DeployError(_COMP, f"config {key}={value!r}", f"set {key} to a file path")
    p = Path(value).expanduser()
    for cand in ((p,) if p.is_absolute() else (config_dir / p, Path.cwd() / p)):
        if cand.is_file():
            return cand.resolve()
    raise DeployError(_COMP, f"config {key}={value!r}: file not found (looked relative to {config_dir})",
                      f"point {key} at an existing file on this machine; the bundle copies it to the gateway")


def _bundle_name(path: Path, what: str) -> str:
    name = path.name
    if not _SAFE_NAME.fullmatch(name):
        raise DeployError(_COMP, f"{what} file name {name!r}",
                          "rename it to letters, digits, '.', '_' and '-' only")
    return name


@dataclass
class BundlePlan:
    """What :func:`build_bundle` puts where (paths on this machine -> names in the bundle)."""

    config: dict[str, Any]
    config_name: str
    files: dict[str, Path] = field(default_factory=dict)  # bundle path -> local file
    model_name: str = ""
    pubkey_name: str = ""


def plan_bundle(config_path: Path, repo: Path, *, model: Path | None = None,
                public_key: Path | None = None) -> BundlePlan:
    """Read the config and decide the bundle's files and the config as the gateway sees it."""
    config_path = Path(config_path)
    raw = read_toml(config_path)
    _validate_agent_config(config_path)
    cfg_dir = config_path.resolve().parent
    plan = BundlePlan(config=dict(raw), config_name=_bundle_name(config_path, "config"))

    if model is not None:
        model_src = _local_file(str(model), "--model", Path.cwd())
    elif raw.get("model"):
        model_src = _local_file(raw["model"], "model", cfg_dir)
    else:
        model_src = repo / DEFAULT_ZOO_MODEL
        if not model_src.is_file():
            raise DeployError(_COMP, f"the config names no model and {DEFAULT_ZOO_MODEL} is missing",
                              "pass --model FILE.onnx, set model in the config, or run `make models`")
    plan.model_name = _bundle_name(model_src, "model")
    plan.files[f"models/{plan.model_name}"] = model_src
    plan.config["model"] = f"@PREFIX@/models/{plan.model_name}"

    tls = raw.get("tls")
    if isinstance(tls, Mapping):
        new_tls = dict(tls)
        for k in _TLS_KEYS:
            if tls.get(k):
                src = _local_file(tls[k], f"tls.{k}", cfg_dir)
                name = _bundle_name(src, f"tls.{k}")
                plan.files[f"config/tls/{name}"] = src
                new_tls[k] = f"@CONFDIR@/tls/{name}"
        plan.config["tls"] = new_tls

    outbox = raw.get("outbox")
    out_path = outbox.get("path") if isinstance(outbox, Mapping) else None
    if isinstance(out_path, str) and out_path.startswith("/") and not out_path.startswith(STATE_DIR + "/"):
        log.warning("deploy: outbox.path=%r is outside %s: the unit's ProtectSystem=strict makes it read-only; "
                    "use a relative path (it lands in %s) or add ReadWritePaths= to the unit",
                    out_path, STATE_DIR, STATE_DIR)

    # The model-signature key: --public-key, or the config's update.public_key (relative to
    # the config file); the agent on the gateway reads it from CONFDIR/keys/.
    upd: dict[str, Any] = dict(raw["update"]) if isinstance(raw.get("update"), Mapping) else {}
    key_src: Path | None = None
    if public_key is not None:
        key_src = _local_file(str(public_key), "--public-key", Path.cwd())
    elif upd.get("public_key"):
        key_src = _local_file(upd["public_key"], "update.public_key", cfg_dir)
    if key_src is not None:
        from edgevib.protocol.updates import UpdateError, load_public_key

        try:
            load_public_key(key_src)  # a gateway that cannot read its key would refuse every update
        except UpdateError as exc:
            raise DeployError(_COMP, exc.problem, exc.fix) from exc
        plan.pubkey_name = _bundle_name(key_src, "public key")
        plan.files[f"keys/{plan.pubkey_name}"] = key_src
        plan.config["update"] = {**upd, "public_key": f"@CONFDIR@/keys/{plan.pubkey_name}"}
    return plan


def _validate_agent_config(path: Path) -> None:
    """Let the agent's own config class judge the file (environment ignored)."""
    try:
        from edgevib.edge.config import load_agent_config
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith("edgevib"):
            from edgevib.errors import MissingExtraError

            raise MissingExtraError(exc.name, "edge", "edgevib deploy bundle") from exc
        raise
    # tls files and the update key are checked as the bundle copies them, relative to the config file
    raw = read_toml(path)
    raw.pop("tls", None)
    if isinstance(raw.get("update"), dict):
        raw["update"] = {k: v for k, v in raw["update"].items() if k != "public_key"}
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        fh.write(dumps_toml(raw))
    try:
        load_agent_config(fh.name, env={})
    except ConfigError as exc:
        raise ConfigError(exc.component, f"{path}: {exc.problem}", exc.fix) from exc
    finally:
        os.unlink(fh.name)


@dataclass(frozen=True)
class BundleResult:
    path: Path
    size: int
    files: int
    offline: bool
    seconds: float


def build_bundle(config_path: Path, out: Path, *, repo: Path | None = None, model: Path | None = None,
                 public_key: Path | None = None, wheels: bool = True, platforms: Sequence[str] = (),
                 python_version: str | None = None) -> BundleResult:
    """Build ``out`` (a ``.tar.gz`` holding ``edgevib-bundle/``); see ``docs/deploy.md``."""
    t0 = time.monotonic()
    repo = repo_root(repo)
    plan = plan_bundle(config_path, repo, model=model, public_key=public_key)
    py_version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    if not re.fullmatch(r"3\.\d{1,2}", py_version):
        raise DeployError(_COMP, f"--python-version {py_version!r}", "use MAJOR.MINOR, e.g. 3.11")
    with tempfile.TemporaryDirectory(prefix="edgevib-bundle-") as tmp:
        root = Path(tmp) / BUNDLE_ROOT
        (root / "wheels").mkdir(parents=True)
        for name in ("install.sh", UNIT_TEMPLATE):
            shutil.copy2(repo / "deploy" / name, root / name)
        (root / "install.sh").chmod(0o755)
        for rel, src in plan.files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
        (root / "config").mkdir(exist_ok=True)
        (root / "config" / plan.config_name).write_text(dumps_toml(plan.config))

        log.info("deploy: building the edgevib wheel")
        wheel = build_wheel(repo, root / "wheels")
        lock = edge_lock(repo)
        lock_path = root / LOCK_NAME
        lock_path.write_text(
            f"# edge dependencies of edgevib {__version__}, pinned from {sys.executable}"
            f" (Python {sys.version.split()[0]}, {sys.platform})\n"
            + "".join(f"{n}=={v}\n" for n, v in lock))
        deps: list[Path] = []
        if wheels:
            log.info("deploy: downloading %d dependency wheels", len(lock))
            deps = download_wheels(lock_path, root / "wheels", platforms=platforms, python_version=python_version)

        env = {"EDGEVIB_VERSION": __version__, "EDGEVIB_WHEEL": wheel.name, "CONFIG_NAME": plan.config_name,
               "MODEL_NAME": plan.model_name, "PUBKEY_NAME": plan.pubkey_name, "OFFLINE": "1" if wheels else "0",
               "PYTHON_VERSION": py_version}
        (root / "bundle.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
        manifest = {
            "schema": "edgevib.bundle/1", "edgevib_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source": _git_describe(repo), "python_version": py_version, "platforms": list(platforms),
            "offline": wheels, "config": plan.config_name, "model": plan.model_name,
            "public_key": plan.pubkey_name or None, "requirements": [f"{n}=={v}" for n, v in lock],
            "wheels": sorted(p.name for p in [wheel, *deps]),
        }
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        files = sorted(p for p in root.rglob("*") if p.is_file())
        (root / "SHA256SUMS").write_text(
            "".join(f"{_sha256(p)}  {p.relative_to(root).as_posix()}\n" for p in files))

        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
            tar.add(root, arcname=BUNDLE_ROOT, filter=_tar_filter)
        os.replace(partial, out)
        n_files = len(files) + 1
    return BundleResult(out, out.stat().st_size, n_files, wheels, time.monotonic() - t0)


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


# -- shipping over ssh -----------------------------------------------------------------------

@dataclass(frozen=True)
class SshPlan:
    """The two commands ``deploy ssh`` runs, as argument lists."""

    scp: list[str]
    ssh: list[str]
    remote_archive: str


def _check_target(target: str) -> str:
    if target.startswith("-") or not _SSH_TARGET.fullmatch(target):
        raise ConfigError(_COMP, f"ssh target {target!r}", "use USER@HOST or HOST (letters, digits, '.', '-')")
    return target


def _check_path(value: str, what: str) -> str:
    if not _SAFE_PATH.fullmatch(value) or "//" in value or "/../" in f"{value}/":
        raise ConfigError(_COMP, f"{what}={value!r}", "use an absolute path of letters, digits, '.', '_', '-', '/'")
    return value


def plan_ssh(target: str, bundle: Path, *, port: int | None = None, identity: Path | None = None,
             sudo: bool | None = None, remote_dir: str = "/tmp", install_args: Sequence[str] = (),
             ssh: str = "ssh", scp: str = "scp", tag: str | None = None) -> SshPlan:
    """Build the scp and ssh argument lists; every value from the caller is validated or quoted."""
    _check_target(target)
    if not Path(bundle).is_file():
        raise ConfigError(_COMP, f"bundle {str(bundle)!r} not found", "build one with `edgevib deploy bundle`")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(_COMP, f"port={port}", "use a TCP port 1-65535")
    if identity is not None and not Path(identity).is_file():
        raise ConfigError(_COMP, f"identity {str(identity)!r} not found", "pass an existing private key file")
    _check_path(remote_dir, "--remote-dir")
    user = target.split("@", 1)[0] if "@" in target else ""
    use_sudo = (user != "root") if sudo is None else sudo
    work = f"{remote_dir.rstrip('/')}/edgevib-deploy-{tag or os.urandom(6).hex()}"
    archive = work + ".tar.gz"
    common: list[str] = ["-o", "BatchMode=yes"]
    if identity is not None:
        common += ["-i", str(identity)]
    scp_cmd = [scp, "-q", *common, *(["-P", str(port)] if port else []), "--", str(bundle), f"{target}:{archive}"]
    install = " ".join(shlex.quote(a) for a in ("sh", f"{work}/{BUNDLE_ROOT}/install.sh", *install_args))
    remote = (f"set -u; w={shlex.quote(work)}; rc=0; mkdir -m 700 \"$w\""
              f" && tar -xzf \"$w.tar.gz\" -C \"$w\""
              f" && {'sudo -n ' if use_sudo else ''}{install} || rc=$?;"
              " rm -rf \"$w\" \"$w.tar.gz\"; exit $rc")
    ssh_cmd = [ssh, *common, *(["-p", str(port)] if port else []), "--", target, remote]
    return SshPlan(scp_cmd, ssh_cmd, archive)


def ship(plan: SshPlan) -> int:
    """Run scp then ssh, streaming their output; the exit code of the remote install."""
    for cmd, what in ((plan.scp, "copying the bundle"), (plan.ssh, "running install.sh")):
        log.info("deploy: %s: %s", what, shlex.join(cmd))
        try:
            rc = subprocess.run(cmd, check=False).returncode
        except FileNotFoundError as exc:
            raise DeployError(_COMP, f"{what}: {cmd[0]!r} not found", "install an OpenSSH client") from exc
        if rc != 0:
            raise DeployError(_COMP, f"{what} failed (exit {rc})",
                              "check the host, its key in known_hosts (BatchMode: connect once with plain ssh), "
                              "your key (--identity) and sudo rights (sudo -n needs NOPASSWD, or use root@HOST)")
    return 0


# -- command line ----------------------------------------------------------------------------

def _cmd_bundle(args: argparse.Namespace) -> int:
    res = build_bundle(args.config, args.out, repo=args.repo, model=args.model, public_key=args.public_key,
                       wheels=not args.no_wheels, platforms=args.platform or (),
                       python_version=args.python_version)
    kind = "wheels included (offline install)" if res.offline else "lock only (gateway installs from its pip index)"
    print(f"{res.path}: {res.size / 1e6:.1f} MB, {res.files} files, {kind}, built in {res.seconds:.1f} s")
    print(f"install on a gateway: tar -xzf {res.path.name} && sudo sh {BUNDLE_ROOT}/install.sh")
    return 0


def _cmd_ssh(args: argparse.Namespace) -> int:
    extra: list[str] = []
    if args.prefix:
        extra += ["--prefix", _check_path(args.prefix, "--prefix")]
    if args.confdir:
        extra += ["--confdir", _check_path(args.confdir, "--confdir")]
    if args.no_systemd:
        extra.append("--no-systemd")
    if args.no_start:
        extra.append("--no-start")
    plan = plan_ssh(args.target, args.bundle, port=args.port, identity=args.identity,
                    sudo=False if args.no_sudo else None, remote_dir=args.remote_dir, install_args=extra)
    if args.dry_run:
        print(shlex.join(plan.scp))
        print(shlex.join(plan.ssh))
        return 0
    return ship(plan)


def register(subparsers: Any) -> None:
    """Add ``edgevib deploy bundle|ssh``."""
    p = subparsers.add_parser("deploy", help="bundle an agent for a gateway and install it over ssh",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="deploy_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda _a: (p.print_help(), 2)[1])

    b = sub.add_parser("bundle", help="build a self-contained gateway bundle (.tar.gz)")
    b.add_argument("--config", type=Path, required=True, help="the gateway's agent TOML (edgevib agent --config)")
    b.add_argument("--out", type=Path, required=True, help="output file, e.g. gw.tar.gz")
    b.add_argument("--model", type=Path, default=None,
                   help=f"ONNX model (default: the config's model, else {DEFAULT_ZOO_MODEL})")
    b.add_argument("--public-key", type=Path, default=None, help="public key for model signatures (optional)")
    b.add_argument("--no-wheels", action="store_true",
                   help="bundle only the pinned lock; the gateway installs dependencies from its pip index")
    b.add_argument("--platform", action="append", default=None,
                   help="gateway wheel platform tag, e.g. manylinux_2_28_aarch64 (repeatable; default: this machine)")
    b.add_argument("--python-version", default=None, help="gateway Python MAJOR.MINOR (default: this one)")
    b.add_argument("--repo", type=Path, default=None, help="edgevib checkout (default: the one this runs from)")
    b.set_defaults(func=_cmd_bundle)

    s = sub.add_parser("ssh", help="copy a bundle with scp and run its install.sh over ssh")
    s.add_argument("target", help="USER@HOST")
    s.add_argument("--bundle", type=Path, required=True, help="a .tar.gz from `edgevib deploy bundle`")
    s.add_argument("--port", type=int, default=None, help="ssh port")
    s.add_argument("--identity", "-i", type=Path, default=None, help="ssh private key file")
    s.add_argument("--no-sudo", action="store_true", help="run install.sh without sudo (default: sudo -n unless root@)")
    s.add_argument("--remote-dir", default="/tmp", help="where the bundle is unpacked on the host (removed after)")
    s.add_argument("--prefix", default=None, help=f"install.sh --prefix (default {DEFAULT_PREFIX})")
    s.add_argument("--confdir", default=None, help=f"install.sh --confdir (default {DEFAULT_CONFDIR})")
    s.add_argument("--no-systemd", action="store_true", help="install.sh --no-systemd")
    s.add_argument("--no-start", action="store_true", help="install.sh --no-start (install the unit, do not start it)")
    s.add_argument("--dry-run", action="store_true", help="print the scp and ssh commands, run nothing")
    s.set_defaults(func=_cmd_ssh)
