// The dashboard's only way to the broker: the public REST API (docs/api.md), with the API
// key in the same Authorization header curl would send. The key lives in this tab only: a
// module variable, mirrored to sessionStorage so a reload does not log out (sessionStorage
// dies with the tab). Never localStorage, a cookie or a URL.

const STORE = "tq.dashboard.key";
let apiKey = sessionStorage.getItem(STORE);
const readFromListeners = [];

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

export function setKey(key) {
  apiKey = key || null;
  if (apiKey) sessionStorage.setItem(STORE, apiKey);
  else sessionStorage.removeItem(STORE);
}

export function hasKey() {
  return Boolean(apiKey);
}

// Reads carry read_from: which node answered and how far behind the leader it may be.
export function onReadFrom(listener) {
  readFromListeners.push(listener);
}

async function request(method, url, body, {auth = true, okStatuses = []} = {}) {
  const headers = {"Accept": "application/json"};
  if (auth && apiKey) headers["Authorization"] = `Bearer ${apiKey}`;
  const init = {method, headers, cache: "no-store", credentials: "omit", redirect: "error"};
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, "UNREACHABLE", `the broker did not answer (${err.message})`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  }
  if (!response.ok && !okStatuses.includes(response.status)) {
    const error = (data && data.error) || {};
    let message = error.message || `HTTP ${response.status}`;
    if (error.leader !== undefined) message += ` (leader: ${error.leader || "unknown"})`;
    throw new ApiError(response.status, error.code || "HTTP", message, data);
  }
  if (data && data.read_from) readFromListeners.forEach((fn) => fn(data.read_from));
  return data;
}

const v1 = (path) => `/api/v1${path}`;
const get = (path, params) => {
  const query = new URLSearchParams(
    Object.entries(params || {}).filter(([, v]) => v !== "" && v !== null && v !== undefined));
  const text = query.toString();
  return request("GET", v1(path) + (text ? `?${text}` : ""));
};
const post = (path, body) => request("POST", v1(path), body);
const seg = encodeURIComponent;

export const api = {
  whoami: () => get("/whoami"),
  stats: () => get("/stats"),
  queues: () => get("/queues"),
  tasks: (params) => get("/tasks", params),
  task: (id) => get(`/tasks/${seg(id)}`),
  cancel: (id) => post(`/tasks/${seg(id)}/cancel`),
  requeue: (id) => post(`/tasks/${seg(id)}/requeue`),
  pause: (queue) => post(`/queues/${seg(queue)}/pause`),
  resume: (queue) => post(`/queues/${seg(queue)}/resume`),
  workers: () => get("/workers"),
  workerState: (id, state) => post(`/workers/${seg(id)}/state`, {state}),
  cluster: () => get("/cluster"),
  transferLeader: () => post("/cluster/transfer-leader"),
  limits: () => get("/limits"),
  setLimit: (queue, spec) => request("PUT", v1(`/queues/${seg(queue)}/limit`), spec),
  clearLimit: (queue) => request("DELETE", v1(`/queues/${seg(queue)}/limit`)),
  schedules: (params) => get("/schedules", params),
  schedulePause: (id) => post(`/schedules/${seg(id)}/pause`),
  scheduleResume: (id) => post(`/schedules/${seg(id)}/resume`),
  scheduleRun: (id) => post(`/schedules/${seg(id)}/run`),
  workflows: (params) => get("/workflows", params),
  workflow: (id, params) => get(`/workflows/${seg(id)}`, params),
  workflowCancel: (id) => post(`/workflows/${seg(id)}/cancel`),
  // Open endpoint (no key): 503 is an answer here (unhealthy), not a failure.
  health: () => request("GET", "/health", undefined, {auth: false, okStatuses: [503]}),
};
