// A task-queue producer on ioredis: SUBMIT tasks, then WAIT-TASK for their results
// (docs/protocol.md).
//
//   TQ_BROKER_ADDR=127.0.0.1:6379 TQ_API_KEY=... node producer.mjs [count]
//
// ioredis speaks RESP3 by default (HELLO 3) and sends INFO as its ready check; the
// broker answers both. Our commands go through call(name, jsonText).
import Redis from "ioredis";

const count = Number(process.argv[2] || "3");
const [host, port] = (process.env.TQ_BROKER_ADDR || "127.0.0.1:6379").split(":");
const redis = new Redis({ host, port: Number(port),
                          password: process.env.TQ_API_KEY || undefined }); // the API key
const call = async (name, arg) => JSON.parse(await redis.call(name, JSON.stringify(arg)));

// One SUBMIT with an array submits up to 1000 tasks in one request.
const submitted = await call("SUBMIT", Array.from({ length: count }, (_, i) => (
  { type: "echo", payload: { n: i }, max_retries: 1 })));
for (const entry of submitted) {
  if (entry.error) throw new Error(`${entry.error.code}: ${entry.error.message}`);
}
for (const { id } of submitted) {
  const task = await call("WAIT-TASK", { id, timeout_ms: 30000 });
  console.log(JSON.stringify({ id, status: task.status, result: task.result }));
}
await redis.quit();
