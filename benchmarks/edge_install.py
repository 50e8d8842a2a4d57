"""Edge install footprint: what ``install.sh`` leaves on a gateway's disk, slimmed and not.

Builds a ``--no-wheels`` bundle of this checkout (default model ``models/zoo/faulttype.onnx``),
installs it twice as a gateway would (``install.sh --no-systemd``, through this machine's pip
index and cache, each into a fresh prefix): once with the default slim step (no pip/setuptools,
no ONNX Runtime C/C++ API library; ``deploy/install.sh`` step 5) and once with ``--no-slim``.
For each it prints the virtualenv's size on disk (``du``, the same blocks a gateway's
filesystem counts), the largest entries of its site-packages, and, in the slimmed venv, the
time from a fresh interpreter to the default model loaded and run once (imports + session +
one batch), best and median of 5. A report, not a test:
``python benchmarks/edge_install.py [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgevib.tools.deploy import BUNDLE_ROOT, build_bundle  # noqa: E402

TARGET_MB = 150.0
LOAD_S = 1.0
CONFIG = ('site = "plant1"\ngateway = "gw-size"\nbroker_url = "mqtt://127.0.0.1:1"\n'
          '\n[sensors.de]\nasset = "pump-3"\nbearing = "cwru-de-6205"\nrpm = 1797\n')
PROBE = """
import time, sys
t0 = time.perf_counter()
import numpy as np
import edgevib.edge.agent
from edgevib.edge.runtime import OnnxModel
from edgevib.models.orders import FaultHz
m = OnnxModel(sys.argv[1])
x = np.zeros((1, 1, m.meta.window), np.float32)
x[0, 0, ::97] = 1.0
ctx = [FaultHz(fr=30.0, bpfo=107.4, bpfi=162.2, bsf=70.6, ftf=11.9)] if m.meta.aux_size else None
m.predict(x, ctx)
print(time.perf_counter() - t0)
"""


def du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / 1024


def site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


def install(bundle: Path, prefix: Path, slim: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHON")
           and not k.startswith("EDGEVIB_")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p != str(Path(sys.prefix) / "bin"))
    argv = ["sh", str(bundle / BUNDLE_ROOT / "install.sh"), "--prefix", str(prefix / "opt"),
            "--confdir", str(prefix / "etc"), "--no-systemd"] + ([] if slim else ["--no-slim"])
    t = time.monotonic()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, cwd="/")
    if r.returncode != 0:
        raise SystemExit(f"install.sh failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return time.monotonic() - t


def report(venv: Path, label: str) -> float:
    total = du_mb(venv)
    sp = site_packages(venv)
    rows = sorted(((du_mb(p), p.name) for p in sp.iterdir()), reverse=True)[:8]
    print(f"\n{label}: venv {total:.1f} MB on disk (target <= {TARGET_MB:.0f} MB)")
    for mb, name in rows:
        print(f"  {mb:7.1f} MB  {name}")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, help="install here and keep it (default: a temporary folder)")
    args = ap.parse_args()
    print(f"edge install benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}  load avg {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="edgevib-install-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        (root / "gw.toml").write_text(CONFIG)
        res = build_bundle(root / "gw.toml", root / "gw.tar.gz", wheels=False)
        with tarfile.open(res.path) as tar:
            tar.extractall(root / "bundle", filter="data")
        sizes = {}
        for slim in (True, False):
            prefix = root / ("slim" if slim else "full")
            secs = install(root / "bundle", prefix, slim)
            sizes[slim] = report(prefix / "opt" / "venv", f"{'slim (default)' if slim else '--no-slim'}, "
                                 f"installed in {secs:.0f} s")
        venv = root / "slim" / "opt" / "venv"
        model = next((root / "slim" / "opt" / "models").glob("*.onnx"))
        times = []
        for _ in range(5):
            out = subprocess.run([str(venv / "bin" / "python"), "-c", PROBE, str(model)],
                                 capture_output=True, text=True, check=True, cwd="/")
            times.append(float(out.stdout.split()[-1]))
        print(f"\nslim venv, fresh interpreter -> {model.name} loaded and run once (imports included): "
              f"best {min(times):.2f} s, median {statistics.median(times):.2f} s (target <= {LOAD_S:.0f} s)")
        print(f"install size: slim {sizes[True]:.1f} MB, --no-slim {sizes[False]:.1f} MB; "
              f"target <= {TARGET_MB:.0f} MB {'met' if sizes[True] <= TARGET_MB else 'MISSED'}")
        print(f"load avg at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
