"""The PyFlink streaming job: spool files -> SQL windows -> Python fleet state -> store + MQTT.

Run it in a local mini-cluster (``edgevib cloud run`` / ``python -m edgevib.cloud.flink.job``) or
submit it to a standalone cluster (``flink run -py cloud/flink/job.py --config cloud.toml``).

Topology (parallelism 1 by default)::

    spool (filesystem source, monitored, json) -- watermark: ev_ms - out_of_orderness
      |-- SQL: alerts (on-time/late), dead letters, TUMBLE counts per asset/site, health --> StoreWriter
      '-- SQL: heartbeats, status, per-asset buckets of serious alerts
            --> key_by(gateway|asset) --> Fleet (liveness timers, inventory, incidents) --> StoreWriter

Checkpoints are retained on cancellation; ``--restore latest`` resumes from the newest one.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgevib.cloud.config import CloudConfig, load_config
from edgevib.cloud.errors import CloudError
from edgevib.cloud.flink.fleet import FleetLogic, Record
from edgevib.cloud.flink.levels import LevelLogic
from edgevib.cloud.flink.sql import (
    fleet_batches_query,
    keyed_query,
    plain_query,
    views,
    watermark_expr,
)
from edgevib.cloud.ingest.records import SPOOL_COLUMNS
from edgevib.cloud.store import Store

from edgevib.extras import require

log = logging.getLogger(__name__)

JOB_NAME = "edgevib-cloud"


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """Newest completed checkpoint (``<dir>/<job id>/chk-N`` holding ``_metadata``), if any."""
    best: tuple[float, Path] | None = None
    for meta in Path(checkpoint_dir).glob("*/chk-*/_metadata"):
        t = meta.stat().st_mtime
        if best is None or t > best[0]:
            best = (t, meta.parent)
    return best[1] if best else None


JAVA_SOURCE = Path(__file__).with_name("java") / "OrderedSplitAssigner.java"
ASSIGNER_CLASS = "io.edgevib.flink.OrderedSplitAssigner$Provider"


def assigner_jar(cache_dir: Path | None = None) -> Path:
    """The ordered split assigner as a jar, compiled with ``javac`` on first use and cached."""
    import pyflink  # noqa: PLC0415

    lib = Path(pyflink.__file__).parent / "lib"
    jars = sorted(lib.glob("flink-dist-*.jar")) + sorted(lib.glob("flink-connector-files-*.jar"))
    digest = hashlib.sha256(JAVA_SOURCE.read_bytes() + "|".join(j.name for j in jars).encode()).hexdigest()[:12]
    cache = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgevib"
    jar = cache / f"edgevib-flink-{digest}.jar"
    if jar.exists():
        return jar
    javac, jar_tool = shutil.which("javac"), shutil.which("jar")
    if javac is None or jar_tool is None or len(jars) < 2:
        raise CloudError("cloud.job", f"cannot build {jar.name}: javac={javac} jar={jar_tool} flink jars={len(jars)}",
                         "install a JDK 11+ (apt-get install openjdk-17-jdk-headless) and apache-flink")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cp = os.pathsep.join(str(j) for j in jars)
        for cmd in ([javac, "--release", "11", "-cp", cp, "-d", tmp, str(JAVA_SOURCE)],
                    [jar_tool, "cf", str(jar) + ".tmp", "-C", tmp, "."]):
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise CloudError("cloud.job", f"{Path(cmd[0]).name} failed: {r.stderr.strip()[-400:]}",
                                 "check the JDK and the apache-flink install")
        os.replace(str(jar) + ".tmp", jar)  # atomic: parallel builds do not see half a jar
    return jar


def flink_config(cfg: CloudConfig, restore: Path | None = None) -> dict[str, str]:
    """Flink settings of the job (also written to a standalone cluster's config by deploy/flink)."""
    j = cfg.job
    conf = {
        "execution.checkpointing.interval": f"{j.checkpoint_interval_ms}ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": Path(cfg.checkpoint_dir).resolve().as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "state.backend.type": "hashmap",
        "python.executable": cfg.python_executable or sys.executable,
        "python.client.executable": cfg.python_executable or sys.executable,
        "python.fn-execution.bundle.time": str(j.bundle_time_ms),
        "python.fn-execution.bundle.size": "1000",
        "python.state.cache-size": str(j.state_cache_size),
        "parallelism.default": str(j.parallelism),
        # Keyed state is cut into this many key groups; fixed, so a savepoint restores at any
        # parallelism up to it (Flink's default depends on the first parallelism).
        "pipeline.max-parallelism": "128",
        "table.local-time-zone": "UTC",
        # Chained operators hand records on without a copy (the spool source feeds a dozen
        # SQL branches: copies were the largest cost in a profile). Flink SQL's operators copy
        # what they buffer, and the Python operators serialise their input anyway.
        "pipeline.object-reuse": "true",
        "pipeline.name": JOB_NAME,
        "pipeline.jars": assigner_jar().resolve().as_uri(),
        # A restart strategy keeps the job alive through a transient store or broker error.
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "1000",
        "restart-strategy.fixed-delay.delay": "1s",
    }
    if restore is not None:
        conf["execution.state-recovery.path"] = Path(restore).resolve().as_uri()
    return conf


# -- Python operators (run in Flink's Python worker) ----------------------------------------------

def _fn_base() -> tuple[Any, Any]:
    functions = require("pyflink.datastream.functions", extra="cloud", feature="cloud job")
    return functions.FlatMapFunction, functions.KeyedProcessFunction


FlatMapFunction, KeyedProcessFunction = _fn_base()


class StoreWriter(FlatMapFunction):  # type: ignore[misc, valid-type]
    """Upserts each record into the store; publishes fleet events to MQTT (QoS 1)."""

    def __init__(self, cfg: CloudConfig) -> None:
        self.cfg = cfg

    def open(self, runtime_context: Any) -> None:
        self.store = Store(self.cfg.store_url)
        self.mqtt: Any = None

    def _publisher(self) -> Any:
        if self.mqtt is None:
            import paho.mqtt.client as mqtt  # noqa: PLC0415
            from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

            from edgevib.broker import parse_url  # noqa: PLC0415

            host, port, tls = parse_url(self.cfg.broker_url)
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edgevib-cloud-events-{os.getpid()}")
            if tls:
                c.tls_set()
            c.connect_async(host, port, keepalive=30)
            c.loop_start()
            self.mqtt = c
        return self.mqtt

    def flat_map(self, value: Any) -> Any:
        kind, body = value[0], value[2]
        row = json.loads(body, strict=False)  # JSON_QUOTE leaves rare control characters raw (sql._json_text)
        if isinstance(row, list):
            self.store.apply_many(kind, row)  # one transaction per batch
            if kind == "fleet_event":  # after the store: a consumer that looks finds the row
                for r in row:
                    self._publisher().publish(self.cfg.fleet_topic, r["body"], qos=1)
            return iter(())
        self.store.apply(kind, row)
        if kind == "fleet_event":
            # paho queues while disconnected; consumers de-duplicate on the event id.
            self._publisher().publish(self.cfg.fleet_topic, row["body"], qos=1)
        return iter(())

    def close(self) -> None:
        self.store.close()
        if self.mqtt is not None:
            self.mqtt.loop_stop()
            self.mqtt.disconnect()


# Key in a gateway's state: when its pending liveness timer fires (absent: none pending).
TIMER = "_liveness_timer_ms"


class Fleet(KeyedProcessFunction):  # type: ignore[misc, valid-type]
    """Keyed by gateway (heartbeat, status) or asset (bucket); state is one JSON string."""

    def __init__(self, logic: FleetLogic, levels: LevelLogic | None = None) -> None:
        self.logic, self.levels = logic, levels

    def open(self, runtime_context: Any) -> None:
        from pyflink.common import Types  # noqa: PLC0415
        from pyflink.datastream.state import ValueStateDescriptor  # noqa: PLC0415

        # One state per key: every state written in a bundle is one synchronous round trip to
        # the JVM when the bundle ends (the pending liveness timer lives in it too: TIMER).
        self.state = runtime_context.get_state(ValueStateDescriptor("fleet", Types.STRING()))
        # Newest bridge receipt time of any heartbeat seen by this instance (FleetLogic.liveness_clock).
        # Not checkpointed: after a restore, silence is judged once replayed heartbeats advance it
        # (or, with no input at all, at the wall clock one offline_after late).
        self.frontier_ms = 0
        # How far the liveness clock trails the wall clock: the job's lag on heartbeats, which
        # adds to the time a silent gateway takes to be reported (docs/scale.md).
        runtime_context.get_metrics_group().gauge(
            "livenessLagMs", lambda: int(time.time() * 1000) - self.frontier_ms if self.frontier_ms else 0)

    def _load(self) -> dict[str, Any] | None:
        s = self.state.value()
        return json.loads(s) if s else None

    def _save(self, st: dict[str, Any] | None) -> None:
        if st is None:
            self.state.clear()
        else:
            self.state.update(json.dumps(st))

    def _emit(self, out: list[Record]) -> Any:
        from pyflink.common import Row  # noqa: PLC0415

        for kind, key, row in out:
            yield Row(kind, key, json.dumps(row))

    def process_element(self, value: Any, ctx: Any) -> Any:
        kind, key, body = value[0], value[1], json.loads(value[2])
        st = self._load()
        ts = ctx.timer_service()
        if kind == "heartbeat":
            # Silence counts from the bridge's receipt of the last heartbeat, not from this
            # (batched, later) arrival; bridge and job share a clock (same host, or NTP).
            seen = int(body["recv_ms"])
            self.frontier_ms = max(self.frontier_ms, seen)
            st, out = self.logic.on_heartbeat(st, key, body, seen)
            # One pending liveness timer per gateway, armed here only when none is, rather than
            # moved (delete + register) on every heartbeat: each timer call is a message to the
            # JVM. A timer that fires before the gateway is due re-arms itself for the rest
            # (on_liveness_check's ``again``).
            if st.get(TIMER) is None:
                st[TIMER] = int(st["last_seen_ms"]) + self.logic.offline_after_ms
                ts.register_processing_time_timer(st[TIMER])
        elif kind == "status":
            st, out = self.logic.on_status(st, key, body)
        elif kind == "label":
            st, out = self.logic.on_label(st, key, body)
        elif kind == "level" and self.levels is not None:  # key: levels:<site>/<gateway>/<sensor>
            st, out = self.levels.on_indicator(st, key.removeprefix("levels:"), body)
        elif kind == "bucket":
            st, out = self.logic.on_bucket(st, key, body)
            resolve_at = self.logic.resolve_due_ms(st)
            if resolve_at is not None:
                ts.register_event_time_timer(resolve_at)
        else:
            raise CloudError("cloud.job", f"keyed record kind {kind!r}", "route only heartbeat/status/bucket/label here")
        self._save(st)
        yield from self._emit(out)

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        from pyflink.datastream import TimeDomain  # noqa: PLC0415

        key = ctx.get_current_key()
        st = self._load()
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            if st is not None and st.get(TIMER) not in (None, timestamp):
                return  # superseded (one restored from an older job); the pending one decides
            if st is not None:
                st.pop(TIMER, None)
            st, out, again = self.logic.on_liveness_check(st, key, timestamp, self.frontier_ms)
            if again is not None and st is not None:  # heard from since it was armed, or the job lags
                st[TIMER] = again
                ctx.timer_service().register_processing_time_timer(again)
        else:
            st, out = self.logic.on_resolve_timer(st, key, timestamp)
        self._save(st)
        yield from self._emit(out)


# -- job assembly ----------------------------------------------------------------------------------

def spool_table(env: Any, tenv: Any, cfg: CloudConfig) -> Any:
    """Spool files in name order (CSV parsed in Java) as a table with an event-time watermark."""
    from pyflink.common import Duration, WatermarkStrategy  # noqa: PLC0415
    from pyflink.datastream.connectors.file_system import FileSource  # noqa: PLC0415
    from pyflink.datastream.formats.csv import CsvReaderFormat, CsvSchema  # noqa: PLC0415
    from pyflink.java_gateway import get_gateway  # noqa: PLC0415
    from pyflink.table import DataTypes, Schema  # noqa: PLC0415

    sb = CsvSchema.builder()
    for name, typ in SPOOL_COLUMNS:
        if typ == "STRING":
            sb.add_string_column(name)
        elif typ == "BOOLEAN":
            sb.add_boolean_column(name)
        else:
            sb.add_number_column(name, DataTypes.BIGINT() if typ == "BIGINT" else DataTypes.DOUBLE())
    csv = sb.set_null_value("").build()
    builder = FileSource.for_record_stream_format(CsvReaderFormat.for_schema(csv), str(Path(cfg.spool_dir).resolve()))
    builder.monitor_continuously(Duration.of_millis(cfg.job.file_monitor_ms))
    loader = get_gateway().jvm.java.lang.Thread.currentThread().getContextClassLoader()
    builder._j_file_source_builder.setSplitAssigner(loader.loadClass(ASSIGNER_CLASS).newInstance())
    # One reader: the assigner orders splits only if a single reader takes them one at a time.
    ds = (env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), "spool files")
          .uid("spool-source").set_parallelism(1))
    schema = (Schema.new_builder()
              .column_by_expression("rowtime", "TO_TIMESTAMP_LTZ(ev_ms, 3)")
              .column_by_expression("proc", "PROCTIME()")
              .watermark("rowtime", watermark_expr(cfg)).build())
    return tenv.from_data_stream(ds, schema)


def build(cfg: CloudConfig, restore: Path | None = None) -> Any:
    """Build the job graph; returns the StreamExecutionEnvironment (call ``execute``)."""
    require("pyflink", extra="cloud", feature="cloud job")
    from pyflink.common import Configuration, Types  # noqa: PLC0415
    from pyflink.datastream import StreamExecutionEnvironment  # noqa: PLC0415
    from pyflink.table import Schema, StreamTableEnvironment  # noqa: PLC0415

    Path(cfg.spool_dir).mkdir(parents=True, exist_ok=True)
    Path(cfg.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    Store(cfg.store_url).close()  # fail here, not in a worker, when the store is unusable
    conf = Configuration()
    for k, v in flink_config(cfg, restore).items():
        conf.set_string(k, v)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    tenv = StreamTableEnvironment.create(env)
    for k, v in flink_config(cfg, restore).items():
        if k.startswith(("table.", "python.")):
            tenv.get_config().set(k, v)
    tenv.create_temporary_view("spool", spool_table(env, tenv, cfg))
    for v in views(cfg):
        tenv.execute_sql(v)
    j = cfg.job
    logic = FleetLogic(offline_after_ms=int(j.offline_after_s * 1000), incident_k=j.incident_k,
                       incident_window_ms=int(j.incident_window_s * 1000), resolve_ms=int(j.incident_resolve_s * 1000),
                       retrain_min_windows=j.retrain_min_windows)
    plain = tenv.to_data_stream(tenv.sql_query(plain_query(cfg)))
    plain.flat_map(StoreWriter(cfg)).uid("store-plain").name("store: alerts, counts, dead letters").print()
    keyed = tenv.to_data_stream(tenv.sql_query(keyed_query(cfg)))
    # Rows straight in and out of the keyed operator: no Python map on either side (Row <-> tuple),
    # each of which was one more Python call and conversion per record on the fleet's bottleneck.
    named = Types.ROW_NAMED(["kind", "k", "body"], [Types.STRING()] * 3)
    rows = (keyed.key_by(lambda r: r[1], key_type=Types.STRING())
            .process(Fleet(logic, cfg.levels.logic()), output_type=named).uid("fleet")
            .name("fleet: liveness, inventory, incidents, levels"))
    # The fleet's records reach the store like alerts: batched per kind and batch_ms in SQL, one
    # transaction per batch (a gateway row per heartbeat batch each committed alone capped a
    # large fleet); a batch is one record, written whole or not at all before a checkpoint.
    tenv.create_temporary_view("fleet_out", tenv.from_data_stream(
        rows, Schema.new_builder().column_by_expression("proc", "PROCTIME()").build()))
    (tenv.to_data_stream(tenv.sql_query(fleet_batches_query(cfg)))
     .flat_map(StoreWriter(cfg)).uid("store-fleet").name("store: gateways, incidents, events").print())
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edgevib-cloud-job", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=None, help="TOML file (see docs/cloud.md)")
    p.add_argument("--restore", default=None, help="checkpoint path, or 'latest' for the newest in checkpoint_dir")
    p.add_argument("--parallelism", type=int, default=None,
                   help="override job.parallelism (restoring a savepoint at another parallelism rescales the job)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config)
    if args.parallelism is not None:
        cfg = dataclasses.replace(cfg, job=dataclasses.replace(cfg.job, parallelism=args.parallelism))
    restore: Path | None = None
    if args.restore == "latest":
        restore = latest_checkpoint(cfg.checkpoint_dir)
        log.info("restoring from %s", restore or "nothing (no checkpoint yet)")
    elif args.restore:
        restore = Path(args.restore)
    env = build(cfg, restore)
    env.execute(JOB_NAME)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
