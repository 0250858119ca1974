// A task-queue worker on node-redis, following docs/protocol.md: HELLO with a worker_id,
// FETCH, run the handler, ACK or FAIL with the job's token, HEARTBEAT while it runs, BYE.
//
//   npm install                       (in this directory: node-redis and ioredis)
//   TQ_BROKER_ADDR=127.0.0.1:6379 TQ_API_KEY=... node worker.mjs [--queue default] [--max-tasks N]
//
// node-redis speaks RESP3 by default (HELLO 3); the broker answers it. Our commands go
// through sendCommand with one JSON argument each; replies are JSON text, "OK" or null.
import { createClient } from "redis";
import os from "node:os";

const handlers = {
  // type -> async (payload) => result. A thrown error FAILs the task (retried per its
  // max_retries); an error with .retry = false sends it straight to dead.
  echo: async (payload) => payload,
  add: async ({ a, b }) => a + b,
};

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const queue = option("--queue", "default");
const maxTasks = Number(option("--max-tasks", "0")); // 0: run until SIGINT/SIGTERM
const [host, port] = (process.env.TQ_BROKER_ADDR || "127.0.0.1:6379").split(":");
const workerId = `${os.hostname()}-${process.pid}-node`;

const client = createClient({
  socket: { host, port: Number(port) },
  password: process.env.TQ_API_KEY || undefined, // the API key (auth off: leave it unset)
});
client.on("error", (err) => console.error("broker connection:", err.message));
await client.connect();
const call = async (name, arg) => {
  const reply = await client.sendCommand(arg === undefined ? [name] : [name, JSON.stringify(arg)]);
  return typeof reply === "string" && /^[[{]/.test(reply) ? JSON.parse(reply) : reply;
};

const hello = await call("HELLO", { v: 1, worker_id: workerId, hostname: os.hostname(),
                                    pid: process.pid, queues: [queue], concurrency: 1,
                                    labels: ["node"] });
console.log(`worker ${workerId} on ${queue} (broker node ${hello.node_id}, ${hello.role})`);

let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => { stopping = true; });

let done = 0;
while (!stopping && (maxTasks === 0 || done < maxTasks)) {
  const jobs = await call("FETCH", { queues: [queue], count: 1, timeout_ms: 2000 });
  if (jobs === null) continue; // nothing ready within timeout_ms
  for (const job of jobs) {
    // Keep the lease while the handler runs (a lease runs out after lease_timeout_secs).
    const beat = setInterval(() => {
      call("HEARTBEAT", { tasks: [[job.id, job.token]] })
        .then((reply) => { if (reply.state === "stop") stopping = true; })
        .catch((err) => console.error("heartbeat:", err.message));
    }, hello.heartbeat_interval_secs * 1000);
    try {
      const handler = handlers[job.type];
      if (!handler) throw Object.assign(new Error(`no handler for type ${job.type}`), { retry: false });
      const result = await handler(job.payload);
      await call("ACK", { id: job.id, token: job.token, result: result ?? null });
    } catch (err) {
      // LEASELOST here means the task was requeued or cancelled meanwhile: nothing to do.
      await call("FAIL", { id: job.id, token: job.token, error: `${err.name}: ${err.message}`,
                           backtrace: err.stack ?? "", retry: err.retry !== false })
        .catch((failErr) => console.error("fail:", failErr.message));
    } finally {
      clearInterval(beat);
    }
    done += 1;
  }
}
await call("BYE");
await client.quit();
console.log(`worker ${workerId} done after ${done} task(s)`);
