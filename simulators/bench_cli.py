"""`nigehbaan bench …`: benchmarks that print one JSON line and save it in var/bench-results/.

Speed is measured here, never asserted in tests. Every run stays on loopback
and is bounded in presses and time. What the benchmarks share (the result
envelope, saving and printing it, the loopback stack) is
`simulators.bench_harness`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from simulators.bench_console import register_console
from simulators.bench_faces import register_faces
from simulators.bench_harness import add_output_options, publish, raise_fd_limit
from simulators.bench_ota import register as register_ota
from simulators.bench_watchlist import register_watchlist


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `bench` subcommand and its benchmarks."""
    parser = subparsers.add_parser("bench", help="benchmarks (JSON results)")
    sub = parser.add_subparsers(dest="bench_command", required=True)
    panic = sub.add_parser("panic", help="press → operator feed latency, delivery under chaos")
    panic.add_argument("--nodes", type=int, default=100, help="simulated nodes (1-20000)")
    panic.add_argument("--presses", type=int, default=100, help="presses in all (1-100000)")
    panic.add_argument(
        "--chaos", choices=["none", "broker-restart", "server-restart"], default="none"
    )
    panic.add_argument("--rate", type=float, default=50.0, help="presses per second")
    panic.add_argument("--work-dir", type=Path, help="keep broker/server/node state here")
    panic.add_argument(
        "--background-nodes",
        type=int,
        default=0,
        help="other nodes sending telemetry meanwhile, in child sim processes (0-20000)",
    )
    panic.add_argument(
        "--background-telemetry", type=float, default=30.0, help="their telemetry interval (s)"
    )
    panic.add_argument(
        "--cluster",
        action="store_true",
        help="through district brokers, their bridges, RabbitMQ and N workers (docs/cluster.md)",
    )
    panic.add_argument("--workers", type=int, default=2, help="with --cluster: workers (1-8)")
    panic.add_argument(
        "--rabbit-nodes", type=int, default=1, help="with --cluster: RabbitMQ nodes (1-5)"
    )
    panic.add_argument("--db", metavar="URL", help="with --cluster: PostgreSQL to use a schema of")
    panic.add_argument(
        "--background-on",
        help="with --cluster: 'spread' (default: half on each district broker) or 'north' "
        "(all on one, beside a quiet district)",
    )
    add_output_options(panic)
    panic.set_defaults(func=_panic)
    ingest = sub.add_parser("ingest", help="server ingest rate vs. the broker's own rate")
    ingest.add_argument("--events", type=int, default=20_000, help="events per phase (1-90000)")
    ingest.add_argument("--nodes", type=int, default=500, help="nodes the events come from")
    ingest.add_argument("--publishers", type=int, default=4, help="publishing connections")
    ingest.add_argument("--work-dir", type=Path, help="keep broker/server state here")
    ingest.add_argument(
        "--db",
        metavar="URL",
        help="the server's database: default a SQLite file; postgresql://…@127.0.0.1/db "
        "runs in a throwaway schema (loopback only)",
    )
    ingest.add_argument(
        "--ack-hold",
        type=float,
        metavar="SECONDS",
        help="the server's ingest_ack_hold_s (0-5; 0 = ack every batch at once)",
    )
    ingest.add_argument(
        "--cluster",
        action="store_true",
        help="through district brokers bridged into RabbitMQ and N workers (docs/cluster.md); "
        "--db is then a PostgreSQL server (default postgres@127.0.0.1:5432/postgres)",
    )
    ingest.add_argument("--workers", type=int, default=3, help="with --cluster: workers (1-8)")
    ingest.add_argument(
        "--rabbit-nodes", type=int, default=1, help="with --cluster: RabbitMQ nodes (1-5)"
    )
    add_output_options(ingest)
    ingest.set_defaults(func=_ingest)
    pipeline = sub.add_parser("pipeline", help="camera pipeline: motion gate fps, stage ms, press")
    pipeline.add_argument("--frames", type=int, default=300, help="frames per gate run (10-10000)")
    pipeline.add_argument("--repeats", type=int, default=3, help="runs of each measurement (1-20)")
    pipeline.add_argument("--presses", type=int, default=15, help="presses idle and busy (1-200)")
    pipeline.add_argument("--detector-delay", type=float, default=0.2, help="busy detector s/call")
    pipeline.add_argument("--detector", help="detector plugin for the stage figures")
    pipeline.add_argument("--reader", help="reader plugin for the stage figures")
    pipeline.add_argument("--work-dir", type=Path, help="keep the node's state here")
    add_output_options(pipeline)
    pipeline.set_defaults(func=_pipeline)
    capacity = sub.add_parser("sim-capacity", help="nodes per sim process, memory, idle CPU")
    capacity.add_argument(
        "--sizes", default="1000,2500,4500", help="fleet sizes to try, comma-separated"
    )
    capacity.add_argument("--idle", type=float, default=30.0, help="idle seconds measured")
    add_output_options(capacity)
    capacity.set_defaults(func=_capacity)
    anpr = sub.add_parser("anpr", help="plate detection and reading: exact rate, ms per read")
    anpr.add_argument("--images", type=Path, required=True, help="folder of images")
    anpr.add_argument(
        "--truth", type=Path, required=True, help="folder of openalpr .txt files, or file,plate CSV"
    )
    anpr.add_argument("--rules", default="pk", help="pk, br, generic, or a rules file")
    anpr.add_argument(
        "--detect",
        choices=["auto", "always", "never"],
        default="auto",
        help="auto: CSV images up to 640 px are crops, read without detection",
    )
    anpr.add_argument("--det-side", type=int, default=960, help="detector input long side (px)")
    anpr.add_argument(
        "--province",
        default=None,
        help="truth province of every image without its own (a folder of one province's plates)",
    )
    add_output_options(anpr)
    anpr.set_defaults(func=_anpr)
    register_console(sub)  # `bench console`: the fleet map's cost (simulators/bench_console.py)
    register_faces(sub)  # `bench faces`: face verification (simulators/bench_faces.py)
    register_ota(sub)  # `bench ota`: a signed rollout (simulators/bench_ota.py)
    register_watchlist(sub)  # `bench watchlist`: hotlists (simulators/bench_watchlist.py)


def _panic(args: argparse.Namespace) -> int:
    from simulators.bench_panic import PanicBenchConfig, run_panic_bench

    if not 1 <= args.nodes <= 20_000 or not 1 <= args.presses <= 100_000 or args.rate <= 0:
        print("bench panic: --nodes 1-20000, --presses 1-100000, --rate > 0", file=sys.stderr)
        return 2
    if not 0 <= args.background_nodes <= 20_000 or not 1 <= args.background_telemetry <= 3600:
        print(
            "bench panic: --background-nodes 0-20000, --background-telemetry 1-3600",
            file=sys.stderr,
        )
        return 2
    # The broker inherits this limit and holds a socket per node, background ones too.
    raise_fd_limit(args.nodes * 4 + args.background_nodes + 1024)
    if args.cluster:
        return _panic_cluster(args)
    if args.background_on is not None:
        print("bench panic: --background-on needs --cluster", file=sys.stderr)
        return 2
    config = PanicBenchConfig(
        nodes=args.nodes,
        presses=args.presses,
        chaos=args.chaos,
        press_rate=args.rate,
        work_dir=args.work_dir,
        background_nodes=args.background_nodes,
        background_telemetry_s=args.background_telemetry,
    )
    result = asyncio.run(run_panic_bench(config))
    publish(result, args)
    return 0 if result["lost"] == 0 and result["duplicate_alerts"] == 0 else 1


def _panic_cluster(args: argparse.Namespace) -> int:
    from simulators.bench_cluster import (
        BACKGROUND_ON,
        ClusterPanicConfig,
        run_cluster_panic_bench,
    )

    db = args.db or "postgresql://postgres@127.0.0.1:5432/postgres"
    if not 1 <= args.workers <= 8 or not 1 <= args.rabbit_nodes <= 5 or args.chaos != "none":
        print(
            "bench panic --cluster: --workers 1-8, --rabbit-nodes 1-5, no --chaos",
            file=sys.stderr,
        )
        return 2
    if not db.startswith("postgresql"):
        print("bench panic --cluster: --db must be a PostgreSQL URL", file=sys.stderr)
        return 2
    background_on = args.background_on or "spread"
    if background_on not in BACKGROUND_ON:
        print(
            f"bench panic --cluster: --background-on {' or '.join(BACKGROUND_ON)}, "
            f"not {background_on!r}",
            file=sys.stderr,
        )
        return 2
    config = ClusterPanicConfig(
        db_url=db, nodes=args.nodes, presses=args.presses, press_rate=args.rate,
        background_nodes=args.background_nodes,
        background_telemetry_s=args.background_telemetry, background_on=background_on,
        workers=args.workers, rabbit_nodes=args.rabbit_nodes, work_dir=args.work_dir,
    )  # fmt: skip
    result = run_cluster_panic_bench(config)
    publish(result, args)
    failed = result["lost"] or result["duplicate_alerts"] or result["not_on_feed"]
    return 1 if failed else 0


def _ingest(args: argparse.Namespace) -> int:
    if args.cluster:
        return _ingest_cluster(args)
    from simulators.bench_ingest import IngestBenchConfig, run_ingest_bench

    if not 1 <= args.events <= 90_000 or not 1 <= args.nodes <= 20_000:
        print("bench ingest: --events 1-90000, --nodes 1-20000", file=sys.stderr)
        return 2
    if not 1 <= args.publishers <= 32:
        print("bench ingest: --publishers 1-32", file=sys.stderr)
        return 2
    if args.ack_hold is not None and not 0 <= args.ack_hold <= 5:
        print("bench ingest: --ack-hold 0-5 seconds", file=sys.stderr)
        return 2
    from simulators.bench_ingest import IngestBenchError, check_bench_database

    if args.db is not None:
        try:
            check_bench_database(args.db)
        except IngestBenchError as exc:
            print(f"bench ingest: {exc}", file=sys.stderr)
            return 2
    config = IngestBenchConfig(
        db_url=args.db,
        events=args.events,
        nodes=args.nodes,
        publishers=args.publishers,
        work_dir=args.work_dir,
        ack_hold_s=args.ack_hold,
    )
    result = run_ingest_bench(config)
    publish(result, args)
    return 0 if result["lost"] == 0 else 1


def _ingest_cluster(args: argparse.Namespace) -> int:
    from simulators.bench_cluster import ClusterBenchConfig, run_cluster_bench

    if not 1 <= args.workers <= 8 or not 1 <= args.rabbit_nodes <= 5:
        print("bench ingest --cluster: --workers 1-8, --rabbit-nodes 1-5", file=sys.stderr)
        return 2
    if not 1 <= args.events <= 90_000 or not 1 <= args.nodes <= 20_000:
        print("bench ingest: --events 1-90000, --nodes 1-20000", file=sys.stderr)
        return 2
    db = args.db or "postgresql://postgres@127.0.0.1:5432/postgres"
    if not db.startswith("postgresql"):
        print("bench ingest --cluster: --db must be a PostgreSQL URL", file=sys.stderr)
        return 2
    result = run_cluster_bench(
        ClusterBenchConfig(
            db_url=db, workers=args.workers, events=args.events, nodes=args.nodes,
            rabbit_nodes=args.rabbit_nodes, work_dir=args.work_dir,
        )
    )  # fmt: skip
    publish(result, args)
    return 0 if result["lost"] == 0 else 1


def _pipeline(args: argparse.Namespace) -> int:
    from simulators.bench_pipeline import PipelineBenchConfig, run_pipeline_bench

    if not (10 <= args.frames <= 10_000 and 1 <= args.repeats <= 20 and 1 <= args.presses <= 200):
        print("bench pipeline: --frames 10-10000, --repeats 1-20, --presses 1-200", file=sys.stderr)
        return 2
    config = PipelineBenchConfig(
        frames=args.frames,
        repeats=args.repeats,
        presses=args.presses,
        detector_delay_s=args.detector_delay,
        detector=args.detector,
        reader=args.reader,
        work_dir=args.work_dir,
    )
    result = run_pipeline_bench(config)
    publish(result, args)
    return 0


def _capacity(args: argparse.Namespace) -> int:
    from simulators.bench_capacity import run_capacity_bench

    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or not all(1 <= n <= 20_000 for n in sizes) or not 1 <= args.idle <= 600:
        print("bench sim-capacity: --sizes N,N,... each 1-20000; --idle 1-600", file=sys.stderr)
        return 2
    result = run_capacity_bench(sizes=sorted(sizes), idle_s=args.idle)
    publish(result, args)
    return 0 if result["max_nodes_held"] > 0 else 1


def _anpr(args: argparse.Namespace) -> int:
    from edge_agent.anpr.errors import AnprError
    from simulators.bench_anpr import AnprBenchError, run_anpr_bench

    if not 160 <= args.det_side <= 2048:
        print("bench anpr: --det-side 160-2048", file=sys.stderr)
        return 2
    try:
        result = run_anpr_bench(
            images=args.images,
            truth_path=args.truth,
            rules=args.rules,
            detect=args.detect,
            det_side=args.det_side,
            province=args.province,
        )
    except (AnprBenchError, AnprError) as exc:
        print(f"bench anpr: {exc}", file=sys.stderr)
        return 2
    publish(result, args)
    return 0
