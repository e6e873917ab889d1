// BullMQ side of bench/peers/run.sh. Roles: `produce` (bulk enqueue N jobs, or a steady
// RATE/s for SECONDS), `work` (no-op worker; prints its last completion time and the
// enqueue-to-start latencies it saw). Completed jobs are not retained (removeOnComplete).
import { Queue, Worker } from "bullmq";

const [role] = process.argv.slice(2);
const N = Number(process.env.N ?? 200000);
const RATE = Number(process.env.RATE ?? 0);
const SECONDS = Number(process.env.DURATION ?? 10);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 100);
const connection = { host: "127.0.0.1", port: Number(process.env.REDIS_PORT ?? 6379) };
const now = () => performance.timeOrigin + performance.now();
const pad = "x".repeat(80); // {"t":1234567890123.456,"p":"xx…"} is about 100 bytes
const name = "bench";

if (role === "produce") {
  const q = new Queue(name, { connection });
  const opts = { removeOnComplete: true, removeOnFail: true };
  const t0 = now();
  if (RATE > 0) {
    // Steady rate: every 10 ms, the jobs due by then.
    let sent = 0;
    const total = RATE * SECONDS;
    while (sent < total) {
      const due = Math.min(total, Math.floor(((now() - t0) / 1000) * RATE));
      if (due > sent) {
        const jobs = [];
        for (; sent < due; sent++) jobs.push({ name, data: { t: now(), p: pad }, opts });
        await q.addBulk(jobs);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  } else {
    const chunk = 1000;
    const inflight = [];
    for (let i = 0; i < N; i += chunk) {
      const jobs = [];
      for (let j = i; j < Math.min(N, i + chunk); j++) jobs.push({ name, data: { t: now(), p: pad }, opts });
      inflight.push(q.addBulk(jobs));
      if (inflight.length >= 4) await inflight.shift();
    }
    await Promise.all(inflight);
  }
  console.log(JSON.stringify({ start: t0, enqueued_at: now(), sent: RATE > 0 ? RATE * SECONDS : N }));
  await q.close();
} else if (role === "work") {
  const expect = RATE > 0 ? RATE * SECONDS : N;
  let done = 0;
  const lat = [];
  let last = 0;
  await new Promise((resolve) => {
    const w = new Worker(
      name,
      async (job) => {
        if (RATE > 0) lat.push(now() - job.data.t);
      },
      { connection, concurrency: CONCURRENCY, removeOnComplete: { count: 0 } },
    );
    w.on("completed", () => {
      done++;
      last = now();
      if (done >= expect) w.close().then(resolve);
    });
  });
  lat.sort((a, b) => a - b);
  const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] : null);
  console.log(JSON.stringify({ done, last, p50_ms: pct(0.5), p99_ms: pct(0.99) }));
} else {
  console.error("usage: node bullmq.mjs produce|work");
  process.exit(2);
}
