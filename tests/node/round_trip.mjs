// One library (argv[2]: "node-redis" or "ioredis") connecting with its defaults, the API
// key as the password, then submit, get, fetch, ack and fail through its generic call.
// Prints one JSON line of what it saw; exits non-zero on any error. Run by
// tests/test_redis_clients_node.py from the directory where npm installed the libraries.
import { createClient } from "redis";
import Redis from "ioredis";

const [library, addr, apiKey, queue] = process.argv.slice(2);
const [host, port] = addr.split(":");
// A refused key is final: stop here instead of letting the library reconnect forever.
const onError = (err) => {
  console.error("client error:", err.message);
  if (err.message.includes("NOAUTH")) process.exit(1);
};

async function open() {
  if (library === "node-redis") {
    const client = createClient({ socket: { host, port: Number(port) }, password: apiKey || undefined });
    client.on("error", onError);
    await client.connect();
    return { call: (...args) => client.sendCommand(args), close: () => client.quit() };
  }
  const client = new Redis({ host, port: Number(port), password: apiKey || undefined,
                             maxRetriesPerRequest: 1 });
  client.on("error", onError);
  return { call: (name, ...args) => client.call(name, ...args), close: () => client.quit() };
}

const json = (reply) => (reply === null ? null : JSON.parse(reply));
const r = await open();
const seen = { pong: await r.call("PING") };
const first = json(await r.call("SUBMIT", JSON.stringify({ type: "echo", queue, payload: { n: 1 } })));
const second = json(await r.call("SUBMIT", JSON.stringify({ type: "echo", queue, payload: { n: 2 } })));
seen.submitted = [first.status, second.status];
seen.payload = json(await r.call("GET", JSON.stringify({ id: first.id }))).payload;
await r.call("HELLO", JSON.stringify({ v: 1, worker_id: `${library}-${queue}`, queues: [queue] }));
const jobs = json(await r.call("FETCH", JSON.stringify({ queues: [queue], count: 2, timeout_ms: 2000 })));
seen.fetched = jobs.map((j) => j.id).join() === [first.id, second.id].join();
seen.ack = await r.call("ACK", JSON.stringify({ id: jobs[0].id, token: jobs[0].token, result: "done" }));
seen.fail = await r.call("FAIL", JSON.stringify({ id: jobs[1].id, token: jobs[1].token,
                                                  error: "Error: no", retry: false }));
seen.final = [json(await r.call("GET", JSON.stringify({ id: first.id }))).status,
              json(await r.call("GET", JSON.stringify({ id: second.id }))).status];
seen.empty = await r.call("FETCH", JSON.stringify({ queues: [queue], timeout_ms: 0 }));
try {
  await r.call("SUBMIT", JSON.stringify({ type: "echo", priority: 99 }));
} catch (err) {
  seen.error = err.message;
}
await r.close();
console.log(JSON.stringify(seen));
