//! `periodic push DIR --server URL`: sends a repository's new, changed and deleted source
//! files to a `periodic serve`. What was last pushed to that server is remembered in
//! `DIR/.periodic/pushed-<server hash>` (path → content hash), so a second push sends only
//! what changed since; the state is saved only after the server accepted everything.

use crate::serve::{Push, PushedFile};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// What a push did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Pushed {
    /// Source files in the folder.
    pub files: usize,
    /// Sent (new or changed).
    pub sent: usize,
    /// Sent as deleted.
    pub deleted: usize,
    /// Not sent: the server has them as they are.
    pub unchanged: usize,
}

/// Pushes `dir` to `server` in requests of `batch` files; with `wait`, returns once the
/// server has indexed them.
pub async fn push(dir: &Path, server: &str, batch: usize, wait: bool) -> Result<Pushed, String> {
    let state_path = dir.join(".periodic").join(format!(
        "pushed-{}",
        &blake3::hash(server.trim_end_matches('/').as_bytes()).to_hex()[..16]
    ));
    let before: BTreeMap<String, String> = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let found = crate::index::walk(dir, &dir.join(".periodic"));
    let mut now: BTreeMap<String, String> = BTreeMap::new();
    let mut files: Vec<PushedFile> = Vec::new();
    let mut r = Pushed {
        files: found.len(),
        ..Pushed::default()
    };
    for f in &found {
        let bytes = std::fs::read(&f.abs).map_err(|e| format!("{}: {e}", f.abs.display()))?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        if before.get(&f.rel) != Some(&hash) {
            // Not text: sent as what it decodes to (the parser reads bytes either way).
            let content = String::from_utf8_lossy(&bytes).into_owned();
            files.push(PushedFile {
                path: f.rel.clone(),
                content: Some(content),
                deleted: false,
            });
            r.sent += 1;
        } else {
            r.unchanged += 1;
        }
        now.insert(f.rel.clone(), hash);
    }
    for gone in before.keys().filter(|k| !now.contains_key(*k)) {
        files.push(PushedFile {
            path: gone.clone(),
            content: None,
            deleted: true,
        });
        r.deleted += 1;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let base = server.trim_end_matches('/');
    for chunk in files.chunks(batch) {
        let body = Push {
            files: chunk.to_vec(),
        };
        let resp = http
            .post(format!("{base}/v1/files"))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{base}: {e}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("{base} refused the push ({status}): {text}"));
        }
    }
    if let Some(d) = state_path.parent() {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    std::fs::write(&state_path, serde_json::to_vec(&now).unwrap_or_default())
        .map_err(|e| format!("{}: {e}", state_path.display()))?;
    if wait {
        // The server says how many batches it has still to apply.
        let deadline = std::time::Instant::now() + Duration::from_secs(3600);
        loop {
            let s: serde_json::Value = http
                .get(format!("{base}/v1/status"))
                .send()
                .await
                .map_err(|e| format!("{base}: {e}"))?
                .json()
                .await
                .map_err(|e| format!("{base}: {e}"))?;
            if s["pending"].as_u64() == Some(0) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("{base} has not finished indexing after an hour"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(r)
}
