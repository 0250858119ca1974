"""``tq-worker``: run task handlers for the jobs of a broker.

    tq-worker --broker-addr 127.0.0.1:6379 --concurrency 4 --handlers worker.examples

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT, or the broker's ``stop``), 1 when the
broker refuses the worker (API key, permission) or a worker loop fails, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading

from taskqueue.tlsutil import client_context_from_paths
from worker.registry import load_handler_modules
from worker.runner import Worker, WorkerConfig


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tq-worker", description="Run task handlers for jobs fetched from the broker.")
    parser.add_argument("--broker-addr", default=os.environ.get("TQ_BROKER_ADDR",
                                                                 "127.0.0.1:6379"),
                        help="HOST:PORT, or a comma-separated list of cluster nodes "
                             "(env TQ_BROKER_ADDR; default %(default)s)")
    parser.add_argument("--concurrency", type=positive_int, default=4,
                        help="jobs run at the same time (default %(default)s)")
    parser.add_argument("--handlers", action="append", metavar="MODULE",
                        help="module whose @task handlers to load; repeatable "
                             "(default worker.examples)")
    parser.add_argument("--app-dir", "-C", default=".", metavar="DIR",
                        help="directory the --handlers modules are imported from, as celery "
                             "and rq do (default: the current directory)")
    parser.add_argument("--queues", default="default",
                        help="comma-separated queues, tried in this order (default %(default)s)")
    parser.add_argument("--pool", choices=("thread", "process", "async"), default="thread",
                        help="where sync handlers run: threads, or processes for CPU-bound "
                             "work; async handlers always run on the event loop")
    parser.add_argument("--heartbeat-interval-secs", type=positive_float,
                        help="default: what the broker announces")
    parser.add_argument("--max-tasks-per-child", type=positive_int,
                        help="process pool: replace a job process after this many jobs")
    parser.add_argument("--shutdown-grace-secs", type=float, default=30.0,
                        help="on SIGTERM, how long running jobs may take to finish "
                             "(default %(default)s)")
    parser.add_argument("--fetch-timeout-ms", type=int, default=2000, help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", help="default: HOSTNAME-PID-RANDOM")
    parser.add_argument("--api-key", help="API key (default: env TQ_API_KEY)")
    parser.add_argument("--api-key-file", help="read the API key from this file")
    parser.add_argument("--tls-ca", default=os.environ.get("TQ_TLS_CA"),
                        help="CA bundle to verify the broker's certificate (env TQ_TLS_CA)")
    parser.add_argument("--tls-cert", default=os.environ.get("TQ_TLS_CERT"),
                        help="client certificate for mutual TLS (env TQ_TLS_CERT)")
    parser.add_argument("--tls-key", default=os.environ.get("TQ_TLS_KEY"),
                        help="client certificate's key (env TQ_TLS_KEY)")
    parser.add_argument("--tls-server-name", default=os.environ.get("TQ_TLS_SERVER_NAME"),
                        help="name the broker's certificate is issued to, when it is not "
                        "the host in --broker-addr (env TQ_TLS_SERVER_NAME)")
    parser.add_argument("--log-level", default=os.environ.get("TQ_LOG", "info"),
                        help="debug, info, warning, error (env TQ_LOG; default %(default)s)")
    return parser


def read_api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_file:
        with open(args.api_key_file) as f:
            return f.read().strip()
    return args.api_key or os.environ.get("TQ_API_KEY")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _event_loop_runner() -> asyncio.Runner:
    """uvloop when it is installed (the ``fast`` extra): a little less of the worker's own CPU
    per job (~22 vs ~24 us for a no-op job here), which counts when workers share cores
    with a broker. Never needed: plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    modules = args.handlers or ["worker.examples"]
    try:
        registry = load_handler_modules(modules, app_dir=args.app_dir)
        api_key = read_api_key(args)
        ssl_context = client_context_from_paths(args.tls_ca, args.tls_cert, args.tls_key,
                                                args.tls_server_name)
    except (ImportError, OSError, ValueError) as exc:
        parser.error(str(exc))  # exits 2
    if not len(registry):
        parser.error(f"no @task handlers found in {', '.join(modules)}")
    config = WorkerConfig(
        addresses=args.broker_addr,
        queues=[q for q in args.queues.split(",") if q],
        concurrency=args.concurrency,
        pool=args.pool,
        handler_modules=modules,
        heartbeat_interval_secs=args.heartbeat_interval_secs,
        max_tasks_per_child=args.max_tasks_per_child,
        shutdown_grace_secs=args.shutdown_grace_secs,
        fetch_timeout_ms=args.fetch_timeout_ms,
        api_key=api_key,
        ssl_context=ssl_context,
        worker_id=args.worker_id,
    )
    logging.getLogger("tq.worker").info("handlers: %s", ", ".join(registry.names()))
    with _event_loop_runner() as runner:
        code = runner.run(_run(Worker(config, registry)))
    if _busy_threads():
        # A thread still inside a timed-out or abandoned handler cannot be stopped, and the
        # interpreter would wait for it at exit: its job has been failed back, so leave.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _busy_threads() -> bool:
    return any(t.is_alive() and not t.daemon for t in threading.enumerate()
               if t is not threading.main_thread())


async def _run(worker: Worker) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_shutdown)
    return await worker.run()


if __name__ == "__main__":
    sys.exit(main())
