// What the Overview charts plot: /stats sampled on every poll (whatever page is open) and
// kept in this tab's memory for the last WINDOW seconds. Throughput is the change of the
// cluster-wide lifetime totals between two samples, divided by the time between them.

export const WINDOW = 300;
const samples = [];  // {t, totals, tasks}

export function record(stats) {
  const t = Date.now() / 1000;
  samples.push({t, totals: stats.totals || {}, tasks: stats.tasks || {}});
  while (samples.length && samples[0].t < t - WINDOW - 5) samples.shift();
}

// The span the charts show: what this tab has seen, at least MIN_SPAN, at most WINDOW.
const MIN_SPAN = 30;
export function span() {
  if (!samples.length) return MIN_SPAN;
  return Math.min(WINDOW, Math.max(MIN_SPAN, Date.now() / 1000 - samples[0].t));
}

export function spanLabel() {
  const secs = span();
  return secs >= 120 ? `last ${Math.round(secs / 60)} minutes` : `last ${Math.round(secs)} s`;
}

export function clear() {
  samples.length = 0;
}

// [[t, per-second rate of totals[name]], ...]
export function rate(name) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    const dt = b.t - a.t;
    if (dt <= 0) continue;
    const delta = (b.totals[name] || 0) - (a.totals[name] || 0);
    out.push([b.t, Math.max(0, delta) / dt]);
  }
  return out;
}

// [[t, tasks in status(es)], ...] summed over the given statuses
export function depth(...statuses) {
  return samples.map((x) => [x.t, statuses.reduce((sum, st) => sum + (x.tasks[st] || 0), 0)]);
}
