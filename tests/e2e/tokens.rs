//! Subscribing: good tokens tie a session to its user; every bad one is refused clearly and
//! leaves the session on broadcasts only.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn every_bad_token_is_refused_and_the_session_keeps_broadcasts() {
    let fwd = forwarder();
    let srv = server(&fwd, &["--token-max-age", "60"]);
    let bus = publisher(&fwd.sub);
    let good = token("9");
    let forged_user = good.replacen('9', "8", 1);
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let expired = signer().tokenize_at("9", now() - 3600).unwrap();
    let other_secret = pushnote::Signer::new("another secret")
        .unwrap()
        .tokenize("9")
        .unwrap();
    let other_salt = pushnote::Signer::with_salt(SECRET, "other-salt", [""; 0])
        .unwrap()
        .tokenize("9")
        .unwrap();
    let cases = [
        (forged_user.as_str(), "invalid_token"),
        (tampered.as_str(), "invalid_token"),
        (expired.as_str(), "token_expired"),
        (other_secret.as_str(), "invalid_token"),
        (other_salt.as_str(), "invalid_token"),
        ("not a token", "invalid_token"),
        ("9:abc:def", "invalid_token"),
        ("", "invalid_token"),
    ];
    let mut c = Client::connect(&srv).await;
    sync(&bus, &mut c, None).await;
    for (bad, code) in cases {
        let reply = c.subscribe(bad).await;
        assert_eq!(reply["name"], "pushnote:error", "{bad:?}");
        assert_eq!(reply["data"]["code"], code, "{bad:?}");
        assert!(reply["data"]["message"].as_str().unwrap().len() > 10);
    }
    for user in ["8", "9"] {
        bus.notify(&json!({"secret": user}), [user]).unwrap();
    }
    bus.notify_all(&json!("still here")).unwrap();
    assert_eq!(c.next().await, json!("still here"));
    assert_eq!(srv.metric("pushnote_users").await, 0);
    assert_eq!(
        srv.metric("pushnote_subscribes_refused_total").await,
        cases.len() as u64
    );

    // The same session subscribes fine afterwards.
    assert_eq!(
        c.subscribe(&good).await,
        json!({"name": "pushnote:subscribed", "data": {"user": "9"}})
    );
}

#[tokio::test]
async fn a_server_without_a_secret_serves_broadcasts_and_says_how_to_set_one() {
    let fwd = forwarder();
    let srv = spawn_server(
        &mut server_cmd(&["-p", "0", "-a", "127.0.0.1", "-s", &fwd.publish]),
        false,
    );
    let bus = publisher(&fwd.sub);
    let mut c = Client::connect(&srv).await;
    sync(&bus, &mut c, None).await;
    let reply = c.subscribe(&token("1")).await;
    assert_eq!(reply["data"]["code"], "no_secret");
    let message = reply["data"]["message"].as_str().unwrap();
    assert!(
        message.contains("--secret") && message.contains("PUSHNOTE_SECRET"),
        "{message}"
    );
    bus.notify_all(&json!(1)).unwrap();
    assert_eq!(c.next().await, json!(1));
}

#[tokio::test]
async fn secrets_salt_and_max_age_come_from_the_environment_too() {
    let fwd = forwarder();
    let srv = spawn_server(
        server_cmd(&["-p", "0", "-a", "127.0.0.1", "-s", &fwd.publish])
            .env("PUSHNOTE_SECRET", "env-secret-5Tg8Kd2Qm7Xw3Bn9Rc4Jv6Ls")
            .env(
                "PUSHNOTE_OLD_SECRETS",
                "retired-1-4Fj9Ws2Lp6Hv8Dz3Qy7Ka1Pc,retired-2-7Nb3Xk5Rt1Mc9Gw2Pe5Hu8Yd",
            )
            .env("PUSHNOTE_SALT", "env-salt")
            .env("PUSHNOTE_TOKEN_MAX_AGE", "100"),
        false,
    );
    let mut c = Client::connect(&srv).await;
    let mint = |secret: &str, at: u64| {
        pushnote::Signer::with_salt(secret, "env-salt", [""; 0])
            .unwrap()
            .tokenize_at("e", at)
            .unwrap()
    };
    assert_eq!(
        c.subscribe(&mint("env-secret-5Tg8Kd2Qm7Xw3Bn9Rc4Jv6Ls", now()))
            .await["name"],
        "pushnote:subscribed"
    );
    assert_eq!(
        c.subscribe(&mint("retired-2-7Nb3Xk5Rt1Mc9Gw2Pe5Hu8Yd", now()))
            .await["name"],
        "pushnote:subscribed"
    );
    assert_eq!(
        c.subscribe(&mint("unknown", now())).await["data"]["code"],
        "invalid_token"
    );
    assert_eq!(
        c.subscribe(&mint("env-secret-5Tg8Kd2Qm7Xw3Bn9Rc4Jv6Ls", now() - 200))
            .await["data"]["code"],
        "token_expired"
    );
    // The default salt is not accepted by a server with another one.
    let default_salt = pushnote::Signer::new("env-secret-5Tg8Kd2Qm7Xw3Bn9Rc4Jv6Ls")
        .unwrap()
        .tokenize("e")
        .unwrap();
    assert_eq!(
        c.subscribe(&default_salt).await["data"]["code"],
        "invalid_token"
    );
}

#[tokio::test]
async fn resubscribing_moves_the_session_and_unsubscribe_leaves() {
    let (_fwd, srv, bus, mut c) = stack(&[]).await;
    c.subscribe(&token("first")).await;
    c.subscribe(&token("second")).await;
    sync(&bus, &mut c, Some("second")).await;
    bus.notify(&json!("to first"), ["first"]).unwrap();
    bus.notify(&json!("to second"), ["second"]).unwrap();
    assert_eq!(c.next().await, json!("to second"));
    c.emit(json!({"name": "unsubscribe"})).await;
    assert_eq!(
        c.next().await,
        json!({"name": "pushnote:unsubscribed", "data": {}})
    );
    bus.notify(&json!("to second again"), ["second"]).unwrap();
    // A broadcast published after it: had the message reached the session, it would come first.
    bus.notify_all(&json!("fence")).unwrap();
    assert_eq!(c.next().await, json!("fence"));
    assert_eq!(srv.metric("pushnote_users").await, 0);
}

#[tokio::test]
async fn tokens_and_secrets_never_reach_the_logs() {
    let fwd = forwarder();
    let log = std::env::temp_dir().join(format!(
        "pushnote-log-{}-{}.txt",
        std::process::id(),
        rand_id()
    ));
    let redirect = format!("exec \"$0\" \"$@\" 2>{}", log.display());
    let server = bin("pushnote-server");
    let mut args = vec!["-c", &redirect, server.to_str().unwrap()];
    args.extend(server_args(&fwd, "0"));
    args.extend(["--token-max-age", "60", "--log", "trace"]);
    let mut cmd = std::process::Command::new("sh");
    cmd.env_remove("PUSHNOTE_SECRET").args(&args);
    let mut srv = spawn_server(&mut cmd, false);
    let good = token("logged");
    let forged = format!("{}x", &good[..good.len() - 1]);
    let old = signer()
        .tokenize_at("logged", chrono::Utc::now().timestamp() as u64 - 3600)
        .unwrap();
    let mut c = Client::connect(&srv).await;
    for t in [&forged, &old, &good] {
        c.subscribe(t).await;
    }
    srv.proc.terminate();
    srv.proc.wait_exit(WAIT).expect("exits");
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains("client request refused"),
        "the log is empty:\n{text}"
    );
    for secret in [good.as_str(), &forged, &old, SECRET] {
        assert!(!text.contains(secret), "{secret} is in the log");
    }
}
