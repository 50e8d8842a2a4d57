"""Issue 19, cloud ingest: dead letters rate-limited per gateway, the spool within its disk quota."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from edgevib.cloud.config import load_config
from edgevib.cloud.ingest.bridge import SPOOL_SUFFIX, Bridge
from edgevib.cloud.ingest.records import SPOOL_COLUMN_NAMES
from edgevib.cloud.ingest.spool_guard import SUMMARY_REASON, DeadLetterLimiter, SpoolQuota

from edgevib.errors import ConfigError
from edgevib.protocol import dumps, make_alert


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_limiter_per_gateway_refills_and_reports_suppressed() -> None:
    clock = Clock()
    lim = DeadLetterLimiter(per_min=60, total_per_min=600, summary_s=60, clock=clock)
    a = [lim.allow("p1/flood") for _ in range(1000)]
    assert sum(a) == 60 and lim.suppressed_total == 940
    assert all(lim.allow("p1/quiet") for _ in range(60)), "one gateway's flood does not spend another's budget"
    clock.t += 10  # 10 s refill 10 tokens
    assert sum(lim.allow("p1/flood") for _ in range(100)) == 10
    assert lim.due() == [] and not lim.due_soon()
    clock.t += 60
    due = lim.due()
    assert [(k, n) for k, n, _, _ in due] == [("p1/flood", 1030)]
    assert lim.due(force=True) == [], "counts reset after a summary"


def test_limiter_total_cap_and_bounded_memory() -> None:
    clock = Clock()
    lim = DeadLetterLimiter(per_min=10, total_per_min=100, summary_s=60, clock=clock, max_tracked=50)
    allowed = sum(lim.allow(f"p1/invented-{i % 500}") for i in range(5000))
    assert allowed == 100, "invented gateway names share the total budget"
    assert len(lim._buckets) == 50
    due = lim.due(force=True)
    assert sum(n for _, n, _, _ in due) == 4900, "evicted gateways' counts are reported, not lost"


def test_config_keys_validated() -> None:
    with pytest.raises(ConfigError, match="bridge.spool_max_bytes=1000.*1 MiB"):
        load_config(None, env={"EDGEVIB_BRIDGE__SPOOL_MAX_BYTES": "1000"})
    with pytest.raises(ConfigError, match="dead_letters_total_per_min=5.0"):
        load_config(None, env={"EDGEVIB_BRIDGE__DEAD_LETTERS_TOTAL_PER_MIN": "5"})
    with pytest.raises(ConfigError, match="bridge.dead_letters_per_min=0"):
        load_config(None, env={"EDGEVIB_BRIDGE__DEAD_LETTERS_PER_MIN": "0"})


def test_quota_deletes_only_consumed_files_oldest_first(tmp_path: Path) -> None:
    for i in range(10):
        p = tmp_path / f"2024{i:02d}-run-{i:08d}.csv"
        p.write_bytes(b"x" * 1000)
        os.utime(p, (1000 + i, 1000 + i))
    consumed = {"before": None}
    q = SpoolQuota(tmp_path, 10_500, lambda: consumed["before"])
    assert q.used == 10_000
    assert not q.make_room(2000), "nothing known consumed: nothing deleted"
    assert len(list(tmp_path.glob("*.csv"))) == 10
    consumed["before"] = 1003.5  # files 0..3 consumed
    assert q.make_room(2000)
    left = sorted(p.name for p in tmp_path.glob("*.csv"))
    assert left[0].endswith("00000002.csv") and len(left) == 8, "the two oldest went, no more than needed"
    assert not q.make_room(8000), "unconsumed files are never deleted"
    assert len(list(tmp_path.glob("*.csv"))) == 6


def _bridge(tmp_path: Path, consumed: dict[str, float | None], **bridge: object) -> tuple[Bridge, Clock]:
    over = {"spool_dir": tmp_path / "spool", "checkpoint_dir": tmp_path / "chk", "bridge": bridge}
    cfg = load_config(None, overrides=over)
    clock = Clock(time.time())
    return Bridge(cfg, clock=clock, consumed_before=lambda: consumed["before"]), clock


def _alert(i: int, gateway: str = "good") -> bytes:
    return dumps(make_alert(site="p1", gateway=gateway, sensor="de", kind="fault", state="raised",
                            t_ns=1_700_000_000_000_000_000 + i * 1_000_000, cls="IR007", probability=0.9,
                            physics="IR", agree=True))


def _rows(spool: Path) -> list[dict[str, str]]:
    import csv  # noqa: PLC0415

    out = []
    for p in sorted(spool.glob(f"*{SPOOL_SUFFIX}")):
        for cells in csv.reader(p.read_text().splitlines()):
            out.append(dict(zip(SPOOL_COLUMN_NAMES, cells, strict=False)))
    return out


def test_bridge_rate_limits_dead_letters_and_writes_a_summary(tmp_path: Path) -> None:
    b, clock = _bridge(tmp_path, {"before": None}, dead_letters_per_min=50)
    now_ms = int(clock() * 1000)
    bad = [("edgevib/v1/p1/flood/alerts", b"{not json", now_ms, i, 1) for i in range(10_000)]
    good = [("edgevib/v1/p1/good/alerts", _alert(i), now_ms, 20_000 + i, 1) for i in range(100)]
    b._write(bad[:5000] + good + bad[5000:])
    rows = _rows(b.spool)
    assert sum(r["kind"] == "alert" for r in rows) == 100
    assert sum(r["kind"] == "dead" for r in rows) == 50
    assert b.stats.dead_suppressed == 9950
    clock.t += 61
    b._write([], final=False)
    summary = [r for r in _rows(b.spool) if r["reason"] == SUMMARY_REASON]
    assert len(summary) == 1 and summary[0]["gateway"] == "flood" and summary[0]["detail"].startswith("9950 dead letters")


def test_bridge_over_quota_drops_dead_letters_never_alerts(tmp_path: Path) -> None:
    consumed: dict[str, float | None] = {"before": None}
    b, clock = _bridge(tmp_path, consumed, dead_letters_per_min=1e6, dead_letters_total_per_min=1e6,
                       spool_max_bytes=2**20)
    now_ms = int(clock() * 1000)
    big = b"{" + b"x" * 999  # each dead letter line carries ~1 kB of raw payload
    for k in range(6):
        batch = [("edgevib/v1/p1/flood/alerts", big, now_ms, i, 1) for i in range(500)]
        batch += [("edgevib/v1/p1/good/alerts", _alert(k * 10 + i), now_ms, 9000 + i, 1) for i in range(10)]
        b._write(batch)
    used = sum(p.stat().st_size for p in b.spool.glob("*.csv"))
    assert used <= 2**20, "within quota: dead letters fill at most 90 %, alerts the rest"
    assert b.stats.dead_over_quota >= 1000
    assert sum(r["kind"] == "alert" for r in _rows(b.spool)) == 60, "every alert spooled"
    # Once the job consumed the old files, they make room again and dead letters are written.
    consumed["before"] = time.time() + 1
    dropped = b.stats.dead_over_quota
    b._write([("edgevib/v1/p1/flood/alerts", big, now_ms, 1, 1) for _ in range(700)])
    assert b.stats.dead_over_quota == dropped and b.stats.quota_freed_files >= 1
    assert sum(p.stat().st_size for p in b.spool.glob("*.csv")) <= 2**20
