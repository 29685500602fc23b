"""`nigehbaan bench watchlist`: hotlist matching on the node, false look-alike hits, hit → alert.

Three measurements, one JSON line (simulators/bench_harness.py):

- ``matching``: for hotlists of each size (default 1k, 10k and 100k plates;
  a bundle carries at most `proto.watchlist.MAX_BUNDLE_PLATES`, so a larger
  hotlist is several signed lists held at once), signed by a throw-away
  development PKI and installed in the node's real `WatchlistStore`
  (signature check and index: ``install_ms``), the time per
  `WatchlistStore.match_plate` call (``{p50, p99}`` µs and calls/s) for
  three kinds of read: a listed plate (an exact hit), a listed plate with one
  character swapped for a look-alike (a confusable hit), and a random plate
  not on the list (the common case: no hit, and the costliest, since every
  one-look-alike variant is tried). Each kind also counts how many reads got
  the answer they should (``found``).
- ``false_confusable``: for each size, a random set of plates not on the
  list, and how many of them still match a listed plate one look-alike
  character away: the hits an operator would have to reject.
- ``end_to_end`` (unless ``--no-e2e``): a real Mosquitto, a real ``nigehbaan
  server`` process and the real node agent over MQTT, holding a signed
  1,000-plate list. The node matches a read and writes the hit through its
  durable outbox; the time is from that write to the alert on the operator's
  SSE feed (``{p50, p95, p99, max}`` ms), with how many hits arrived.

Plates are drawn from a seeded generator in Pakistani shapes (``LEB6881``,
``KHI123``, ``ICT8812``…), so two runs with one ``--seed`` measure the same
lists. Figures go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import statistics
import string
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from simulators.bench_harness import (
    add_output_options,
    bench_result,
    bench_server,
    bench_work_dir,
    loopback_broker,
    publish,
)

__all__ = ["register_watchlist", "run_watchlist_bench"]

DEFAULT_SIZES = (1_000, 10_000, 100_000)
LETTERS = string.ascii_uppercase
DISTRICT = "lahore"
WATCHLIST = "bench-stolen"


# ------------------------------------------------------------------ plates


def random_plate(rng: random.Random) -> str:
    """A canonical key in one of the common Pakistani shapes."""
    shape = rng.random()
    if shape < 0.6:  # Punjab: three letters, three or four digits (LEB6881)
        return "".join(rng.choices(LETTERS, k=3)) + str(rng.randint(100, 9999))
    if shape < 0.9:  # Sindh / Islamabad: two or three letters, three or four digits
        return "".join(rng.choices(LETTERS, k=rng.choice((2, 3)))) + str(rng.randint(100, 9999))
    return "".join(rng.choices(LETTERS, k=2)) + str(rng.randint(10, 99)) + rng.choice(LETTERS)


def unique_plates(rng: random.Random, count: int, *, avoid: set[str] | None = None) -> list[str]:
    """`count` different plates, none in `avoid`."""
    seen: set[str] = set(avoid or ())
    out: list[str] = []
    while len(out) < count:
        plate = random_plate(rng)
        if plate not in seen:
            seen.add(plate)
            out.append(plate)
    return out


def one_lookalike_off(rng: random.Random, key: str, listed: set[str]) -> str | None:
    """`key` with one character swapped for a look-alike, not itself listed; None if none."""
    from proto.plates import lookalikes

    spots = [(i, other) for i, ch in enumerate(key) for other in lookalikes(ch)]
    rng.shuffle(spots)
    for i, other in spots:
        variant = key[:i] + other + key[i + 1 :]
        if variant not in listed:
            return variant
    return None


# ---------------------------------------------------------------- signing


class _Signing:
    """A throw-away development PKI: signs bundles, and the chain a node trusts."""

    def __init__(self, work: Path, now: datetime) -> None:
        from cryptography import x509

        from fleet_server.pki.store import PkiPaths, init_dev_pki
        from fleet_server.watchlists.signing import WatchlistSigner

        paths = PkiPaths(work / "pki")
        init_dev_pki(paths, passphrase=b"bench-watchlist", now=now)
        self.signer = WatchlistSigner.from_pki(paths, now=now)
        self.trusted = list(x509.load_pem_x509_certificates(paths.chain.read_bytes()))

    def bundles(self, keys: Sequence[str], *, now: datetime, name: str = WATCHLIST) -> list[str]:
        """The hotlist as signed bundle texts (several when it exceeds one bundle)."""
        from fleet_server.watchlists.signing import sign_bundle
        from proto.watchlist import MAX_BUNDLE_PLATES, WatchlistBody, WatchlistPlate

        texts = []
        for part, start in enumerate(range(0, len(keys), MAX_BUNDLE_PLATES)):
            chunk = keys[start : start + MAX_BUNDLE_PLATES]
            body = WatchlistBody(
                watchlist_id=name if part == 0 else f"{name}-{part}", version=1,
                category="stolen_vehicle", purpose="benchmark", owner_agency="bench",
                issued_at=now, expires_at=now + timedelta(days=1), districts=[DISTRICT],
                plates=[WatchlistPlate(entry_id=f"e{start + i}", key=k)
                        for i, k in enumerate(chunk)],
            )  # fmt: skip
            texts.append(sign_bundle(body, signer=self.signer).model_dump_json())
        return texts


# ---------------------------------------------------------------- matching


def _timed(store: Any, reads: Sequence[str], now: datetime, want: str | None) -> dict[str, Any]:
    """µs per `match_plate` call over `reads`, and how many got the `want` answer."""
    times: list[float] = []
    found = 0
    started = time.perf_counter()
    for read in reads:
        t0 = time.perf_counter_ns()
        matches = store.match_plate(read, now=now)
        times.append((time.perf_counter_ns() - t0) / 1000.0)
        kinds = {m.match for m in matches}
        if (want is None and not matches) or (want is not None and want in kinds):
            found += 1
    total = time.perf_counter() - started
    quantiles = statistics.quantiles(times, n=100, method="inclusive")
    return {
        "reads": len(reads),
        "found": found,
        "us": {"p50": round(quantiles[49], 2), "p99": round(quantiles[98], 2)},
        "per_s": round(len(reads) / total) if total > 0 else None,
    }


def run_matching(
    *, work: Path, sizes: Sequence[int], reads: int, clean: int, seed: int
) -> dict[str, Any]:
    """The ``matching`` and ``false_confusable`` figures (see the module docstring)."""
    from edge_agent.watchlist import WatchlistStore

    now = datetime.now(timezone.utc)
    signing = _Signing(work, now)
    rng = random.Random(seed)
    universe = unique_plates(rng, max(sizes))
    matching: dict[str, Any] = {}
    false_hits: dict[str, Any] = {}
    for size in sizes:
        keys = universe[:size]
        listed = set(keys)
        texts = signing.bundles(keys, now=now)
        store = WatchlistStore(trusted=signing.trusted, district=DISTRICT)
        started = time.perf_counter()
        for text in texts:
            store.install(text, now=now)
        install_ms = (time.perf_counter() - started) * 1000.0
        exact = [rng.choice(keys) for _ in range(reads)]
        swapped = [v for v in (one_lookalike_off(rng, rng.choice(keys), listed)
                               for _ in range(reads)) if v is not None]  # fmt: skip
        random_set = unique_plates(rng, clean, avoid=listed)
        matching[str(size)] = {
            "bundles": len(texts),
            "bundle_bytes": sum(len(t) for t in texts),
            "install_ms": round(install_ms, 1),
            "exact": _timed(store, exact, now, "exact"),
            "confusable": _timed(store, swapped, now, "confusable"),
            "clean": _timed(store, random_set, now, None),
        }
        wrong = sum(1 for plate in random_set if store.match_plate(plate, now=now))
        false_hits[str(size)] = {
            "random_plates": len(random_set),
            "false_confusable_matches": wrong,
            "rate": round(wrong / len(random_set), 6) if random_set else None,
        }
    return {"matching": matching, "false_confusable": false_hits}


# -------------------------------------------------------------- end to end


async def _end_to_end(*, work: Path, hits: int, interval_s: float, seed: int) -> dict[str, Any]:
    import httpx

    from edge_agent.config import config_from_dict
    from edge_agent.node import build_node
    from edge_agent.outbox import StoredEvent
    from edge_agent.watchlist import WatchlistStore, write_hits
    from hardware import SimBackend
    from proto.ids import new_event_id
    from proto.messages import PlateEvent
    from simulators.sse import alert_feed

    now = datetime.now(timezone.utc)
    signing = _Signing(work / "e2e", now)
    keys = unique_plates(random.Random(seed), 1_000)
    store = WatchlistStore(trusted=signing.trusted, district=DISTRICT)
    for text in signing.bundles(keys, now=now):
        store.install(text, now=now)
    with loopback_broker(work) as broker:
        server = bench_server(work=work, broker_url=broker.url)
        password = secrets.token_urlsafe(12)
        made = server.run_cli(
            "--create-admin", "bench", "--password-env", "NB_PW", env={"NB_PW": password}
        )
        if made.returncode != 0:
            raise RuntimeError(f"could not create the bench admin: {made.stderr.strip()}")
        server.start()
        try:
            token = server.login("bench", password)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as api:
                answer = await api.post(
                    "/api/v1/watchlists", headers={"Authorization": f"Bearer {token}"},
                    json={"name": WATCHLIST, "category": "stolen_vehicle",
                          "purpose": "benchmark", "owner_agency": "bench",
                          "districts": [DISTRICT],
                          "expires_at": (now + timedelta(days=1)).isoformat()},
                )  # fmt: skip
                answer.raise_for_status()
            config = config_from_dict(
                {
                    "node_id": "lhr-bench-wl-0001", "serial": "SN-BENCH-WL",
                    "district": DISTRICT, "site_id": "bench-site",
                    "data_dir": str(work / "node"), "hardware": {"type": "sim"},
                    "mqtt": {"url": broker.url, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
                }
            )  # fmt: skip
            node = build_node(config, backend=SimBackend(), renewal=False)
            written: dict[str, float] = {}

            def on_written(stored: StoredEvent) -> None:
                written.setdefault(stored.event_id, time.perf_counter())

            node.add_listener(on_written)
            up = asyncio.Event()
            node.subscribe(lambda signal: up.set() if signal.kind == "connected" else None)
            arrived: dict[str, float] = {}
            connected = asyncio.Event()

            async def watch() -> None:
                async for item in alert_feed(server.base_url, token, connected=connected):
                    alert = item.data.get("alert") or {}
                    if item.data.get("op") == "created" and alert.get("type") == "watchlist_hit":
                        arrived.setdefault(str(item.data.get("event_id")), time.perf_counter())

            feed = asyncio.ensure_future(watch())
            task = asyncio.ensure_future(node.run())
            try:
                await asyncio.wait_for(connected.wait(), 30)
                await asyncio.wait_for(up.wait(), 30)
                rng = random.Random(seed + 1)
                for i in range(hits):
                    plate = rng.choice(keys)
                    event = PlateEvent(
                        node_id=config.node_id, ts=datetime.now(timezone.utc),
                        event_id=new_event_id(), seq=0, camera_id="gate", track_id=f"t{i}",
                        plate=plate, canonical=plate, confidence=0.9, frames=5,
                    )  # fmt: skip
                    write_hits(node, store, event, event.event_id)
                    await asyncio.sleep(interval_s)
                deadline = time.monotonic() + 30
                while len(set(written) & set(arrived)) < len(written):
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
            finally:
                node.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 10)
                feed.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feed
        finally:
            server.stop()
    latencies = sorted(
        (arrived[event_id] - at) * 1000.0 for event_id, at in written.items() if event_id in arrived
    )
    figures: dict[str, Any] = {"hits": len(written), "arrived": len(latencies)}
    if len(latencies) >= 2:
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        figures["hit_to_feed_ms"] = {
            "p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1),
            "max": round(latencies[-1], 1),
        }  # fmt: skip
    return figures


def run_watchlist_bench(
    *,
    work: Path,
    sizes: Sequence[int] = DEFAULT_SIZES,
    reads: int = 20_000,
    clean: int = 20_000,
    seed: int = 14,
    e2e_hits: int = 40,
    e2e_interval_s: float = 0.1,
    e2e: bool = True,
) -> dict[str, Any]:
    """Every figure of the bench (see the module docstring), without the envelope."""
    figures = run_matching(work=work, sizes=sizes, reads=reads, clean=clean, seed=seed)
    figures["settings"] = {"sizes": list(sizes), "reads": reads, "clean": clean, "seed": seed}
    if e2e:
        figures["end_to_end"] = asyncio.run(
            _end_to_end(work=work, hits=e2e_hits, interval_s=e2e_interval_s, seed=seed)
        )
    return figures


# ---------------------------------------------------------------------- CLI


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are whole numbers, got {text!r}") from None
    if not sizes or any(not 1 <= s <= 1_000_000 for s in sizes):
        raise argparse.ArgumentTypeError("each size must be 1 to 1,000,000 plates")
    return sizes


def register_watchlist(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench watchlist` to the bench subcommands."""
    parser = sub.add_parser(
        "watchlist", help="hotlist matching µs at 1k/10k/100k plates, false look-alike hits, "
        "hit → operator feed latency",
    )  # fmt: skip
    parser.add_argument(
        "--sizes", type=_sizes, default=list(DEFAULT_SIZES), help="hotlist sizes, comma list"
    )
    parser.add_argument("--reads", type=int, default=20_000, help="reads timed per kind (≥ 100)")
    parser.add_argument(
        "--clean", type=int, default=20_000, help="random unlisted plates per size (≥ 100)"
    )
    parser.add_argument("--seed", type=int, default=14, help="the plate generator's seed")
    parser.add_argument("--hits", type=int, default=40, help="end-to-end hits (2-1000)")
    parser.add_argument(
        "--no-e2e", action="store_true", help="leave out the broker/server/node stack"
    )
    parser.add_argument("--work-dir", type=Path, help="keep the work files here")
    add_output_options(parser)
    parser.set_defaults(func=_watchlist)


def _watchlist(args: argparse.Namespace) -> int:
    if args.reads < 100 or args.clean < 100 or not 2 <= args.hits <= 1000:
        sys.stderr.write("bench watchlist: --reads and --clean ≥ 100, --hits 2-1000\n")
        return 2
    started = time.time()
    with bench_work_dir(args.work_dir, prefix="nb-bench-watchlist-") as work:
        figures = run_watchlist_bench(
            work=work, sizes=args.sizes, reads=args.reads, clean=args.clean, seed=args.seed,
            e2e_hits=args.hits, e2e=not args.no_e2e,
        )  # fmt: skip
    publish(bench_result("watchlist", figures, started_at=started), args)
    return 0
