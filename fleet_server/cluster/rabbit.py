"""Starting, stopping and crashing private RabbitMQ nodes on loopback, from generated config.

`nigehbaan cluster up` and the tests run RabbitMQ nodes of their own: each
node gets a unique Erlang node name (``<prefix>-<n>@localhost``), its own AMQP,
MQTT and distribution ports, and its own state and log directories, so the
machine's own RabbitMQ (``rabbit@localhost`` on 5672) is never touched. The
nodes of one cluster share an Erlang cookie file (``HOME/.erlang.cookie`` for
the server and the CLI tools alike) and find each other through the
``classic_config`` peer discovery list written into each node's
``rabbitmq.conf``, so the nodes form one cluster with no ``join_cluster``
calls (the first starts alone, the others once it is up: see `launch`).

Users and permissions come in with a definitions file loaded at boot
(`definitions`): the workers' user, and one user per district bridge whose
topic permissions let it publish and read only its own ``d.<district>.``
routing keys. Exchanges and queues are declared by the workers
(`fleet_server.cluster.topology`), idempotently, over AMQP.

The Debian package's ``/usr/sbin/rabbitmq-server`` wrapper switches to the
``rabbitmq`` user and the system node's home; the real script under
``/usr/lib/rabbitmq/bin`` is run directly instead, with every path given.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ClusterSpec",
    "ManagedRabbit",
    "RabbitError",
    "RabbitNode",
    "RabbitUser",
    "find_rabbitmq_server",
    "loopback_port",
    "password_hash",
]

logger = logging.getLogger(__name__)

PLUGINS = ("rabbitmq_mqtt", "rabbitmq_consistent_hash_exchange")
_SBIN_DIRS = "/usr/lib/rabbitmq/bin:/usr/local/lib/rabbitmq/bin:/usr/sbin:/usr/local/sbin"


class RabbitError(RuntimeError):
    """A RabbitMQ node could not be found, started or stopped."""


def find_rabbitmq_server() -> str:
    """The rabbitmq-server start script that runs as the calling user.

    Debian's `/usr/sbin/rabbitmq-server` is a wrapper that `su`s to the
    system node's user and home; the script it wraps takes our environment.
    """
    for directory in ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin"):
        candidate = Path(directory) / "rabbitmq-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("rabbitmq-server") or shutil.which("rabbitmq-server", path=_SBIN_DIRS)
    if found is None:
        raise RabbitError(
            "rabbitmq-server not found; run `make test` (it installs it) or "
            "`sudo apt-get install rabbitmq-server`"
        )
    return found


# Below Linux's ephemeral range (32768-60999): a port picked there by the OS can be
# taken again as the source port of one of the nodes' own outgoing connections
# (they open many to each other) between the pick and RabbitMQ's bind (seen here
# as eaddrinuse in a 3-node start).
_PORT_RANGE = (20_000, 32_000)
_PICKED: set[int] = set()


def loopback_port() -> int:
    """A loopback TCP port below the ephemeral range, free now and not handed out before."""
    for _ in range(200):
        port = random.randint(*_PORT_RANGE)
        if port in _PICKED:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PICKED.add(port)
        return port
    raise RabbitError(f"no free loopback port in {_PORT_RANGE}")


def password_hash(password: str, *, salt: bytes | None = None) -> str:
    """A definitions-file `password_hash` (rabbit_password_hashing_sha256: salt + SHA-256)."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@dataclass(frozen=True)
class RabbitUser:
    """A RabbitMQ user and what it may do on the default vhost.

    `topic_read`/`topic_write`: regular expressions over routing keys on
    ``amq.topic`` (RabbitMQ's topic permissions); None leaves them open.
    """

    name: str
    password: str
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"
    topic_write: str | None = None
    topic_read: str | None = None
    tags: str = ""


@dataclass(frozen=True)
class RabbitNode:
    """One node's name and ports."""

    name: str  # Erlang short name, before the @
    amqp_port: int
    mqtt_port: int
    dist_port: int

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"


@dataclass(frozen=True)
class ClusterSpec:
    """Nodes of one cluster, its users, and where its state lives."""

    base_dir: Path
    nodes: tuple[RabbitNode, ...]
    users: tuple[RabbitUser, ...]
    cookie: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)

    @classmethod
    def loopback(
        cls, base_dir: Path, *, size: int = 1, users: tuple[RabbitUser, ...], prefix: str = ""
    ) -> ClusterSpec:
        """`size` nodes on free loopback ports, named uniquely for this machine."""
        prefix = prefix or f"nb{secrets.token_hex(3)}"
        nodes = tuple(
            RabbitNode(
                name=f"{prefix}-{n}",
                amqp_port=loopback_port(),
                mqtt_port=loopback_port(),
                dist_port=loopback_port(),
            )
            for n in range(1, size + 1)
        )
        return cls(base_dir=base_dir, nodes=nodes, users=users)

    def amqp_url(self, user: RabbitUser, node: RabbitNode | None = None) -> str:
        node = node or self.nodes[0]
        return f"amqp://{user.name}:{user.password}@127.0.0.1:{node.amqp_port}/"

    def definitions(self) -> dict[str, object]:
        """The users and permissions every node loads at boot."""
        return {
            "users": [
                {
                    "name": u.name,
                    "password_hash": password_hash(u.password),
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": u.tags,
                }
                for u in self.users
            ],
            "vhosts": [{"name": "/"}],
            "permissions": [
                {
                    "user": u.name,
                    "vhost": "/",
                    "configure": u.configure,
                    "write": u.write,
                    "read": u.read,
                }
                for u in self.users
            ],
            "topic_permissions": [
                {
                    "user": u.name,
                    "vhost": "/",
                    "exchange": "amq.topic",
                    "write": u.topic_write or ".*",
                    "read": u.topic_read or ".*",
                }
                for u in self.users
                if u.topic_write is not None or u.topic_read is not None
            ],
        }

    def render_conf(self, node: RabbitNode) -> str:
        """`rabbitmq.conf` of one node (new-style sysctl format)."""
        lines = [
            "# Generated by nigehbaan (fleet_server.cluster.rabbit); do not edit by hand.",
            f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}",
            f"mqtt.listeners.tcp.1 = 127.0.0.1:{node.mqtt_port}",
            "mqtt.allow_anonymous = false",
            "mqtt.vhost = /",
            "mqtt.exchange = amq.topic",
            # A bridge's persistent session outlives a central restart (durable queue).
            "mqtt.subscription_ttl = 86400000",
            "mqtt.prefetch = 100",
            f"load_definitions = {self.base_dir / 'definitions.json'}",
            "cluster_formation.peer_discovery_backend = classic_config",
            *(
                f"cluster_formation.classic_config.nodes.{i} = {n.nodename}"
                for i, n in enumerate(self.nodes, start=1)
            ),
            "cluster_partition_handling = pause_minority",
            # Loopback development: lower the free-disk alarm so a full /tmp is the limit.
            "disk_free_limit.absolute = 50MB",
            "log.console = false",
            "log.file.level = info",
        ]
        return "\n".join(lines) + "\n"


class ManagedRabbit:
    """The RabbitMQ nodes of one `ClusterSpec`, as child processes we own."""

    def __init__(self, spec: ClusterSpec, *, binary: str | None = None) -> None:
        self.spec = spec
        self.binary = binary or find_rabbitmq_server()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def node_dir(self, node: RabbitNode) -> Path:
        return self.spec.base_dir / node.name

    def _write_files(self) -> None:
        base = self.spec.base_dir
        base.mkdir(parents=True, exist_ok=True)
        cookie = base / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(self.spec.cookie, encoding="ascii")
        cookie.chmod(0o400)
        (base / "enabled_plugins").write_text(f"[{','.join(PLUGINS)}].\n", encoding="ascii")
        (base / "rabbitmq-env.conf").write_text("# empty: every setting is in the env\n")
        (base / "definitions.json").write_text(json.dumps(self.spec.definitions(), indent=1))
        for node in self.spec.nodes:
            d = self.node_dir(node)
            (d / "log").mkdir(parents=True, exist_ok=True)
            (d / "rabbitmq.conf").write_text(self.spec.render_conf(node), encoding="utf-8")

    def env(self, node: RabbitNode) -> dict[str, str]:
        """The environment the start script and the CLI tools need for `node`."""
        base, d = self.spec.base_dir, self.node_dir(node)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(base),  # .erlang.cookie: the same file for every node and the CLI
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=node.nodename,
            RABBITMQ_USE_LONGNAME="false",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(node.amqp_port),
            RABBITMQ_DIST_PORT=str(node.dist_port),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_PID_FILE=str(d / "rabbitmq.pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(d / "advanced.config"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                f"-setcookie {self.spec.cookie} -kernel inet_dist_use_interface {{127,0,0,1}}"
            ),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def start(self, *, timeout: float = 120.0) -> None:
        """Start every node not running (the first, then the others) and wait for them."""
        self.launch()
        self.wait_all(timeout=timeout)

    def launch(self) -> None:
        """Start the first node not running, without waiting (`wait_all` starts the rest).

        The others start only once the first is up. Started together, the
        nodes formed one cluster, but the MQTT plugin's client-id tracker
        (a Raft cluster of its own in 3.10) was left without a leader on the
        others: after the first node was killed no MQTT client (bridge) could
        connect anywhere ("client ID registration timed out").
        """
        self._write_files()
        self.start_node(self.spec.nodes[0], wait=False)

    def wait_all(self, *, timeout: float = 120.0) -> None:
        """Until every node accepts AMQP and MQTT connections (starting the later ones)."""
        deadline = time.monotonic() + timeout
        first, *rest = self.spec.nodes
        self.wait_ready(first, timeout=max(1.0, deadline - time.monotonic()))
        for node in rest:
            self.start_node(node, wait=False)
        for node in rest:
            self.wait_ready(node, timeout=max(1.0, deadline - time.monotonic()))

    def start_node(self, node: RabbitNode, *, wait: bool = True, timeout: float = 120.0) -> None:
        """Start one node (again, after `kill_node`) on its old ports and state."""
        if self.running(node):
            return
        out = (self.node_dir(node) / "log" / "start.log").open("ab")
        try:
            self._processes[node.name] = subprocess.Popen(
                [self.binary],
                env=self.env(node),
                cwd=self.spec.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        if wait:
            self.wait_ready(node, timeout=timeout)

    def pid(self, node: RabbitNode) -> int | None:
        """The node's start script's pid (its process group's id), while it runs."""
        proc = self._processes.get(node.name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def running(self, node: RabbitNode) -> bool:
        proc = self._processes.get(node.name)
        return proc is not None and proc.poll() is None

    def wait_ready(self, node: RabbitNode, *, timeout: float = 120.0) -> None:
        """Until the node accepts AMQP and MQTT connections (the plugins are up)."""
        deadline = time.monotonic() + timeout
        pending = [node.amqp_port, node.mqtt_port]
        while pending:
            proc = self._processes.get(node.name)
            if proc is None or proc.poll() is not None:
                raise RabbitError(f"RabbitMQ node {node.nodename} exited\n{self.log_text(node)}")
            try:
                with socket.create_connection(("127.0.0.1", pending[0]), 0.2):
                    pending.pop(0)
                    continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RabbitError(
                    f"RabbitMQ node {node.nodename} not ready within {timeout}s\n"
                    f"{self.log_text(node)}"
                )
            time.sleep(0.1)
        logger.info("RabbitMQ node %s ready (amqp %s)", node.nodename, node.amqp_port)

    def kill_node(self, node: RabbitNode) -> None:
        """SIGKILL the node's whole process group (start script and Erlang VM), as a crash."""
        proc = self._processes.pop(node.name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_node(self, node: RabbitNode, *, timeout: float = 60.0) -> None:
        """SIGTERM: the start script stops the node cleanly; SIGKILL after `timeout`."""
        proc = self._processes.pop(node.name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning("RabbitMQ node %s ignored SIGTERM; killing", node.nodename)
        # The Erlang VM is a child of the script; whatever is left of the group goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop every node (in parallel: a cluster waits for its peers while stopping)."""
        procs = [(n, self._processes.get(n.name)) for n in self.spec.nodes]
        for _node, proc in procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for node, _proc in procs:
            self.stop_node(node)

    def ctl(self, node: RabbitNode, *args: str, timeout: float = 60.0) -> str:
        """Run `rabbitmqctl` against `node` (a second of Erlang start-up per call)."""
        ctl = Path(self.binary).with_name("rabbitmqctl")
        result = subprocess.run(
            [str(ctl), "-n", node.nodename, *args],
            env=self.env(node),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RabbitError(
                f"rabbitmqctl {' '.join(args)} failed: {result.stderr.decode(errors='replace')}"
            )
        return result.stdout.decode(errors="replace")

    def log_text(self, node: RabbitNode, *, tail: int = 60) -> str:
        """The node's start output and the end of its log, for failure reports."""
        parts = []
        for path in sorted((self.node_dir(node) / "log").glob("*.log")):
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            parts.append(f"--- {path.name} ---\n" + "\n".join(lines[-tail:]))
        return "\n".join(parts) or "(no log)"

    def __enter__(self) -> ManagedRabbit:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
