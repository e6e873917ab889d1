//! The OpenAPI document is valid (openapi-spec-validator) and complete enough that a client
//! generated from it (openapi-python-client) enqueues, fetches and acks a job against the
//! real server.
//!
//! Needs both tools on PATH (`pip install openapi-spec-validator openapi-python-client`);
//! without them the test says it was skipped, unless REQUIRE_OPENAPI_TOOLS=1 (set in CI),
//! which makes their absence a failure.

#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use std::process::Command;

fn tool(name: &str) -> bool {
    let found = Command::new(name).arg("--help").output().is_ok();
    if !found && std::env::var("REQUIRE_OPENAPI_TOOLS").as_deref() == Ok("1") {
        panic!("{name} is not installed and REQUIRE_OPENAPI_TOOLS=1");
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_validates_and_a_generated_client_runs_a_job() {
    if !(tool("openapi-spec-validator") && tool("openapi-python-client")) {
        eprintln!("skipped: openapi-spec-validator or openapi-python-client not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[], &[]);
    let doc = reqwest::get(format!("{}/v1/openapi.json", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spec = dir.path().join("openapi.json");
    std::fs::write(&spec, &doc).unwrap();

    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    // Regression: optional query parameters were declared as required path parameters.
    for (path, method) in [("/v1/jobs", "get"), ("/v1/cache/{ns}/{key}", "put")] {
        for p in v["paths"][path][method]["parameters"].as_array().unwrap() {
            let name = p["name"].as_str().unwrap();
            if !path.contains(&format!("{{{name}}}")) {
                assert_eq!(p["in"], "query", "{path} {name}: {p}");
                assert_eq!(p["required"], false, "{path} {name}: {p}");
            }
        }
    }
    let enqueue = &v["paths"]["/v1/jobs"]["post"]["responses"];
    for code in ["401", "403", "413", "415", "422", "429", "503"] {
        assert!(
            enqueue[code].is_object(),
            "POST /v1/jobs answers {code}: {enqueue}"
        );
    }
    assert!(v["paths"]["/ready"]["get"]["responses"]["503"]["content"].is_object());
    let payload = &v["components"]["schemas"]["NewJobBody"]["properties"]["payload"];
    assert!(
        payload.get("type").is_none(),
        "any JSON, not an object: {payload}"
    );

    let o = Command::new("openapi-spec-validator")
        .arg(&spec)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));

    let out = dir.path().join("gen").join("weir_generated");
    let o = Command::new("openapi-python-client")
        .arg("generate")
        .arg("--path")
        .arg(&spec)
        .arg("--output-path")
        .arg(&out)
        .args(["--meta", "none"])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{said}");
    assert!(
        !said.contains("Warning"),
        "every schema and response generated: {said}"
    );

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openapi/roundtrip.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(dir.path().join("gen"))
        .arg(&server.base)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = r["ids"][0].as_u64().unwrap();
    assert_eq!(r["health"], "ok");
    assert_eq!(r["fetched"], serde_json::json!([id]), "{r}");
    assert_eq!(r["payload"], serde_json::json!([1, "two", null]), "{r}");
    assert_eq!(r["acked"], 1, "{r}");
    assert_eq!(r["state"], "completed", "{r}");
    assert_eq!(r["result"], serde_json::json!({"ok": true}), "{r}");
    assert_eq!(r["listed"], serde_json::json!([id]), "{r}");
}
