"""Run the job as a child process (tests, benchmark, ``edgevib cloud run --detach-job``).

The job runs in its own process group, so :meth:`JobProcess.kill` can SIGKILL the Python
client and its JVM together, the way a crash would, and a restart resumes from the last
retained checkpoint (``--restore latest``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from edgevib.cloud.config import CloudConfig, to_toml
from edgevib.cloud.errors import CloudRetryableError

log = logging.getLogger(__name__)


class JobProcess:
    """``python -m edgevib.cloud.flink.job --config <toml> --restore latest`` as a child process group."""

    def __init__(self, cfg: CloudConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "cloud.toml"
        self.config_path.write_text(to_toml(cfg))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"job-{self.starts}.log"

    def start(self, restore: str = "latest") -> None:
        self.starts += 1
        cmd = [sys.executable, "-m", "edgevib.cloud.flink.job", "--config", str(self.config_path), "--restore", restore]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        log.info("job started (pid %d), log %s", self.proc.pid, self.log_path)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the job's process group (client, JVM, Python workers): a crash, not a stop."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.proc = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None

    def check(self) -> None:
        """Raise with the log's tail if the job exited."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise CloudRetryableError("cloud.runner", f"job exited with {self.proc.returncode}: {tail}",
                                      f"see {self.log_path}")
