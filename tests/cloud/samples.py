"""Sample wire messages the cloud tests feed to ingest, the bridge and the store."""

from __future__ import annotations

from edgevib.protocol import make_alert

T_NS = 1_700_000_000_000_000_000
RECV = T_NS // 1_000_000 + 50


def alert_doc(**kw: object) -> dict[str, object]:
    base: dict[str, object] = dict(site="p1", gateway="g1", sensor="de", kind="fault", state="raised", t_ns=T_NS,
                                   cls="OR014", probability=0.8)
    base.update(kw)
    return make_alert(**base)  # type: ignore[arg-type]


def verdict_doc(**kw: object) -> dict[str, object]:
    from edgevib.protocol.updates import make_status

    base: dict[str, object] = dict(site="p1", gateway="g1", update_id="cnn-2-ab", result="rolled_back",
                                   reason="probation_failed", t_ns=T_NS, detail="12 alerts in probation",
                                   manifest={"name": "cnn", "version": "2", "sha256": "ab" * 32})
    base.update(kw)
    return make_status(**base)  # type: ignore[arg-type]


def indicators_doc(**kw: object) -> dict[str, object]:
    from edgevib.protocol import make_indicators

    base: dict[str, object] = dict(
        site="p1", gateway="g1", sensor="de", asset="pump-3", t_ns=T_NS, duration_s=2.0, sample_rate=12000.0,
        acc_rms_g=0.29, acc_peak_g=1.57, crest=5.41, kurtosis=5.6, vel_rms_mm_s=3.1, iso_zone="C", iso_group=2,
        iso_foundation="rigid", env_db={"bpfo": 4.1, "bpfi": 27.2, "bsf2": 3.0, "ftf": 1.0}, rpm=1797.0,
        rpm_source="estimated", anomaly_ratio=None)
    base.update(kw)
    return make_indicators(**base)  # type: ignore[arg-type]
