//! Helpers for tests on PostgreSQL: the database URL, a schema per test (dropped after),
//! a cluster of restartable `weir serve` processes on one schema, and the load that crash
//! tests run through it with the ledger that checks what survived.

use super::{raw, Server};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use weir_api::{AckItem, NewJobBody};
use weir_client::{Client, ClientError};

/// The test database: `TEST_WEIR_POSTGRES`, default the local one.
pub fn pg_url() -> String {
    std::env::var("TEST_WEIR_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of the test's own, dropped when the test ends.
pub struct Schema(pub String);

impl Schema {
    pub fn new(test: &str) -> Schema {
        Schema(format!(
            "e2e_{test}_{}_{}",
            std::process::id(),
            fastrand::u32(..)
        ))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        weir_store_postgres::drop_schema_blocking(&pg_url(), &self.0);
    }
}

/// Servers on one schema, restartable; clients pick one at random for every call.
pub struct Cluster {
    pub schema: Schema,
    dirs: Vec<tempfile::TempDir>,
    servers: Mutex<Vec<Server>>,
    clients: RwLock<Vec<Client>>,
}

impl Cluster {
    pub fn start(test: &str, n: usize) -> Cluster {
        let schema = Schema::new(test);
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let servers: Vec<Server> = dirs.iter().map(|d| Self::spawn(&schema.0, d)).collect();
        let clients = servers.iter().map(Server::client).collect();
        Cluster {
            schema,
            dirs,
            servers: Mutex::new(servers),
            clients: RwLock::new(clients),
        }
    }

    fn spawn(schema: &str, dir: &tempfile::TempDir) -> Server {
        let url = pg_url();
        Server::start(
            dir.path(),
            &["--store", &url, "--store-schema", schema],
            &[("WEIR_STORE_POOL_SIZE", "8")],
        )
    }

    pub fn any(&self) -> Client {
        let clients = self.clients.read().unwrap();
        clients[fastrand::usize(..clients.len())].clone()
    }

    /// SIGKILL server `i`, then start it again.
    pub fn crash(&self, i: usize) {
        let mut servers = self.servers.lock().unwrap();
        servers[i].kill9();
        let fresh = Self::spawn(&self.schema.0, &self.dirs[i]);
        self.clients.write().unwrap()[i] = fresh.client();
        servers[i] = fresh;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in self.servers.lock().unwrap().iter_mut() {
            s.kill9();
        }
    }
}

/// What the servers acknowledged, and every error status they answered with.
#[derive(Default)]
pub struct Ledger {
    /// Ids of jobs whose enqueue a server acknowledged.
    pub enqueued: HashSet<u64>,
    /// How many times a server said it applied an ack of each job.
    pub applied: HashMap<u64, u32>,
    /// HTTP statuses of the problems the servers answered (transport errors not counted).
    pub problems: HashMap<u16, u64>,
}

impl Ledger {
    fn saw(&mut self, e: &ClientError) {
        if let ClientError::Problem(p) = e {
            *self.problems.entry(p.status).or_default() += 1;
        }
    }
}

/// Two producers (batches of 20, leases of 1.5 s) and four fetch-and-ack workers through
/// random servers of `cluster`, until `stop_producing` and `stop_working`.
pub struct Load {
    pub ledger: Arc<Mutex<Ledger>>,
    stop_producing: Arc<AtomicBool>,
    stop_working: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(cluster: &Arc<Cluster>, queue: &'static str) -> Load {
        let ledger: Arc<Mutex<Ledger>> = Arc::default();
        let stop_producing = Arc::new(AtomicBool::new(false));
        let stop_working = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for p in 0..2u64 {
            let (cluster, ledger, stop) = (cluster.clone(), ledger.clone(), stop_producing.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let batch: Vec<NewJobBody> = (0..20)
                        .map(|k| {
                            let mut j = NewJobBody::new(
                                queue,
                                "t",
                                raw(serde_json::json!({ "p": p, "n": n + k })),
                            );
                            // Leases of a dead server's lost replies expire soon.
                            j.timeout_ms = Some(1_500);
                            j
                        })
                        .collect();
                    n += 20;
                    // An error leaves the outcome unknown: only acknowledged ids count.
                    match cluster.any().enqueue(batch).await {
                        Ok(ids) => ledger.lock().unwrap().enqueued.extend(ids),
                        Err(e) => {
                            ledger.lock().unwrap().saw(&e);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        for w in 0..4 {
            let (cluster, ledger, stop) = (cluster.clone(), ledger.clone(), stop_working.clone());
            tasks.push(tokio::spawn(async move {
                let name = format!("w{w}");
                while !stop.load(Ordering::SeqCst) {
                    let got = match cluster.any().fetch(&[queue.into()], 10, 200, &name).await {
                        Ok(g) => g,
                        Err(e) => {
                            ledger.lock().unwrap().saw(&e);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    if got.is_empty() {
                        continue;
                    }
                    let acks: Vec<AckItem> = got.iter().map(AckItem::of).collect();
                    // The same acks again, through any server, until one answers: a reply
                    // lost with a killed server must not count as an ack, nor apply twice.
                    loop {
                        match cluster.any().ack(acks.clone()).await {
                            Ok(reply) => {
                                let refused: HashSet<u64> =
                                    reply.rejected.iter().map(|r| r.id).collect();
                                let mut l = ledger.lock().unwrap();
                                for a in &acks {
                                    if !refused.contains(&a.id) {
                                        *l.applied.entry(a.id).or_default() += 1;
                                    }
                                }
                                break;
                            }
                            Err(e) => {
                                ledger.lock().unwrap().saw(&e);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }
            }));
        }
        Load {
            ledger,
            stop_producing,
            stop_working,
            tasks,
        }
    }

    /// Stops enqueueing, lets the workers finish every job (lost leases included), then
    /// checks the ledger against the completed jobs; returns how many jobs ran more than
    /// once.
    pub async fn finish(self, cluster: &Cluster, queue: &str) -> usize {
        self.stop_producing.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(q) = cluster.any().queue(queue).await {
                let open: u64 = ["waiting", "scheduled", "active", "failed"]
                    .iter()
                    .map(|s| q.counts[*s])
                    .sum();
                if open == 0 {
                    break;
                }
                assert!(Instant::now() < deadline, "not drained: {:?}", q.counts);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop_working.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        let c = cluster.any();
        let mut completed: HashMap<u64, u32> = HashMap::new();
        let mut cursor = None;
        loop {
            let page = c
                .jobs(Some(queue), Some("completed"), cursor, 1000)
                .await
                .unwrap();
            for j in &page.jobs {
                completed.insert(j.id, j.attempt);
            }
            match page.next_cursor {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        let ledger = self.ledger.lock().unwrap();
        assert!(
            ledger.enqueued.len() > 500,
            "the load ran: {} acknowledged enqueues",
            ledger.enqueued.len()
        );
        for id in &ledger.enqueued {
            assert!(
                completed.contains_key(id),
                "acknowledged job {id} is missing or unfinished"
            );
        }
        for (id, n) in &ledger.applied {
            assert_eq!(*n, 1, "job {id}: its ack was applied {n} times");
            assert!(
                completed.contains_key(id),
                "applied ack of job {id} is lost"
            );
        }
        let again = completed.values().filter(|&&a| a > 1).count();
        eprintln!(
            "{} acknowledged enqueues, {} acks applied, {} jobs completed, {} delivered more \
             than once; problems by status: {:?}",
            ledger.enqueued.len(),
            ledger.applied.len(),
            completed.len(),
            again,
            ledger.problems
        );
        again
    }

    /// The problems answered so far, by status.
    pub fn problems(&self) -> HashMap<u16, u64> {
        self.ledger.lock().unwrap().problems.clone()
    }
}
