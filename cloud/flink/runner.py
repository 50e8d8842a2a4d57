"""Run the job as a child process (tests, benchmark, ``edgevib cloud run --detach-job``).

The job runs in its own process group, so :meth:`JobProcess.kill` can SIGKILL the Python
client and its JVM together, the way a crash would, and a restart resumes from the last
retained checkpoint (``--restore latest``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from edgevib.cloud.errors import CloudRetryableError
from edgevib.cloud.process import ChildGroup

log = logging.getLogger(__name__)


class JobProcess(ChildGroup):
    """``python -m edgevib.cloud.flink.job --config <toml> --restore latest`` as a child process group."""

    @property
    def log_path(self) -> Path:
        return self.workdir / f"job-{self.starts}.log"

    def start(self, restore: str = "latest") -> None:
        self.starts += 1
        cmd = [sys.executable, "-m", "edgevib.cloud.flink.job", "--config", str(self.config_path), "--restore", restore]
        proc = self._spawn(cmd, self.log_path)
        log.info("job started (pid %d), log %s", proc.pid, self.log_path)

    def check(self) -> None:
        """Raise with the log's tail if the job exited."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise CloudRetryableError("cloud.runner", f"job exited with {self.proc.returncode}: {tail}",
                                      f"see {self.log_path}")
