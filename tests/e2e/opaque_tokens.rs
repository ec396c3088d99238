//! Opaque tokens (`--opaque-tokens`): tokens the app makes itself, as the original pushnote's
//! custom tokenizers did. Holding the token is the permission; the bus and the logs only ever
//! see a keyed hash of it.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::support::*;

/// A token as an app's tokenizer would make one: a random string kept per user.
fn opaque_token() -> String {
    format!("op{:x}{:x}q{}", now_micros(), std::process::id(), rand_id())
}

/// Subscribes with `token`, asking for replies, and returns the reply.
async fn subscribe(c: &mut Client, token: &str) -> Value {
    c.emit(json!({"name": "subscribe", "data": {"token": token, "replies": true}}))
        .await;
    c.next_unmarked().await
}

#[tokio::test]
async fn an_opaque_token_subscribes_and_notify_by_that_token_reaches_it_with_the_flag_only() {
    let fwd = forwarder();
    let srv = server(&fwd, &["--opaque-tokens"]);
    let plain = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let token = opaque_token();

    // Without the flag the token is what it always was: not a valid token.
    let mut refused = Client::connect(&plain).await;
    sync(&bus, &mut refused, None).await;
    let reply = subscribe(&mut refused, &token).await;
    assert_eq!(reply["data"]["code"], "invalid_token", "{reply}");

    let mut c = Client::connect(&srv).await;
    sync(&bus, &mut c, None).await;
    let reply = subscribe(&mut c, &token).await;
    assert_eq!(reply["name"], "pushnote:subscribed", "{reply}");
    let user = signer().opaque_user(&token).unwrap();
    assert_eq!(reply["data"]["user"], user.as_str());
    assert!(!reply.to_string().contains(&token), "{reply}");
    sync(&bus, &mut c, Some(&user)).await;

    // The client crate notifies by token.
    bus.notify_tokens(&json!({"msg": "by token"}), [&token], &signer())
        .unwrap();
    assert_eq!(c.next().await, json!({"msg": "by token"}));

    // So does the CLI, with the secret from the environment and the token from stdin.
    let mut cli = Command::new(bin("pushnote"))
        .args(["notify", "--bus", &fwd.sub, "--timeout", "10"])
        .args(["--opaque-token", "-", r#"{"msg": "from the shell"}"#])
        .env("PUSHNOTE_SECRET", SECRET)
        .env_remove("PUSHNOTE_SALT")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(cli.stdin.take().unwrap(), "{token}").unwrap();
    assert!(cli.wait().unwrap().success());
    assert_eq!(c.next().await, json!({"msg": "from the shell"}));

    // Another token, or the same on the server without the flag, receives none of it.
    bus.notify_all(&json!("fence")).unwrap();
    assert_eq!(refused.next_unmarked().await, json!("fence"));
    assert_eq!(c.next_unmarked().await, json!("fence"));
    assert_eq!(srv.metric("pushnote_opaque_tokens_total").await, 1);
}

#[tokio::test]
async fn signed_tokens_stay_signed_and_opaque_ones_are_bounded_with_the_flag() {
    let fwd = forwarder();
    let srv = server(&fwd, &["--opaque-tokens", "--token-max-age", "60"]);
    let bus = publisher(&fwd.sub);
    let mut c = Client::connect(&srv).await;
    sync(&bus, &mut c, None).await;
    let expired = signer().tokenize_at("9", now() - 3600).unwrap();
    let other_secret = pushnote::Signer::new("another secret")
        .unwrap()
        .tokenize("9")
        .unwrap();
    let long = "x".repeat(pushnote::opaque::MAX_OPAQUE_TOKEN_BYTES + 1);
    let cases = [
        // Of the signed form, so checked as signed: never an opaque subscription.
        (expired.as_str(), "token_expired", ""),
        (other_secret.as_str(), "invalid_token", ""),
        // Opaque, out of bounds.
        (long.as_str(), "invalid_token", "16 to 512 bytes"),
        ("too-short", "invalid_token", "16 to 512 bytes"),
        ("sixteen-bytes-and\u{7}", "invalid_token", "control"),
    ];
    for (token, code, says) in cases {
        let reply = subscribe(&mut c, token).await;
        assert_eq!(reply["data"]["code"], code, "{reply}");
        let message = reply["data"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        assert!(!message.contains(token), "{message}");
    }
    assert_eq!(srv.metric("pushnote_opaque_tokens_refused_total").await, 3);
    assert_eq!(srv.metric("pushnote_opaque_tokens_total").await, 0);
    assert_eq!(srv.metric("pushnote_users").await, 0);
    // Signed tokens work as before.
    let reply = subscribe(&mut c, &token("9")).await;
    assert_eq!(reply["data"]["user"], "9", "{reply}");
}

#[tokio::test]
async fn the_bus_carries_a_keyed_hash_of_an_opaque_token_never_the_token() {
    let fwd = forwarder();
    let srv = server(&fwd, &["--opaque-tokens"]);
    let bus = publisher(&fwd.sub);
    let token = opaque_token();
    let mut c = Client::connect(&srv).await;
    sync(&bus, &mut c, None).await;
    assert_eq!(
        subscribe(&mut c, &token).await["name"],
        "pushnote:subscribed"
    );
    let user = signer().opaque_user(&token).unwrap();
    sync(&bus, &mut c, Some(&user)).await;

    // Everything the forwarder sends its servers, as a ZeroMQ subscriber of its PUB side
    // receives it.
    let ctx = zmq::Context::new();
    let wire = ctx.socket(zmq::SUB).unwrap();
    wire.set_subscribe(b"").unwrap();
    wire.set_rcvtimeo(200).unwrap();
    wire.connect(&fwd.publish).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let frames = loop {
        bus.notify_tokens(&json!({"msg": "wire"}), [&token], &signer())
            .unwrap();
        if let Ok(frames) = wire.recv_multipart(0) {
            break frames;
        }
        assert!(std::time::Instant::now() < deadline, "nothing on the wire");
    };
    let topic = pushnote::wire::user_topic(&user).unwrap();
    assert!(frames[0].starts_with(&topic), "{:?}", frames[0]);
    // Every message the subscriber saw, and what the page received, hold no trace of the token.
    let mut seen = vec![frames];
    while let Ok(more) = wire.recv_multipart(0) {
        seen.push(more);
    }
    let needle = token.as_bytes();
    for frame in seen.iter().flatten() {
        assert!(
            !frame.windows(needle.len()).any(|w| w == needle),
            "the token in the clear on the bus: {:?}",
            String::from_utf8_lossy(frame)
        );
    }
    assert_eq!(c.next().await, json!({"msg": "wire"}));
}

#[tokio::test]
async fn the_server_log_never_holds_a_token_good_bad_or_too_long() {
    let fwd = forwarder();
    let log = std::env::temp_dir().join(format!(
        "pushnote-opaque-{}-{}.log",
        std::process::id(),
        rand_id()
    ));
    let mut args = server_args(&fwd, "0");
    args.extend(["--opaque-tokens", "--log", "trace"]);
    // The server's standard error into the file, through a shell that becomes the server.
    let mut cmd = Command::new("sh");
    cmd.env_remove("PUSHNOTE_SECRET")
        .env("OPAQUE_LOG", &log)
        .args(["-c", r#"exec "$0" "$@" 2>"$OPAQUE_LOG""#])
        .arg(bin("pushnote-server"))
        .args(&args);
    let mut srv = spawn_server(&mut cmd, false);
    let bus = publisher(&fwd.sub);
    let canary = format!("leak-canary-{}", opaque_token());
    let good = canary.clone();
    let long = canary.repeat(40);
    let control = format!("{canary}\u{1}");
    let short = &canary[..15];
    let forged = format!("{canary}:1r31eq:egqH_37soYTJMP9PS6Nui99-AAHApGie8p7ZkvIjd3M");
    let mut c = Client::connect(&srv).await;
    sync(&bus, &mut c, None).await;
    for (token, code) in [
        (long.as_str(), "invalid_token"),
        (control.as_str(), "invalid_token"),
        (short, "invalid_token"),
        (forged.as_str(), "invalid_token"),
    ] {
        assert_eq!(subscribe(&mut c, token).await["data"]["code"], code);
    }
    // Not JSON, with the token inside.
    c.send_text(&format!(
        r#"{{"name":"subscribe","data":{{"token":"{canary}""#
    ))
    .await;
    assert_eq!(c.next().await["data"]["code"], "bad_message");
    assert_eq!(
        subscribe(&mut c, &good).await["name"],
        "pushnote:subscribed"
    );
    c.emit(json!({"name": "unsubscribe", "data": {"replies": true}}))
        .await;
    c.next_unmarked().await;
    drop(c);
    srv.proc.terminate();
    assert!(srv.proc.wait_exit(WAIT).is_some(), "the server stops");
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "{text}");
    assert!(!text.contains(&canary[..15]), "a token in the log:\n{text}");
}
