//! Presence from the shell: `pushnote presence-token` mints the token a real server admits a
//! page into a presence channel with, as the member it names, and `pushnote presence` lists
//! the members a `--single` server, and a forwarder, know; refusals say why.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// Runs the `pushnote` command with the test secret and, if given, `PUSHNOTE_API_KEY`.
fn cli(args: &[&str], api_key: Option<&str>) -> Output {
    let mut cmd = Command::new(bin("pushnote"));
    cmd.args(args)
        .env("PUSHNOTE_SECRET", SECRET)
        .env_remove("PUSHNOTE_API_KEY")
        .env_remove("PUSHNOTE_HTTP_URL");
    if let Some(key) = api_key {
        cmd.env("PUSHNOTE_API_KEY", key);
    }
    cmd.output().expect("pushnote runs")
}

/// The standard output of a run that must have succeeded, trimmed.
fn stdout_of(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The standard error of a run that must have failed.
fn stderr_of_failure(out: Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The presence token the command mints for `user` (with `info`, as given).
fn presence_token(channel: &str, user: &str, info: Option<&str>) -> String {
    let mut args = vec!["presence-token", channel, "--user", user];
    args.extend(info.map(|info| ["--info", info]).into_iter().flatten());
    stdout_of(cli(&args, None))
}

/// Joins `channel` with `token`; returns the server's reply, past the `pushnote:presence`
/// messages that may come before it (PROTOCOL §6, "Presence").
async fn join(client: &mut Client, channel: &str, token: &str) -> Value {
    client
        .emit(json!({"name": "subscribe", "data": {"channel": channel, "token": token, "replies": true}}))
        .await;
    loop {
        let reply = client.next().await;
        if reply["name"] != "pushnote:presence" {
            return reply;
        }
    }
}

/// Waits until `pushnote presence` prints `expected` (the lines, in any order) for `channel`
/// at `url`: servers learn of their members' comings and goings over the bus.
fn members_become(url: &str, channel: &str, expected: &[&str]) {
    let mut expected: Vec<&str> = expected.to_vec();
    expected.sort_unstable();
    let deadline = Instant::now() + WAIT;
    loop {
        let out = stdout_of(cli(&["presence", channel, "--url", url], Some(API_KEY)));
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort_unstable();
        if lines == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel}: members {lines:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_presence_token_admits_its_member_and_presence_lists_the_members() {
    let srv = single_server(&["--api-key", API_KEY, "--secret", SECRET]);
    let channel = format!("presence-room-{}", rand_id());
    let ann_line = r#"{"user":"42","info":{"name":"Ann","n":1.50}}"#;
    let bo_line = r#"{"user":"7","info":null}"#;

    // The token names the member, info without its white space and as written.
    let token = presence_token(&channel, "42", Some(r#"{ "name": "Ann", "n": 1.50 }"#));
    assert!(
        token.starts_with(&format!("{channel}:{ann_line}:")),
        "{token}"
    );

    let mut ann = Client::connect(&srv).await;
    let ann_member: Value = serde_json::from_str(ann_line).unwrap();
    assert_eq!(
        join(&mut ann, &channel, &token).await,
        json!({"name": "pushnote:subscribed", "data": {
            "channel": channel, "me": ann_member, "members": [ann_member]}})
    );
    members_become(&srv.origin, &channel, &[ann_line]);

    let mut bo = Client::connect(&srv).await;
    let reply = join(&mut bo, &channel, &presence_token(&channel, "7", None)).await;
    assert_eq!(
        reply["data"]["me"],
        json!({"user": "7", "info": null}),
        "{reply}"
    );
    members_become(&srv.origin, &channel, &[ann_line, bo_line]);

    drop(ann);
    members_become(&srv.origin, &channel, &[bo_line]);

    // Refusals say why, and never show the key.
    let wrong = "another-api-key-0123456789-Vq7Lm2Xc9Rb4";
    let err = stderr_of_failure(cli(
        &["presence", &channel, "--url", &srv.origin],
        Some(wrong),
    ));
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains(wrong) && !err.contains(API_KEY), "{err}");
    let err = stderr_of_failure(cli(&["presence", &channel, "--url", &srv.origin], None));
    assert!(err.contains("--api-key"), "{err}");
    let err = stderr_of_failure(cli(
        &["presence", "room-7", "--url", &srv.origin],
        Some(API_KEY),
    ));
    assert!(err.contains("not a presence channel"), "{err}");
    let err = stderr_of_failure(cli(
        &[
            "presence",
            &channel,
            "--url",
            &format!("http://127.0.0.1:{}", free_port()),
        ],
        Some(API_KEY),
    ));
    assert!(err.contains("cannot reach"), "{err}");
    let err = stderr_of_failure(cli(
        &["presence-token", &channel, "--user", "42", "--info", "Ann"],
        None,
    ));
    assert!(err.contains("not JSON"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarder_lists_the_members_its_servers_announce() {
    let fwd = forwarder_with_key(&[]);
    let publish_url = fwd.proc.value_after("/publish at");
    let origin = publish_url.trim_end_matches("/publish").to_owned();
    let srv = server(&fwd, &[]);
    let channel = format!("presence-room-{}", rand_id());
    let line = r#"{"user":"42","info":"Ann"}"#;

    let mut ann = Client::connect(&srv).await;
    let reply = join(
        &mut ann,
        &channel,
        &presence_token(&channel, "42", Some(r#""Ann""#)),
    )
    .await;
    assert_eq!(reply["name"], "pushnote:subscribed", "{reply}");
    members_become(&origin, &channel, &[line]);
    drop(ann);
    members_become(&origin, &channel, &[]);
}
