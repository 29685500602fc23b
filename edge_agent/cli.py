"""`nigehbaan agent --config agent.toml`: run one node's agent in the foreground.

The registrar imports nothing heavy, so `nigehbaan --help` stays fast on a
node; the agent modules are imported only when the subcommand runs. This is
the one place the agent's event loop is created (`asyncio.run`); simulators
run many agents in their own loop instead.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `agent` subcommand."""
    parser = subparsers.add_parser("agent", help="run the edge agent of one node")
    parser.add_argument(
        "--config", type=Path, required=True, help="agent.toml (or .yaml/.json) for this node"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from edge_agent.config import ConfigError, load_config_file
    from hardware.errors import HardwareError

    try:
        config = load_config_file(args.config)
    except ConfigError as exc:
        print(f"nigehbaan agent: bad config {args.config}: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(config))
    except HardwareError as exc:
        print(f"nigehbaan agent: hardware: {exc}", file=sys.stderr)
        return 3


async def _serve(config: object) -> int:
    from edge_agent.agent import Agent
    from edge_agent.config import AgentConfig

    assert isinstance(config, AgentConfig)
    agent = Agent(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, agent.stop)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            logger.debug("cannot install handler for %s", signum)
    await agent.run()
    return 0
