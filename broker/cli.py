"""``tq-broker``: run a broker node, or validate a configuration file.

    tq-broker --config /etc/task-queue/config.yaml
    tq-broker --check-config /etc/task-queue/config.yaml     # validate only, exit 0 / 2
    tq-broker --broker-addr 0.0.0.0:6379                     # defaults, other address
    tq-broker --config FILE --restore BACKUP.tar.gz          # offline restore, then exit

Exit codes: 0 clean shutdown (or restore done), 2 invalid configuration, 1 any other
start-up failure (or restore refused/failed).

``--restore`` replaces the node's data with a backup (a backup.sh archive or a
``tq-admin create-snapshot`` directory) while the broker is stopped; with ``raft.enabled``
the log is re-based so that a cluster restored from ONE archive on EVERY node starts a new
log on identical state (broker/restore.py, docs/operations.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from broker import config as cfg
from broker.data_lock import DataDirInUse
from broker.restore import RestoreError, StartupRefused

LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
          "warning": logging.WARNING, "warn": logging.WARNING, "error": logging.ERROR,
          "critical": logging.CRITICAL}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tq-broker", description=__doc__.split("\n")[0])
    parser.add_argument("--config", metavar="FILE", help="YAML configuration (default: "
                        "built-in defaults, data in ./tq-data)")
    parser.add_argument("--check-config", metavar="FILE",
                        help="validate FILE and exit (0 valid, 2 invalid)")
    parser.add_argument("--broker-addr", metavar="HOST:PORT",
                        help="override broker.host and broker.port")
    parser.add_argument("--data-dir", help="override persistence.data_dir")
    parser.add_argument("--restore", metavar="BACKUP",
                        help="stop-the-world restore: move this node's data (and Raft "
                        "journal) aside, install BACKUP (backup.sh .tar.gz or a snapshot "
                        "directory), and exit; the broker must be stopped. A cluster: "
                        "every node, same BACKUP, all stopped")
    return parser.parse_args(argv)


def configure_logging(level_name: str) -> None:
    level_name = os.environ.get("TQ_LOG", level_name).lower()
    logging.basicConfig(level=LEVELS.get(level_name, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level_name != "trace":
        # pysyncobj and sanic are chatty at debug; keep them for TQ_LOG=trace.
        for noisy in ("sanic", "sanic.access", "pysyncobj"):
            logging.getLogger(noisy).setLevel(max(logging.INFO, LEVELS.get(level_name, 20)))


def load_config(args) -> cfg.Config:
    config = cfg.load(args.config)
    overrides = {}
    if args.broker_addr:
        host, sep, port = args.broker_addr.rpartition(":")
        if not sep or not port.isdigit():
            raise cfg.ConfigError(f"--broker-addr: {args.broker_addr!r} is not HOST:PORT")
        overrides["broker.host"] = host or "0.0.0.0"
        overrides["broker.port"] = int(port)
    if args.data_dir:
        overrides["persistence.data_dir"] = args.data_dir
    return cfg.apply_overrides(config, overrides) if overrides else config


def run_restore(config: cfg.Config, backup: str) -> int:
    from broker.restore import restore

    try:
        summary = restore(config, backup)
    except RestoreError as exc:
        print(f"tq-broker: restore refused: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tq-broker: restore failed: {exc}", file=sys.stderr)
        return 1
    for aside in summary["moved_aside"]:
        print(f"previous data moved to {aside}", file=sys.stderr)
    print(f"restored {backup} into {summary['data_dir']}: {summary['tasks']} tasks, backup "
          f"taken at applied index {summary['backup_applied_index']}"
          f" ({summary['backup_time'] or 'time unknown'}), sha256 "
          f"{summary['backup_sha256'][:16]}", file=sys.stderr)
    if summary["raft"]:
        print("raft: applied index reset to 0, new journal on the next start. Restore the "
              "SAME backup on EVERY node of the cluster before starting any of them "
              "(compare the sha256 above).", file=sys.stderr)
    return 0


# What the broker creates (RocksDB files, the Raft journal, snapshots, backups) holds task
# payloads and results in clear: nobody but the broker's user and group may read it, whatever
# umask the broker was started under (a shell's 022 would make it world-readable). Group read
# stays: the Ansible roles give the backup tooling the broker's group on purpose.
PRIVATE_UMASK = 0o027


def main(argv=None) -> int:
    os.umask(PRIVATE_UMASK)
    args = parse_args(argv)
    if args.check_config:
        try:
            cfg.load(args.check_config)
        except cfg.ConfigError as exc:
            print(f"tq-broker: invalid configuration: {exc}", file=sys.stderr)
            return 2
        print(f"{args.check_config}: configuration is valid")
        return 0
    try:
        config = load_config(args)
    except cfg.ConfigError as exc:
        print(f"tq-broker: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.monitoring.log_level)
    if args.restore:
        return run_restore(config, args.restore)
    import uvloop  # broker-only dependency: imported after the config is known good

    from broker.server import Broker

    try:
        uvloop.run(Broker(config).run())
    except KeyboardInterrupt:
        pass
    except StartupRefused as exc:
        logging.getLogger("tq.broker").critical("refusing to start: %s", exc)
        return 1
    except DataDirInUse as exc:
        logging.getLogger("tq.broker").critical("cannot start: %s", exc)
        return 1
    except OSError as exc:
        logging.getLogger("tq.broker").critical("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
