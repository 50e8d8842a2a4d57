"""``edgevib agent`` and ``edgevib stream``: registered into the core CLI by :func:`register`."""

from __future__ import annotations

import argparse
import gc
import importlib.resources
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from edgevib.edge.config import DEFAULT_MODEL, AgentConfig, describe, load_agent_config
from edgevib.edge.errors import ModelError

from edgevib.errors import ConfigError

log = logging.getLogger(__name__)


def model_path(configured: str) -> Path:
    """The configured model file, or the packaged default (``edgevib.models`` / ``DEFAULT_MODEL``)."""
    if configured:
        return Path(configured).expanduser()
    p = Path(str(importlib.resources.files("edgevib.models").joinpath(DEFAULT_MODEL)))
    if not p.is_file():
        raise ModelError("edge.agent", f"default model {DEFAULT_MODEL} is not installed at {p}",
                         "pass --model PATH.onnx, or build the zoo with `make models`")
    return p


def run_agent(cfg: AgentConfig, stop: threading.Event | None = None) -> int:
    """Load the model, connect, run until SIGTERM/SIGINT (or ``stop``), flush, disconnect."""
    from edgevib.edge import adapters
    from edgevib.edge.agent import Agent
    from edgevib.edge.ota.updater import load_active
    from edgevib.edge.outbox import Outbox
    from edgevib.edge.runtime import OnnxModel

    from edgevib import protocol as proto

    # a model pushed earlier (update.model_dir/current.json) wins over the configured file
    model = load_active(cfg) or OnnxModel(model_path(cfg.model), threads=cfg.threads)
    topics = proto.Topics(cfg.site, cfg.gateway)
    outbox = Outbox(cfg.outbox.path, max_rows=cfg.outbox.max_rows)
    outbox.expire(cfg.outbox.max_age_s)
    link, source = adapters.build(cfg, topics)  # [sink] and [source] by type (default: one MQTT session)
    agent = Agent(cfg, model, link, outbox, source=source)
    link.start()  # after the agent subscribed: the subscriptions go out with the first connect
    if source is not None:
        source.start()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    if outbox_rows := len(outbox):
        log.info("outbox holds %d unsent alerts from before: they go out first", outbox_rows)
    # What exists now (modules, the model, the config) lives as long as the process. Frozen out
    # of the cyclic collector's sight, a full collection no longer walks its ~40,000 objects:
    # ~10 ms on the dev VM, a stall that every window waiting behind it pays (one every ~20 s
    # at 100 sensors). Only as the process's own loop: a caller's thread keeps its collector.
    frozen = threading.current_thread() is threading.main_thread()
    if frozen:
        gc.freeze()
    try:
        agent.run(stop)
    finally:
        if frozen:
            gc.unfreeze()
        if source is not None:
            source.close()
        link.close()
        outbox.close()
    log.info("agent stopped cleanly")
    return 0


def _cmd_agent(args: argparse.Namespace) -> int:
    cfg = load_agent_config(args.config, broker_url=args.broker, site=args.site, gateway=args.gateway,
                            model=str(args.model) if args.model else None, threads=args.threads,
                            batch_size=args.batch_size, heartbeat_s=args.heartbeat, client_id=args.client_id,
                            outbox={"path": str(args.outbox)} if args.outbox else None)
    return run_agent(cfg)


def _cmd_stream(args: argparse.Namespace) -> int:
    from edgevib.edge import stream
    from edgevib.edge.mqtt import MqttLink

    from edgevib import protocol as proto

    if (args.replay is None) == (args.simulate is None):
        raise ConfigError("edge.stream", "need exactly one of --replay FILE and --simulate N",
                          "pass --replay FILE.npz|.mat or --simulate N")
    if args.frame < 16 or args.frame > 65536:
        raise ConfigError("edge.stream", f"--frame {args.frame}", "use 16..65536 samples (e.g. 4096)")
    rate = 1.0 if args.realtime else args.rate
    if rate < 0:
        raise ConfigError("edge.stream", f"--rate {rate}", "use 0 (as fast as possible) or a positive factor")
    topics = proto.Topics(args.site, args.gateway)
    proto.check_name(args.sensor, "sensor")
    link = MqttLink(args.broker, f"edgevib-stream-{args.sensor}")
    try:
        stream.wait_connected(link, 10.0)
        if args.replay is not None:
            rec = stream.load_replay(args.replay)  # samples and rate only: labels are not needed to stream
            n = stream.stream_recording(link, topics, args.sensor, rec, frame=args.frame, dtype=args.dtype, rate=rate)
            print(f"sent {n} frames of {args.frame} samples ({rec.source}, {rec.fs:g} Hz{', ' + rec.label if rec.label else ''})")
        else:
            names = [args.sensor] if args.simulate == 1 else [f"{args.sensor}-{i}" for i in range(args.simulate)]
            n = stream.stream_simulated(link, topics, names, args.fault, duration_s=args.duration,
                                        onset_s=args.onset, rpm=args.rpm, frame=args.frame, dtype=args.dtype,
                                        rate=1.0 if args.rate == 0 and not args.realtime else rate)
            print(f"sent {n} frames of {args.frame} samples from {len(names)} simulated sensors ({args.fault})")
    finally:
        link.close()
    return 0


def register(subparsers: Any) -> None:
    """Add ``agent`` and ``stream`` to the ``edgevib`` command."""
    a = subparsers.add_parser(
        "agent", help="run the edge agent: frames in over MQTT, alerts out",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Take frames from the source ([source] type, default mqtt: "
                    "edgevib/v1/<site>/<gateway>/sensors/+/raw), discover sensors as they publish, classify "
                    "windows with an ONNX model and publish confirmed alerts to the sink ([sink] type).",
        epilog=describe() + "\n\nFlags override the environment, which overrides the TOML file.")
    a.add_argument("--config", type=Path, help="TOML file (keys below)")
    a.add_argument("--broker", help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    a.add_argument("--site")
    a.add_argument("--gateway")
    a.add_argument("--model", type=Path, help=f"ONNX model (default: packaged {DEFAULT_MODEL})")
    a.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    a.add_argument("--batch-size", type=int)
    a.add_argument("--heartbeat", type=float, help="heartbeat interval, seconds")
    a.add_argument("--outbox", type=Path, help="SQLite outbox file")
    a.add_argument("--client-id")
    a.set_defaults(func=_cmd_agent)

    s = subparsers.add_parser("stream", help="publish a recording or simulated bearings as vibration frames")
    s.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    s.add_argument("--site", required=True)
    s.add_argument("--gateway", required=True)
    s.add_argument("--sensor", default="de", help="sensor name (with --simulate N > 1: NAME-0 .. NAME-(N-1))")
    s.add_argument("--replay", type=Path, help="a CWRU .mat or .npz file, sent at its own sample rate")
    s.add_argument("--simulate", type=int, metavar="N", help="N simulated 12 kHz sensors")
    s.add_argument("--fault", choices=("normal", "IR", "OR", "B"), default="normal")
    s.add_argument("--onset", type=float, default=0.0, help="simulated fault starts after S seconds")
    s.add_argument("--duration", type=float, default=0.0, help="simulated seconds (0: until interrupted)")
    s.add_argument("--rpm", type=float, default=1797.0, help="simulated shaft speed")
    pace = s.add_mutually_exclusive_group()
    pace.add_argument("--realtime", action="store_true", help="send at real time (rate 1)")
    pace.add_argument("--rate", type=float, default=0.0,
                      help="x real time; 0 = as fast as possible (replay) / real time (simulate)")
    s.add_argument("--frame", type=int, default=4096, help="samples per frame")
    s.add_argument("--dtype", choices=("int16", "float32"), default="int16")
    s.set_defaults(func=_cmd_stream)
