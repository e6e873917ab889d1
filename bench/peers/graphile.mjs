// graphile-worker side of bench/peers/run.sh, against the local PostgreSQL in a schema of its
// own (dropped by `clean`). Roles: `migrate`, `produce` (addJobs of N in chunks, or a steady
// RATE/s for DURATION s), `work` (no-op task; prints when the last completion reached the
// database and the enqueue-to-start latencies it saw), `clean`.
//
// Settings are the ones graphile-worker's performance page recommends for throughput —
// concurrentJobs 24, a pool of 25, a local queue and batched completions
// (completeJobBatchDelay 0) — but with a local queue of 5,000 (LOCAL_QUEUE) instead of 500:
// with the backlog a fast producer builds, the local queue is what limits it, and on this
// machine 200,000 jobs ran end to end at ~6,700/s with 500, ~11,500/s with 1,000, ~16,900/s
// with 2,000 and ~20,400/s with 5,000. graphile-worker deletes completed jobs itself.
import { Logger, makeWorkerUtils, run, runMigrations } from "graphile-worker";

const [role] = process.argv.slice(2);
const N = Number(process.env.N ?? 200000);
const RATE = Number(process.env.RATE ?? 0);
const SECONDS = Number(process.env.DURATION ?? 10);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 24);
const connectionString = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const schema = process.env.SCHEMA ?? "weir_bench_graphile";
const now = () => performance.timeOrigin + performance.now();
const pad = "x".repeat(80); // {"t":1234567890123.456,"p":"xx…"} is about 100 bytes
const task = "bench";
// Warnings and errors only: the default logger writes a line per completed job.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`[graphile-worker] ${level}: ${message}`);
});
const shared = { connectionString, schema, logger };

if (role === "migrate") {
  await runMigrations(shared);
} else if (role === "clean") {
  const utils = await makeWorkerUtils(shared);
  await utils.withPgClient((c) => c.query(`drop schema if exists ${schema} cascade`));
  await utils.release();
} else if (role === "produce") {
  const utils = await makeWorkerUtils({ ...shared, maxPoolSize: 10 });
  const t0 = now();
  if (RATE > 0) {
    // Steady rate: every 10 ms, the jobs due by then.
    let sent = 0;
    const total = RATE * SECONDS;
    while (sent < total) {
      const due = Math.min(total, Math.floor(((now() - t0) / 1000) * RATE));
      if (due > sent) {
        const jobs = [];
        for (; sent < due; sent++) jobs.push({ identifier: task, payload: { t: now(), p: pad } });
        await utils.addJobs(jobs);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  } else {
    const chunk = 1000;
    const inflight = [];
    for (let i = 0; i < N; i += chunk) {
      const jobs = [];
      for (let j = i; j < Math.min(N, i + chunk); j++) jobs.push({ identifier: task, payload: { t: now(), p: pad } });
      inflight.push(utils.addJobs(jobs));
      if (inflight.length >= 4) await inflight.shift();
    }
    await Promise.all(inflight);
  }
  console.log(JSON.stringify({ start: t0, enqueued_at: now(), sent: RATE > 0 ? RATE * SECONDS : N }));
  await utils.release();
} else if (role === "work") {
  const expect = RATE > 0 ? RATE * SECONDS : N;
  let done = 0;
  let last = 0;
  const lat = [];
  let finished;
  const allDone = new Promise((r) => (finished = r));
  const runner = await run({
    ...shared,
    concurrency: CONCURRENCY,
    maxPoolSize: CONCURRENCY + 1,
    noHandleSignals: true,
    pollInterval: 1000,
    preset: { worker: { localQueue: { size: Number(process.env.LOCAL_QUEUE ?? 5000) }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
    taskList: {
      [task]: async (payload) => {
        if (RATE > 0) lat.push(now() - payload.t);
        if (++done >= expect) {
          last = now();
          finished();
        }
      },
    },
  });
  await allDone;
  // The end is when the last handler returned. Completions are batched (written on the next
  // tick with completeJobBatchDelay 0), so this is a little before the last one is in the
  // database — the generous reading; stopping the runner flushes the batch.
  await runner.stop();
  lat.sort((a, b) => a - b);
  const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] : null);
  console.log(JSON.stringify({ done, last, p50_ms: pct(0.5), p99_ms: pct(0.99) }));
} else {
  console.error("usage: node graphile.mjs migrate|produce|work|clean");
  process.exit(2);
}
