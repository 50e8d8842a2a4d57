"""A cloud part (the job, a bridge) run as a child process group with its own config file.

The child runs in its own process group, so :meth:`ChildGroup.kill` SIGKILLs it and its
children (a job's JVM and Python workers) together, the way a crash would, and
:meth:`ChildGroup.stop` asks it to finish first (``stop_signal``), then kills it.
Subclasses start the command (:class:`edgevib.cloud.flink.runner.JobProcess`,
:class:`edgevib.cloud.testing.BridgeProcess`).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from edgevib.cloud.config import CloudConfig, to_toml

__all__ = ["ChildGroup"]


class ChildGroup:
    """Owns ``workdir/cloud.toml`` (``cfg`` written out) and at most one running child."""

    stop_signal: signal.Signals = signal.SIGTERM

    def __init__(self, cfg: CloudConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "cloud.toml"
        self.config_path.write_text(to_toml(cfg))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _spawn(self, cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process group: a crash, not a stop."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.proc = None

    def stop(self, timeout: float = 10.0) -> None:
        """``stop_signal`` to the group, then SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, self.stop_signal)
            self.proc.wait(timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None
