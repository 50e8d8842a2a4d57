"""A local standalone Flink cluster from PyFlink's own ``bin/`` scripts, and job submission.

    cluster = StandaloneCluster(Path("/tmp/flink"), taskmanagers=2)
    cluster.start()                       # JobManager + two TaskManagers, REST on a free port
    job_id = cluster.submit(config_toml, parallelism=2)  # flink run -d -p 2 -py <edgevib>/cloud/flink/job.py ...
    savepoint = cluster.stop_with_savepoint(job_id)      # flink stop --savepointPath ...
    job_id = cluster.submit(config_toml, restore=str(savepoint), parallelism=1)  # rescaled
    cluster.cancel(job_id); cluster.stop()

Every address is bound to 127.0.0.1 and every port is chosen explicitly, so several
clusters (and engineers) can share a host.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from edgevib.cloud.errors import CloudError, CloudRetryableError

from edgevib.broker import free_port
from edgevib.extras import require

log = logging.getLogger(__name__)


def flink_home() -> Path:
    pyflink = require("pyflink", extra="cloud", feature="standalone Flink cluster")
    return Path(str(pyflink.__file__)).parent


class StandaloneCluster:
    """``start-cluster.sh`` / ``stop-cluster.sh`` with a private conf and log directory.

    ``taskmanagers`` TaskManager processes of ``slots`` slots each (one ``workers`` line per
    TaskManager; each binds its own free ports).
    """

    def __init__(self, workdir: Path, *, python: str | None = None, slots: int = 2, taskmanagers: int = 1) -> None:
        if taskmanagers < 1 or slots < 1:
            raise CloudError("cloud.standalone", f"taskmanagers={taskmanagers} slots={slots}", "use at least 1 of each")
        self.home = flink_home()
        self.taskmanagers = taskmanagers
        self.workdir = Path(workdir)
        self.conf_dir = self.workdir / "conf"
        self.log_dir = self.workdir / "log"
        self.python = python or sys.executable
        self.rest_port = free_port()
        self.lib_dir = self.workdir / "lib"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        # flink-python must sit in lib/ beside flink-csv: its helpers call package-private
        # constructors, which fail across the user-code class loader (IllegalAccessError).
        for jar in [*(self.home / "lib").glob("*.jar"), *(self.home / "opt").glob("flink-python-*.jar")]:
            link = self.lib_dir / jar.name
            if not link.exists():
                link.symlink_to(jar)
        conf = {
            "jobmanager.rpc.address": "127.0.0.1", "jobmanager.rpc.port": free_port(),
            "jobmanager.bind-host": "127.0.0.1", "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1", "rest.address": "127.0.0.1", "rest.bind-address": "127.0.0.1",
            "rest.port": self.rest_port, "taskmanager.numberOfTaskSlots": slots,
            # Several TaskManagers on one host: each picks free RPC and data ports.
            "taskmanager.rpc.port": "0", "taskmanager.data.port": "0",
            "jobmanager.memory.process.size": "1024m", "taskmanager.memory.process.size": "1600m",
            "python.executable": self.python, "python.client.executable": self.python,
            # Pid files beside the cluster, not in /tmp: stop-cluster.sh stops the processes its
            # pid files name, and every cluster on the host would share /tmp/flink-<user>-*.pid
            # (a test run's teardown stopped another run's cluster and left its own running).
            "env.pid.dir": str(self.workdir.resolve()),
        }
        # Java 17 needs the --add-opens list that ships in PyFlink's default config.
        m = re.search(r"^\s+all:\s*(--add-.*)$", (self.home / "conf" / "config.yaml").read_text(), re.MULTILINE)
        if m:
            conf["env.java.opts.all"] = m.group(1).strip()
        (self.conf_dir / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in conf.items()))
        (self.conf_dir / "masters").write_text("localhost:0\n")
        # "localhost": started directly, not over ssh; one line per TaskManager.
        (self.conf_dir / "workers").write_text("localhost\n" * taskmanagers)
        for name in ("log4j.properties", "log4j-cli.properties", "log4j-console.properties"):
            src = self.home / "conf" / name
            if src.exists():
                (self.conf_dir / name).write_text(src.read_text())

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "FLINK_CONF_DIR": str(self.conf_dir), "FLINK_LOG_DIR": str(self.log_dir),
                "FLINK_HOME": str(self.home),
                "FLINK_LIB_DIR": str(self.lib_dir), "PYFLINK_CLIENT_EXECUTABLE": self.python}

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def _bin(self, name: str) -> str:
        path = self.home / "bin" / name
        path.chmod(path.stat().st_mode | 0o111)  # wheels do not always keep the execute bit
        return str(path)

    def _run(self, args: list[str], timeout: float) -> str:
        r = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if r.returncode != 0:
            raise CloudError("cloud.standalone", f"{Path(args[0]).name} exited {r.returncode}: "
                             f"{_causes(r.stdout + r.stderr)}", f"see the logs in {self.log_dir}")
        return r.stdout + r.stderr

    def overview(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.rest}/overview", timeout=2) as resp:  # noqa: S310 - local URL
            return dict(json.loads(resp.read()))

    def start(self, timeout: float = 90.0) -> None:
        for script in ("config.sh", "jobmanager.sh", "taskmanager.sh", "flink-daemon.sh", "flink"):
            self._bin(script)
        try:
            self._run([self._bin("start-cluster.sh")], timeout)
        except CloudError:
            self.stop()  # a JobManager may have started before the TaskManager failed
            raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if int(str(self.overview().get("taskmanagers", 0))) >= self.taskmanagers:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise CloudRetryableError("cloud.standalone", f"fewer than {self.taskmanagers} TaskManagers registered at "
                                  f"{self.rest} in {timeout} s",
                                  f"see the logs in {self.log_dir}")

    def submit(self, config: Path, *, restore: str = "", parallelism: int | None = None, timeout: float = 240.0) -> str:
        """``flink run -d -py cloud/flink/job.py``; returns the job id.

        ``restore``: a savepoint or checkpoint path (``flink run -s``; keyed state is
        redistributed when ``parallelism`` differs from the one it was taken at), ``latest``
        (newest retained checkpoint of the config's checkpoint_dir) or empty.
        ``parallelism`` overrides the config's ``job.parallelism`` (``flink run -p``).
        """
        job_py = Path(__file__).with_name("job.py")
        args = [self._bin("flink"), "run", "-d", "-m", f"127.0.0.1:{self.rest_port}"]
        if parallelism is not None:
            args += ["-p", str(parallelism)]
        if restore and restore != "latest":
            args += ["-s", restore]
        out = self._run([*args, "-py", str(job_py), "-pyexec", self.python, "-pyclientexec", self.python,
                         "--config", str(config), "--restore", restore,
                         *(["--parallelism", str(parallelism)] if parallelism is not None else [])], timeout)
        m = re.search(r"JobID ([0-9a-f]{32})", out)
        if m is None:
            raise CloudError("cloud.standalone", f"no JobID in the output of flink run: {out[-800:]}",
                             f"see the logs in {self.log_dir}")
        return m.group(1)

    def job_state(self, job_id: str) -> str:
        with urllib.request.urlopen(f"{self.rest}/jobs/{job_id}", timeout=10) as resp:  # noqa: S310 - local URL
            return str(json.loads(resp.read())["state"])

    def job_parallelism(self, job_id: str) -> dict[str, int]:
        """Parallelism of each of the running job's vertices (by name)."""
        with urllib.request.urlopen(f"{self.rest}/jobs/{job_id}", timeout=10) as resp:  # noqa: S310 - local URL
            return {str(v["name"]): int(v["parallelism"]) for v in json.loads(resp.read())["vertices"]}

    def tasks_running(self, job_id: str) -> bool:
        """True when the job is RUNNING and every one of its tasks is too (a savepoint needs all of them)."""
        with urllib.request.urlopen(f"{self.rest}/jobs/{job_id}", timeout=10) as resp:  # noqa: S310 - local URL
            job = json.loads(resp.read())
        return bool(job["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in job["vertices"]))

    def stop_with_savepoint(self, job_id: str, directory: Path | None = None, timeout: float = 180.0,
                            attempts: int = 3) -> Path:
        """``flink stop --savepointPath``: a savepoint, then the job finishes; returns the savepoint's path.

        A stop-with-savepoint can be declined while a task is not running yet (still deploying, or
        restarting after a failover) or fail in the finishing phase, after which Flink restarts the
        job; the job then runs on, untouched, so the stop is tried again (``attempts`` in all) once
        every task runs. The last failure is raised with its root causes.
        """
        target = Path(directory or self.workdir / "savepoints").resolve()
        deadline = time.monotonic() + timeout
        for attempt in range(1, attempts + 1):
            try:
                out = self._run([self._bin("flink"), "stop", "-m", f"127.0.0.1:{self.rest_port}", "--type",
                                 "canonical", "--savepointPath", target.as_uri(), job_id],
                                max(10.0, deadline - time.monotonic()))
                break
            except CloudError as exc:
                if attempt == attempts or time.monotonic() >= deadline:
                    raise
                log.warning("stop-with-savepoint of %s failed (attempt %d of %d), retrying once every task runs: %s",
                            job_id, attempt, attempts, exc)
                while time.monotonic() < deadline:
                    try:
                        if self.tasks_running(job_id):
                            break
                    except OSError:
                        pass
                    time.sleep(0.5)
        m = re.search(r"Savepoint completed\. Path: (\S+)", out)
        if m is None:
            raise CloudError("cloud.standalone", f"no savepoint path in the output of flink stop: {out[-800:]}",
                             f"see the logs in {self.log_dir}")
        return Path(m.group(1).removeprefix("file:").removeprefix("//"))

    def cancel(self, job_id: str) -> None:
        self._run([self._bin("flink"), "cancel", "-m", f"127.0.0.1:{self.rest_port}", job_id], 60)

    def stop(self) -> None:
        try:
            self._run([self._bin("stop-cluster.sh")], 60)
        except (CloudError, subprocess.TimeoutExpired) as exc:
            log.warning("stop-cluster.sh failed: %s", exc)


def _causes(output: str, limit: int = 1500) -> str:
    """The exception lines of a Java stack trace (first message and every ``Caused by``), no frames.

    >>> _causes("org.X: boom\\n\\tat a.b(C.java:1)\\nCaused by: java.Y: root\\n\\t... 5 more")
    'org.X: boom | Caused by: java.Y: root'
    """
    lines = [ln.strip() for ln in output.strip().splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith(("at ", "... "))]
    text = " | ".join(kept) if kept else output.strip()
    return text if len(text) <= limit else text[:limit // 3] + " [...] " + text[-(limit - limit // 3):]
