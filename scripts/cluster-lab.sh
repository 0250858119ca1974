#!/usr/bin/env bash
# A local three-node Raft cluster on 127.0.0.1, one command:
#
#   bash scripts/cluster-lab.sh            # start 3 brokers, show cluster-status, keep serving
#   bash scripts/cluster-lab.sh --once     # start, submit and drain a few tasks, stop
#
# Node k (1..3) uses protocol port 70k1, Raft port 70k2 (its protocol port + 1), REST 80k1,
# gRPC 90k1 and metrics 91k1; data in ./tq-lab/nodek (.raft beside it). Override the
# directory with TQ_LAB_DIR. Ctrl-C stops all three. Kill one (see the pids printed) to
# watch a failover:  tq-admin --broker-addr 127.0.0.1:7011 cluster-status
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ONCE=0; [ "${1:-}" = "--once" ] && ONCE=1

ensure_venv "broker,fast"
BIN="$VENV/bin"
LAB="${TQ_LAB_DIR:-$ROOT/tq-lab}"
SECRET="${TQ_LAB_SECRET:-task-queue-lab-secret-$(id -u)}"  # raft.secret: >= 16 chars
mkdir -p "$LAB"

port() { echo "70${1}1"; }
ADDRS="127.0.0.1:$(port 1),127.0.0.1:$(port 2),127.0.0.1:$(port 3)"

for k in 1 2 3; do
  peers=""
  for j in 1 2 3; do [ "$j" = "$k" ] || peers="$peers    - 127.0.0.1:$(port "$j")"$'\n'; done
  cat >"$LAB/node$k.yaml" <<EOF
broker:
  host: 127.0.0.1
  port: $(port "$k")
persistence:
  data_dir: $LAB/node$k
  wal_sync_interval_ms: 100
raft:
  enabled: true
  node_id: node$k
  peers:
$peers  secret: "$SECRET"
  election_timeout_ms: 500
api:
  rest_port: 80${k}1
  grpc_port: 90${k}1
monitoring:
  prometheus_port: 91${k}1
EOF
done

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for k in 1 2 3; do
  "$BIN/tq-broker" --config "$LAB/node$k.yaml" >"$LAB/node$k.log" 2>&1 &
  pids+=($!)
  log "node$k: pid $!, protocol 127.0.0.1:$(port "$k"), raft 127.0.0.1:$(($(port "$k") + 1)), log $LAB/node$k.log"
done

log "waiting for a leader"
"$BIN/python" - "$ADDRS" <<'PY'
import sys, time
from taskqueue.client import Client
deadline = time.time() + 30
while time.time() < deadline:
    for addr in sys.argv[1].split(","):
        try:
            with Client(addr, connect_timeout=0.5, reply_timeout=2) as c:
                status = c.cluster()
            if status.get("leader"):
                print(f"leader: {status['leader']} (term {status['term']})")
                sys.exit(0)
        except Exception:
            pass
    time.sleep(0.2)
sys.exit("no leader after 30s: see the node logs")
PY
"$BIN/tq-admin" --broker-addr "127.0.0.1:$(port 1)" cluster-status || true

if [ $ONCE -eq 1 ]; then
  log "submitting through a follower-or-leader list and draining"
  "$BIN/python" - "$ADDRS" <<'PY'
import sys, time
from taskqueue.client import Client
addrs = sys.argv[1].split(",")
with Client(addrs) as c:
    ids = [c.submit("echo", {"n": i}, queue="lab")["id"] for i in range(50)]
with Client(addrs[::-1], identity={"worker_id": "lab-worker", "queues": ["lab"]}) as w:
    done = 0
    while done < len(ids):
        for job in w.fetch(["lab"], count=50, timeout_ms=1000):
            w.ack(job["id"], job["token"], {"ok": True})
            done += 1
    print(f"{done} tasks submitted and completed through the cluster")
for addr in addrs:
    with Client(addr) as c:
        q = c.queues().get("lab", {})
        print(f"{addr}: lab queue completed={q.get('completed')} pending={q.get('pending')}")
PY
  exit 0
fi
log "cluster serving on $ADDRS; Ctrl-C stops all three"
wait
