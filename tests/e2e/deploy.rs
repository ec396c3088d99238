//! Deployment: the systemd units in deploy/systemd, `/health` on the server and the forwarder,
//! and `/metrics` of both as Prometheus' own checker reads them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const UNITS: [&str; 3] = [
    "pushnote-mq.service",
    "pushnote-server@.service",
    "pushnote-server-redis@.service",
];

fn unit(name: &str) -> String {
    std::fs::read_to_string(repo_path(&format!("deploy/systemd/{name}"))).unwrap()
}

/// The directory the test binaries are in, where the units name /usr/local/bin/.
fn bin_dir() -> String {
    let path = bin("pushnote-server");
    path.parent().unwrap().to_str().unwrap().to_owned()
}

/// Runs `systemd-analyze verify` on the units `names` in `dir`; fails on an error or a warning.
pub(crate) fn systemd_verify(dir: &std::path::Path, names: &[impl AsRef<std::ffi::OsStr>]) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(names)
        .current_dir(dir)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify_without_a_warning() {
    let dir = tempdir();
    let mut names = Vec::new();
    for name in UNITS {
        let text = unit(name).replace("/usr/local/bin", &bin_dir());
        // A template is verified as one of its instances.
        let file = name.replace("@.", "@8081.");
        std::fs::write(dir.join(&file), text).unwrap();
        names.push(file);
    }
    systemd_verify(&dir, &names);
    for name in UNITS {
        let text = unit(name);
        for hardening in [
            "DynamicUser=yes",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=\n",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "SystemCallFilter=@system-service",
        ] {
            assert!(text.contains(hardening), "{name}: {hardening}");
        }
    }
    assert!(unit("pushnote-server@.service")
        .contains("EnvironmentFile=/etc/pushnote/pushnote-server.env"));
    assert!(unit("pushnote-server-redis@.service")
        .contains("EnvironmentFile=/etc/pushnote/pushnote-server-redis.env"));
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pushnote-units-{}", rand_id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `Environment=` lines of a unit, and its `ExecStart=` arguments after the binary.
pub(crate) fn service(name: &str) -> (HashMap<String, String>, Vec<String>) {
    let text = unit(name);
    let mut env = HashMap::new();
    let mut args = Vec::new();
    for line in text.lines() {
        if let Some(kv) = line.strip_prefix("Environment=") {
            let (k, v) = kv.split_once('=').unwrap();
            env.insert(k.to_owned(), v.to_owned());
        } else if let Some(cmd) = line.strip_prefix("ExecStart=") {
            args = cmd.split_whitespace().skip(1).map(str::to_owned).collect();
        }
    }
    (env, args)
}

pub(crate) fn spawn_as_unit(binary: &str, env: &HashMap<String, String>, args: &[String]) -> Proc {
    let mut cmd = Command::new(bin(binary));
    cmd.env_clear().envs(env).args(args);
    Proc::spawn(&mut cmd)
}

async fn get(url: &str) -> (u16, String) {
    http_get(url).await
}

/// Runs `promtool check metrics` on `text`; its complaints, if any.
pub(crate) fn promtool(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        said.trim().to_owned()
    } else {
        format!("failed: {said}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_units_settings_start_a_forwarder_and_a_server_that_report_ready_and_valid_metrics() {
    // The forwarder as its unit starts it, on free ports instead of the unit's.
    let (mut env, args) = service("pushnote-mq.service");
    let metrics_port = free_port();
    env.insert("PUSHNOTE_MQ_SUB".into(), "tcp://127.0.0.1:*".into());
    env.insert("PUSHNOTE_MQ_PUB".into(), "tcp://127.0.0.1:*".into());
    env.insert(
        "PUSHNOTE_MQ_METRICS".into(),
        format!("127.0.0.1:{metrics_port}"),
    );
    let mq = spawn_as_unit("pushnote-mq", &env, &args);
    let line = mq.value_after("apps publish to");
    let (_, publish) = line.split_once(", servers subscribe at ").unwrap();
    // The server as its unit starts it, instance 0 (a free port), with the secret of its
    // environment file.
    let (mut env, args) = service("pushnote-server@.service");
    env.insert("PUSHNOTE_MQ_SOCKET".into(), publish.to_owned());
    env.insert("PUSHNOTE_SECRET".into(), SECRET.into());
    let args: Vec<String> = args.iter().map(|a| a.replace("%i", "0")).collect();
    let server = spawn_as_unit("pushnote-server", &env, &args);
    let url = server.value_after("listening on");
    let origin = &url[..url[7..].find('/').unwrap() + 7];

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (code, body) = get(&format!("{origin}/health")).await;
        if code == 200 {
            assert!(body.contains(r#""status":"ready""#), "{body}");
            assert!(body.contains(r#""bus":"connected""#), "{body}");
            break;
        }
        assert_eq!(code, 503, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server connects: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = get(&format!("http://127.0.0.1:{metrics_port}/health")).await;
    assert_eq!((code, body.as_str()), (200, r#"{"status":"ready"}"#));

    let (code, server_metrics) = get(&format!("{origin}/metrics")).await;
    assert_eq!(code, 200);
    assert!(
        server_metrics.contains("pushnote_bus_connected 1"),
        "{server_metrics}"
    );
    assert_eq!(promtool(&server_metrics), "", "the server's /metrics");
    let (code, mq_metrics) = get(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    assert_eq!(code, 200);
    assert!(mq_metrics.contains("pushnote_mq_running 1"), "{mq_metrics}");
    assert_eq!(promtool(&mq_metrics), "", "the forwarder's /metrics");
    drop(server);
    drop(mq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_health_follows_its_forwarder() {
    let port = free_port();
    let publish = format!("tcp://127.0.0.1:{port}");
    // No forwarder yet: the server runs, but is not ready.
    let srv = spawn_server(
        &mut server_cmd(&[
            "--port",
            "0",
            "--address",
            "127.0.0.1",
            "--mq_socket",
            &publish,
        ]),
        false,
    );
    let health = format!("{}/health", srv.origin);
    let (code, body) = get(&health).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(r#""status":"unavailable""#), "{body}");
    let wait_for = |want: u16| {
        let health = health.clone();
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let (code, body) = get(&health).await;
                if code == want {
                    return body;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{want} in time: {body}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let fwd = forwarder_with(&["--sub", "tcp://127.0.0.1:*", "--pub", &publish]);
    wait_for(200).await;
    drop(fwd);
    let body = wait_for(503).await;
    assert!(body.contains(r#""bus":"disconnected""#), "{body}");
    let fwd = forwarder_with(&["--sub", "tcp://127.0.0.1:*", "--pub", &publish]);
    wait_for(200).await;
    drop(fwd);
}
