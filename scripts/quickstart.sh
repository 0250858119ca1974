#!/usr/bin/env bash
# Runs the main job on this machine: a single-node broker on its embedded RocksDB default
# (data in ./tq-data), a worker with the built-in example handlers, and sample tasks flowing
# through them. Keeps serving until Ctrl-C (or exits after the demo with --once).
#   bash scripts/quickstart.sh [--once]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ONCE=0; [ "${1:-}" = "--once" ] && ONCE=1

ensure_venv "broker,fast"
BIN="$VENV/bin"
export TQ_BROKER_ADDR="${TQ_BROKER_ADDR:-127.0.0.1:6379}"
mkdir -p tq-data

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

log "starting tq-broker (single node, data in ./tq-data, ports ${TQ_BROKER_ADDR##*:}/8080/9090/9091)"
"$BIN/tq-broker" --broker-addr "$TQ_BROKER_ADDR" --data-dir tq-data >tq-data/broker.log 2>&1 &
broker_pid=$!
pids+=($broker_pid)
# Ready when OUR broker says it serves (it logs that once every port is bound). A port that
# answers is not enough: another broker already listening there would answer while ours
# died with "address already in use", and the demo would run against it.
deadline=$((SECONDS + 60))  # a slow first start on a small VM
until grep -q " serving: protocol " tq-data/broker.log 2>/dev/null; do
  if ! kill -0 "$broker_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "tq-broker did not start; the end of tq-data/broker.log:" >&2
    tail -n 20 tq-data/broker.log >&2
    if grep -q "address already in use" tq-data/broker.log; then
      echo "Another process already listens on one of the ports (a broker from an earlier" \
           "run? see: ss -ltnp); it is not this quickstart's broker, so nothing was run" \
           "against it. Stop it, or choose another protocol port:" \
           "TQ_BROKER_ADDR=127.0.0.1:6380 bash scripts/quickstart.sh" >&2
    fi
    exit 1
  fi
  sleep 0.2
done
"$BIN/tq-admin" cluster-status

log "starting tq-worker --concurrency 4 --handlers worker.examples"
"$BIN/tq-worker" --broker-addr "$TQ_BROKER_ADDR" --concurrency 4 --handlers worker.examples \
  >tq-data/worker.log 2>&1 &
pids+=($!)

log "submitting sample tasks"
"$BIN/python" - <<'PY'
import time
from taskqueue.client import Client

with Client() as client:
    ids = [client.submit("echo", {"n": i})["id"] for i in range(20)]
    ids += [client.submit("sleep", {"seconds": 0.2})["id"] for _ in range(4)]
    ids.append(client.submit("fail", {"why": "a demo failure"}, max_retries=1,
                             retry_backoff_secs=0.1)["id"])
    deadline = time.time() + 30
    while time.time() < deadline:
        states = [client.get(i)["status"] for i in ids]
        if all(s in ("completed", "dead") for s in states):
            break
        time.sleep(0.2)
    done = states.count("completed")
    print(f"{done} completed, {states.count('dead')} dead (the 'fail' example, after its "
          f"retry), {len(ids) - done - states.count('dead')} still in flight")
    print("result of the first echo task:", client.get(ids[0])["result"])
PY
"$BIN/tq-admin" queue-depth
"$BIN/tq-admin" stats | head -20 || true

if [ $ONCE -eq 1 ]; then
  log "demo done (--once): stopping"
  exit 0
fi
log "broker and worker keep running; try: $BIN/tq-admin list --status completed --limit 3"
log "REST: curl localhost:8080/health   metrics: curl localhost:9091/metrics   Ctrl-C stops"
wait
