//! The command line: config checks and bad input answered with exit 2 and one line.

use std::process::Command;

fn notify(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir-notify"))
        .args(args)
        .env("NOTIFY_LOG", "error")
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_documented_example_config_checks() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/notify.example.toml"
    );
    let (code, out, err) = notify(&["check", example]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "ok: 3 workflows, 5 providers");
}

#[test]
fn bad_input_exits_2_with_one_line_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[workflows]]\nid = \"w\"\n[[workflows.steps]]\ntype = \"sms\"\ntemplate.en = { subject = \"x\", body = \"y\" }\n",
    )
    .expect("write");
    let bad = bad.to_string_lossy().into_owned();
    for (args, says) in [
        (
            vec!["check", bad.as_str()],
            "workflows[0].steps[0].template.en.subject",
        ),
        (vec!["serve", "--listen", "nope"], "listen"),
        (
            vec!["serve", "--listen", "0.0.0.0:7439"],
            "not a loopback address",
        ),
        (
            vec!["archive", "read", "/nonexistent.ndjson.gz"],
            "no such file",
        ),
        (vec!["bench", "--provider", "pigeon"], "pigeon"),
    ] {
        let (code, _, err) = notify(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
