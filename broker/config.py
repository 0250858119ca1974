"""The broker's configuration: schema, defaults and validation in one place.

The file format is the one the deployment guide shows (sections broker, persistence, raft,
api, auth, monitoring, worker). Every key is declared once below with its type, default and a
one-line description; ``docs/configuration.md`` is checked against this table by a test, so
the reference cannot drift from the code.

Validation happens before anything is opened: an unknown key, a wrong type or a bad size
raises :class:`ConfigError` naming the key (``persistence.write_buffer_size: ...``).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid. The message names the key."""


PERMISSIONS = ("submit_tasks", "read_tasks", "cancel_tasks", "admin")
LOG_LEVELS = ("trace", "debug", "info", "warning", "warn", "error", "critical")

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: Any) -> int:
    """``128MB`` -> 134217728. Units are binary (KB = 1024), as RocksDB's own options are."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 64MB, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 64MB, got {type(value).__name__}")
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size (examples: 4096, 512KB, 64MB, 1GB)")
    number, unit = match.groups()
    return int(number) * _UNITS[(unit or "").lower()[:1]]


# ------------------------------------------------------------------ the schema, one row a key

@dataclass(frozen=True)
class Key:
    kind: str  # str, int, bool, size, float, list[str], api_keys, choice
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()


SCHEMA: dict[str, dict[str, Key]] = {
    "broker": {
        "host": Key("str", "0.0.0.0", "Address every listener binds to."),
        "port": Key("int", 6379, "Worker/client TCP protocol port.", 1, 65535),
        "advertise_host": Key("str", "", "Address other nodes and clients use to reach this "
                              "broker (default: host, or 127.0.0.1 when host is 0.0.0.0)."),
        "max_connections": Key("int", 1000, "Concurrent TCP protocol connections that "
                               "completed HELLO (connections still in their handshake are "
                               "counted by max_unauthenticated_connections).", 1),
        "max_unauthenticated_connections": Key("int", 256, "Protocol connections that have "
                                               "not sent HELLO yet; when one more arrives, "
                                               "the oldest of them is closed (MAXCONN).", 1),
        "handshake_timeout_secs": Key("float", 5.0, "A protocol connection that has not "
                                      "sent HELLO (and finished its TLS handshake) within "
                                      "this is closed.", 0.1, 3600),
        "request_timeout_secs": Key("float", 30.0, "One request (a protocol frame; a REST "
                                    "request's header and body) must arrive whole within "
                                    "this from its first byte, or the connection is "
                                    "closed (slow senders).", 0.1, 3600),
        "max_inflight_requests": Key("int", 1024, "Requests one protocol connection may "
                                     "have unanswered; beyond, the broker stops reading "
                                     "from it until replies are out.", 1, 1000000),
        "reply_buffer_bytes": Key("size", "1MB", "Replies buffered for one connection "
                                  "that does not read them; beyond, the broker stops "
                                  "reading its requests (one reply can exceed it).", 4096),
        "queue_depth_threshold": Key("int", 100000, "Tasks waiting in one queue (scheduled, "
                                     "pending, failed) beyond which submits get QUEUEFULL.", 1),
        "max_payload_bytes": Key("size", "1MB", "Largest JSON-encoded task payload.", 1),
        "max_frame_bytes": Key("size", "16MB", "Largest single protocol frame (bulk submit).",
                               1024),
        "sweep_interval_ms": Key("int", 100, "How often expired leases, due scheduled tasks "
                                 "and departed workers are looked for.", 10, 60000),
        "shutdown_grace_secs": Key("float", 5.0, "How long SIGTERM waits for in-flight "
                                   "requests.", 0, 600),
    },
    "persistence": {
        "data_dir": Key("str", "./tq-data", "RocksDB directory (created if missing); a "
                        "cluster node keeps its Raft journal in data_dir.raft beside it. "
                        "Put a backup back with tq-broker --config FILE --restore BACKUP "
                        "(broker stopped; in a cluster on every node, same backup)."),
        "wal_sync_interval_ms": Key("int", 100, "0: fsync before acknowledging any write. "
                                    "N > 0: fsync at most every N ms; a power cut can lose the "
                                    "last N ms of acknowledged writes (a process crash loses "
                                    "nothing).", 0, 60000),
        "completed_task_retention_days": Key("float", 7, "Completed, dead and cancelled tasks "
                                             "older than this are purged.", 0),
        "write_buffer_size": Key("size", "64MB", "RocksDB memtable size.", 1 << 16),
        "max_write_buffer_number": Key("int", 2, "RocksDB memtables kept in memory.", 1, 64),
        "block_cache_size": Key("size", "64MB", "RocksDB block cache.", 0),
        "max_batch_commands": Key("int", 2000, "Commands grouped into one log entry and one "
                                  "WriteBatch (group commit).", 1, 100000),
    },
    "raft": {
        "enabled": Key("bool", False, "Run as a member of a Raft cluster."),
        "node_id": Key("str", "", "This node's name (required when enabled)."),
        "peers": Key("list[str]", [], "The other brokers' protocol addresses, host:port."),
        "port": Key("int", 0, "Raft traffic port (default: broker.port + 1).", 0, 65535),
        "peer_raft_ports": Key("list[str]", [], "Optional host:port Raft addresses of the "
                               "peers, in the order of raft.peers, when they do not use "
                               "their broker port + 1."),
        "secret": Key("str", "", "Shared cluster secret; required when enabled (Raft traffic "
                      "is authenticated with it). At least 16 characters, 8 of them "
                      "different, else the broker refuses to start; use a random one."),
        "election_timeout_ms": Key("int", 1000, "Raft election timeout (lower bound); "
                                   "a leader must have heard from a majority within half of "
                                   "it to pass /health/leader.", 100, 60000),
        "snapshot_min_entries": Key("int", 100000, "Log entries between snapshots.", 100),
        "forward_timeout_secs": Key("float", 10.0, "How long any node (a follower "
                                    "forwarding to the leader, a leader, a former leader cut "
                                    "off from the majority) waits for its write to commit "
                                    "before answering UNAVAILABLE (outcome unknown).",
                                    0.1, 600),
    },
    "api": {
        "rest_port": Key("int", 8080, "REST API port (0 disables).", 0, 65535),
        "grpc_port": Key("int", 9090, "gRPC API port (0 disables).", 0, 65535),
        "enable_tls": Key("bool", False, "Serve every port over TLS."),
        "tls_cert_path": Key("str", "", "Server certificate (PEM), required with TLS."),
        "tls_key_path": Key("str", "", "Server private key (PEM), required with TLS."),
        "tls_ca_path": Key("str", "", "CA bundle; when set, clients must present a "
                           "certificate it signed (mutual TLS)."),
        "max_body_bytes": Key("size", "16MB", "Largest REST request body.", 1024),
    },
    "auth": {
        "enabled": Key("bool", False, "Require an API key on every port."),
        "api_keys": Key("api_keys", [], "List of {key_hash: bcrypt hash, permissions: [...], "
                        "name: optional label}."),
        "max_pending_verifications": Key("int", 64, "API keys waiting for a bcrypt check "
                                         "(first use of a key, or a wrong key) on this "
                                         "node; beyond, a new one is answered UNAVAILABLE.",
                                         1, 100000),
        "failed_attempt_delay_secs": Key("float", 0.25, "After a wrong key from an address, "
                                         "its next check waits this long, doubling with "
                                         "each further failure (0 disables).", 0, 60),
        "failed_attempt_max_delay_secs": Key("float", 4.0, "Cap of that per-address delay.",
                                             0, 600),
    },
    "monitoring": {
        "prometheus_port": Key("int", 9091, "Prometheus metrics port (0 disables).",
                               0, 65535),
        "log_level": Key("choice", "info", "Log verbosity (env TQ_LOG overrides).",
                         choices=LOG_LEVELS),
    },
    "worker": {
        "concurrency": Key("int", 4, "Default worker concurrency.", 1, 100000),
        "heartbeat_interval_secs": Key("float", 15, "How often workers heartbeat.",
                                       0.05, 3600),
        "lease_timeout_secs": Key("float", 30, "A claimed task returns to its queue when "
                                  "its worker has not heartbeated for this long.", 0.1, 86400),
    },
    "limits": {
        "queues": Key("limits", [], "Rate and concurrency limits the leader sets on start: a "
                      "list of {queue, rate (tasks/s), burst, concurrency}. Applied when "
                      "this list changes; runtime changes (tq-admin limits) stay until then."),
        "exclusive": Key("bool", False, "true: when limits.queues is applied, clear every "
                         "limit it does not declare (the file is the whole truth)."),
    },
    "schedules": {
        "list": Key("schedules", [], "Schedules the leader upserts on start: a list of {id, "
                    "cron (+ tz) or interval_secs, task {type, queue, payload, ...}, misfire, "
                    "...} (docs/schedules-limits-results.md). Applied when this list changes; "
                    "schedules created at runtime are left alone."),
        "tick_ms": Key("int", 200, "How often the leader looks for due schedules (one index "
                       "seek; a firing is proposed only when one is due).", 10, 10000),
    },
}


def _check(path: str, key: Key, value: Any) -> Any:
    """Validate one value against its schema row; return the normalised value."""
    def fail(why: str):
        raise ConfigError(f"{path}: {why}")

    kind = key.kind
    if kind == "str":
        if not isinstance(value, str):
            fail(f"expected a string, got {type(value).__name__} {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            fail(f"expected true or false, got {value!r}")
        return value
    if kind in ("int", "float"):
        ok = isinstance(value, int) or (kind == "float" and isinstance(value, float))
        if isinstance(value, bool) or not ok:
            fail(f"expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
        number = value
    elif kind == "size":
        try:
            number = parse_size(value)
        except ValueError as exc:
            fail(str(exc))
    elif kind == "choice":
        if not isinstance(value, str) or value.lower() not in key.choices:
            fail(f"expected one of {', '.join(key.choices)}, got {value!r}")
        return value.lower()
    elif kind == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            fail(f"expected a list of strings, got {value!r}")
        return list(value)
    elif kind == "api_keys":
        return _check_api_keys(path, value)
    elif kind == "limits":
        return _check_limits(path, value)
    elif kind == "schedules":
        return _check_schedules(path, value)
    else:  # pragma: no cover - schema typo
        raise AssertionError(kind)
    if key.minimum is not None and number < key.minimum:
        fail(f"must be at least {key.minimum:g}, got {value!r}")
    if key.maximum is not None and number > key.maximum:
        fail(f"must be at most {key.maximum:g}, got {value!r}")
    return number


def _check_limits(path: str, value: Any) -> list[dict]:
    from broker.commands.limits import MAX_LIMITS, normalise_spec
    from broker.validation import NAME

    if not isinstance(value, list) or len(value) > MAX_LIMITS:
        raise ConfigError(f"{path}: expected a list of at most {MAX_LIMITS} "
                          "{queue, rate, burst, concurrency}")
    out, seen = [], set()
    for i, entry in enumerate(value):
        where = f"{path}[{i}]"
        queue = entry.get("queue") if isinstance(entry, dict) else None
        if not isinstance(queue, str) or not NAME.fullmatch(queue):
            raise ConfigError(f"{where}.queue: expected a queue name")
        if queue in seen:
            raise ConfigError(f"{where}.queue: {queue!r} is declared twice")
        seen.add(queue)
        try:
            out.append({"queue": queue, **normalise_spec(entry)})
        except ValueError as exc:
            raise ConfigError(f"{where}.{exc}") from None
    return out


def _check_schedules(path: str, value: Any) -> list[dict]:
    from broker import schedule_spec
    from broker.validation import Invalid

    if not isinstance(value, list) or len(value) > 10_000:
        raise ConfigError(f"{path}: expected a list of at most 10000 schedules")
    out, seen = [], set()
    for i, entry in enumerate(value):
        try:
            # payload bound: the default broker.max_payload_bytes (the file's own value is
            # checked again when the leader proposes the schedule)
            spec = schedule_spec.normalise(entry, 1 << 20)
        except Invalid as exc:
            raise ConfigError(f"{path}[{i}].{exc.message}") from None
        if spec["id"] in seen:
            raise ConfigError(f"{path}[{i}].id: {spec['id']!r} is declared twice")
        seen.add(spec["id"])
        out.append(spec)
    return out


def _check_api_keys(path: str, value: Any) -> list[dict]:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list of {{key_hash, permissions}}")
    keys = []
    for i, entry in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping with key_hash and permissions")
        unknown = set(entry) - {"key_hash", "permissions", "name"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key")
        key_hash = entry.get("key_hash")
        if not isinstance(key_hash, str) or not re.match(r"^\$2[abxy]?\$\d\d\$.{53}$", key_hash):
            raise ConfigError(f"{where}.key_hash: expected a bcrypt hash ($2b$10$...)")
        perms = entry.get("permissions")
        if not isinstance(perms, list) or not perms:
            raise ConfigError(f"{where}.permissions: expected a non-empty list")
        for perm in perms:
            if perm not in PERMISSIONS:
                raise ConfigError(f"{where}.permissions: unknown permission {perm!r} "
                                  f"(allowed: {', '.join(PERMISSIONS)})")
        keys.append({"key_hash": key_hash, "permissions": list(perms),
                     "name": str(entry.get("name") or f"key{i}")})
    return keys


# ------------------------------------------------------------------------ the typed result

@dataclass
class Config:
    """Validated configuration: ``config.broker.port``, ``config.persistence.data_dir``..."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<defaults>"

    def __getattr__(self, name: str):
        try:
            return _Section(self.sections[name])
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict:
        return {name: dict(values) for name, values in self.sections.items()}

    @property
    def advertise_address(self) -> str:
        b = self.sections["broker"]
        host = b["advertise_host"] or (b["host"] if b["host"] not in ("0.0.0.0", "::", "")
                                       else "127.0.0.1")
        return f"{host}:{b['port']}"


class _Section:
    __slots__ = ("_values",)

    def __init__(self, values: dict):
        self._values = values

    def __getattr__(self, name: str):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None


def defaults() -> dict[str, dict[str, Any]]:
    out = {}
    for section, keys in SCHEMA.items():
        out[section] = {}
        for name, key in keys.items():
            out[section][name] = _check(f"{section}.{name}", key, key.default)
    return out


def from_mapping(raw: Any, source: str = "<mapping>") -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    values = defaults()
    for section, body in raw.items():
        if section not in SCHEMA:
            raise ConfigError(f"{source}: {section}: unknown section"
                              f"{_did_you_mean(str(section), list(SCHEMA))} "
                              f"(known: {', '.join(SCHEMA)})")
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{section}: expected a mapping of keys")
        for name, value in body.items():
            key = SCHEMA[section].get(name)
            if key is None:
                raise ConfigError(f"{source}: {section}.{name}: unknown key"
                                  f"{_suggest_key(section, str(name))}")
            values[section][name] = _check(f"{section}.{name}", key, value)
    config = Config(values, source)
    _cross_checks(config)
    return config


def _did_you_mean(word: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def _suggest_key(section: str, name: str) -> str:
    """The nearest known key: the same name in another section (``broker.rest_port`` is
    ``api.rest_port``), a near spelling in the section, or a near one in another."""
    elsewhere = [f"{other}.{name}" for other, keys in SCHEMA.items() if name in keys]
    if elsewhere:
        return f" (did you mean {elsewhere[0]}?)"
    near = difflib.get_close_matches(name, list(SCHEMA[section]), n=1, cutoff=0.6)
    if near:
        return f" (did you mean {section}.{near[0]}?)"
    owner = {key: other for other, keys in SCHEMA.items() for key in keys}
    near = difflib.get_close_matches(name, list(owner), n=1, cutoff=0.8)
    return f" (did you mean {owner[near[0]]}.{near[0]}?)" if near else ""


MIN_RAFT_SECRET_CHARS = 16
MIN_RAFT_SECRET_DISTINCT = 8


def weak_raft_secret(secret: str) -> str:
    """Why ``secret`` is too weak to authenticate Raft peers, or "" when it is not."""
    if len(secret.strip()) < MIN_RAFT_SECRET_CHARS:
        return f"{len(secret.strip())} characters, at least {MIN_RAFT_SECRET_CHARS} needed"
    if len(set(secret)) < MIN_RAFT_SECRET_DISTINCT:
        return (f"{len(set(secret))} different characters, at least "
                f"{MIN_RAFT_SECRET_DISTINCT} needed")
    return ""


def _cross_checks(config: Config) -> None:
    """Rules that involve more than one key."""
    raft, api, auth = config.sections["raft"], config.sections["api"], config.sections["auth"]
    if raft["enabled"]:
        if not raft["node_id"]:
            raise ConfigError("raft.node_id: required when raft.enabled is true")
        if not raft["secret"]:
            raise ConfigError("raft.secret: required when raft.enabled is true (Raft peers "
                              "authenticate each other with it)")
        weak = weak_raft_secret(raft["secret"])
        if weak:
            raise ConfigError(f"raft.secret: too weak ({weak}): anyone who guesses it can "
                              "join the cluster and rewrite its log; generate one with "
                              "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
        for peer in raft["peers"]:
            _check_address("raft.peers", peer)
        if raft["peer_raft_ports"] and len(raft["peer_raft_ports"]) != len(raft["peers"]):
            raise ConfigError("raft.peer_raft_ports: must list one address per raft.peers entry")
    if api["enable_tls"]:
        for name in ("tls_cert_path", "tls_key_path"):
            if not api[name]:
                raise ConfigError(f"api.{name}: required when api.enable_tls is true")
    if auth["enabled"] and not auth["api_keys"]:
        raise ConfigError("auth.api_keys: at least one key is required when auth.enabled")
    ports = {"broker.port": config.sections["broker"]["port"],
             "api.rest_port": api["rest_port"], "api.grpc_port": api["grpc_port"],
             "monitoring.prometheus_port": config.sections["monitoring"]["prometheus_port"]}
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port and port in seen:
            raise ConfigError(f"{name}: port {port} is already used by {seen[port]}")
        seen[port] = name


def _check_address(path: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{path}: {value!r} is not host:port")
    return host, int(port)


def load(path: str | Path | None) -> Config:
    """Read and validate a YAML file; ``None`` gives the embedded defaults."""
    if path is None:
        return from_mapping({}, "<defaults>")
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return from_mapping(raw, str(path))


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Apply ``{"broker.port": 7000}`` style overrides (from command-line flags)."""
    raw = config.to_dict()
    for dotted, value in overrides.items():
        section, name = dotted.split(".", 1)
        raw[section][name] = value
    return from_mapping(raw, config.source)

