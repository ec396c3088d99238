//! Interoperability with Python apps: tokens minted by real Django, and the documented Python
//! publisher (pyzmq) from examples/python, against the crate and the `pushnote` command. Needs
//! python3 with Django and pyzmq (tests/python/requirements.txt; .ci/run installs them).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pushnote::wire::{self, Target};
use pushnote::{ChannelGrant, TokenError, DEFAULT_MAX_CLOCK_SKEW};
use serde_json::json;

use crate::support::*;

fn python() -> Command {
    let exe = std::env::var("PUSHNOTE_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(exe)
}

fn django(args: &[&str]) -> (i32, String) {
    let out = python()
        .arg(repo_path("tests/python/django_tokens.py"))
        .args(args)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "Django is not installed: pip install -r tests/python/requirements.txt\n{stderr}"
    );
    let code = out.status.code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn django_minted_tokens_verify_in_rust_and_rust_minted_in_django() {
    let salt = "pushnote";
    for user in ["42", "alice@example.com", "org:7", "ünï"] {
        let (code, from_django) = django(&["sign", SECRET, salt, user]);
        assert_eq!(code, 0);
        assert_eq!(signer().verify(&from_django, None).unwrap(), user);

        let from_rust = signer().tokenize(user).unwrap();
        assert_eq!(
            django(&["verify", SECRET, salt, &from_rust, "60"]),
            (0, user.to_owned())
        );
    }
    // Django refuses what it should refuse, like Rust does.
    let other = pushnote::Signer::new("other")
        .unwrap()
        .tokenize("42")
        .unwrap();
    assert_eq!(django(&["verify", SECRET, salt, &other, "60"]).0, 2);
    let old = signer().tokenize_at("42", 1_000_000_000).unwrap();
    assert_eq!(django(&["verify", SECRET, salt, &old, "60"]).0, 3);
    let (_, from_django_other_salt) = django(&["sign", SECRET, "another", "42"]);
    assert!(signer().verify(&from_django_other_salt, None).is_err());
}

#[tokio::test]
async fn a_django_token_subscribes_at_the_real_server() {
    let fwd = forwarder();
    let srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let (_, token) = django(&["sign", SECRET, "pushnote", "1001"]);
    let mut c = Client::connect(&srv).await;
    assert_eq!(c.subscribe(&token).await["data"]["user"], "1001");
    sync(&bus, &mut c, Some("1001")).await;
}

#[tokio::test]
async fn the_python_example_publishes_and_mints_as_protocol_md_says() {
    let fwd = forwarder();
    let srv = server(&fwd, &[]);
    let example = repo_path("examples/python/publish.py");
    let run = |args: &[&str]| {
        let out = python()
            .arg(&example)
            .args(["--bus", &fwd.sub])
            .args(args)
            .env("PUSHNOTE_SECRET", SECRET)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let token = run(&["token", "py"]);
    let mut c = Client::connect(&srv).await;
    sync(&publisher(&fwd.sub), &mut c, None).await;
    assert_eq!(c.subscribe(&token).await["data"]["user"], "py");
    sync(&publisher(&fwd.sub), &mut c, Some("py")).await;
    run(&["notify-all", r#"{"from":"python","to":"all"}"#]);
    assert_eq!(c.next().await, json!({"from": "python", "to": "all"}));
    run(&["notify", "--user", "py", r#"{"from":"python","to":"py"}"#]);
    assert_eq!(c.next().await, json!({"from": "python", "to": "py"}));
}

/// Runs examples/python/publish.py with the test secret.
fn example(args: &[&str]) -> Output {
    python()
        .arg(repo_path("examples/python/publish.py"))
        .args(args)
        .env("PUSHNOTE_SECRET", SECRET)
        .output()
        .expect("python3 runs")
}

/// Runs the `pushnote` command with the test secret.
fn cli(args: &[&str]) -> Output {
    Command::new(bin("pushnote"))
        .args(args)
        .env("PUSHNOTE_SECRET", SECRET)
        .output()
        .expect("pushnote runs")
}

/// The standard output of a run that must have succeeded.
fn stdout_of(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn channel_tokens_verify_across_django_python_the_cli_and_rust() {
    let salt = "pushnote";
    let day = Some(Duration::from_secs(86_400));
    let verify = |token: &str| signer().verify_channel_within(token, day, DEFAULT_MAX_CLOCK_SKEW);
    for (channel, user) in [
        ("news", None),
        ("private-team", None),
        ("private-team", Some("42")),
        ("private-x", Some("org:7")),
        ("private-a_b=c@d,e.f;g", Some("ünï")),
    ] {
        let grant = ChannelGrant {
            channel: channel.to_owned(),
            user: user.map(str::to_owned),
            member: None,
        };
        let signed = match user {
            None => channel.to_owned(),
            Some(user) => format!("{channel}:{user}"),
        };
        let mut args = vec!["sign-channel", SECRET, salt, channel];
        args.extend(user);
        let (code, from_django) = django(&args);
        assert_eq!(code, 0);
        assert_eq!(verify(&from_django), Ok(grant.clone()), "{from_django}");

        let from_rust = signer().channel_token(channel, user).unwrap();
        assert_eq!(
            django(&["verify-channel", SECRET, salt, &from_rust, "60"]),
            (0, signed.clone())
        );

        // The Python example and the command mint what both accept.
        let mut args = vec!["channel-token", channel];
        if let Some(user) = user {
            args.extend(["--user", user]);
        }
        let from_python = stdout_of(example(&args));
        assert_eq!(verify(&from_python), Ok(grant.clone()), "{from_python}");
        let from_cli = stdout_of(cli(&args));
        assert_eq!(verify(&from_cli), Ok(grant), "{from_cli}");
        assert_eq!(
            django(&["verify-channel", SECRET, salt, &from_cli, "60"]),
            (0, signed)
        );
    }

    // A user token is no channel token, and a channel token no user token, in Django as in
    // Rust: a user named private-x is not granted channel private-x.
    let user_from_rust = signer().tokenize("private-x").unwrap();
    assert_eq!(
        django(&["verify-channel", SECRET, salt, &user_from_rust, "60"]).0,
        2
    );
    let (_, user_from_django) = django(&["sign", SECRET, salt, "private-x"]);
    assert_eq!(verify(&user_from_django), Err(TokenError::BadSignature));
    let channel_from_rust = signer().channel_token("private-x", None).unwrap();
    assert_eq!(
        django(&["verify", SECRET, salt, &channel_from_rust, "60"]).0,
        2
    );
    let (_, channel_from_django) = django(&["sign-channel", SECRET, salt, "private-x"]);
    assert_eq!(
        signer().verify(&channel_from_django, None),
        Err(TokenError::BadSignature)
    );
    // And Django refuses stale or foreign channel tokens as Rust does.
    let old = signer()
        .channel_token_at("private-x", Some("42"), 1_000_000_000)
        .unwrap();
    assert_eq!(django(&["verify-channel", SECRET, salt, &old, "60"]).0, 3);
    let (_, other_salt) = django(&["sign-channel", SECRET, "another", "private-x"]);
    assert_eq!(verify(&other_salt), Err(TokenError::BadSignature));
}

/// The message `sub`, a bound SUB socket, receives while `publish` runs on another thread. A
/// SUB socket takes in a connecting publisher, and sends it its subscriptions, only while its
/// own thread is in a call on it, so it must be polled while the publisher waits for them.
fn received_while(sub: &zmq::Socket, publish: impl FnOnce() + Send) -> Vec<Vec<u8>> {
    std::thread::scope(|scope| {
        let publishing = scope.spawn(publish);
        let deadline = Instant::now() + WAIT;
        while sub.poll(zmq::POLLIN, 20).unwrap() == 0 && !publishing.is_finished() {
            assert!(Instant::now() < deadline, "nothing was published");
        }
        if let Err(panic) = publishing.join() {
            std::panic::resume_unwind(panic);
        }
        sub.recv_multipart(0).expect("a message on the bus")
    })
}

#[test]
fn python_the_cli_and_the_crate_publish_the_same_channel_bytes() {
    // A raw SUB socket where a --single server's bus would be: what arrives is exactly what
    // each publisher sent, stamp room included.
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_linger(0).unwrap();
    sub.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    sub.set_subscribe(wire::CHANNEL_TOPIC_PREFIX).unwrap();
    sub.bind("tcp://127.0.0.1:*").unwrap();
    let bus = sub.get_last_endpoint().unwrap().unwrap();

    let channel = "private-team_7=a@b,c.d;e";
    let event = "créé \"quoted\" \u{2028}";
    // Keys in order, so that serde_json's maps and Python's dicts agree whatever features
    // serde_json has.
    let data =
        json!({"a": "é\n\"q\"\t\u{1}", "b": [1, -2, 2.5, null, true], "c": {"d": "\u{2028}"}});
    let expected = vec![
        wire::topic_with_stamp_room(Target::Channel(channel)).unwrap(),
        wire::encode_channel_body(event, &data).unwrap(),
    ];
    assert_eq!(
        expected[0],
        [&b"chan:"[..], channel.as_bytes(), &[0; 9]].concat()
    );
    let text = data.to_string();
    let args = ["--channel", channel, "--event", event, &text];
    let from_python = received_while(&sub, || {
        stdout_of(example(
            &[&["--bus", bus.as_str(), "publish"][..], &args].concat(),
        ));
    });
    assert_eq!(from_python, expected, "from examples/python/publish.py");

    let from_cli = received_while(&sub, || {
        stdout_of(cli(&[
            &["publish", "--bus", bus.as_str(), "--timeout", "10"][..],
            &args,
        ]
        .concat()));
    });
    assert_eq!(from_cli, expected, "from the pushnote command");

    let crate_publisher = pushnote::Publisher::builder(&bus)
        .ready_timeout(WAIT)
        .connect()
        .unwrap();
    let from_crate = received_while(&sub, || {
        crate_publisher.publish(channel, event, &data).unwrap();
    });
    assert_eq!(from_crate, expected, "from the crate");

    // The same names are refused everywhere, before anything is sent, with a clear reason.
    let invalid_channel = wire::WireError::InvalidChannel.to_string();
    let invalid_event = wire::WireError::InvalidEvent.to_string();
    for (channel, event, reason) in [
        ("a b", "e", &invalid_channel),
        ("a:b", "e", &invalid_channel),
        ("", "e", &invalid_channel),
        ("news", "", &invalid_event),
        ("news", "a\nb", &invalid_event),
    ] {
        let args = ["--channel", channel, "--event", event, "1"];
        let out = cli(&[&["publish", "--bus", bus.as_str()][..], &args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(reason.as_str()),
            "{err}"
        );
        let out = example(&[&["--bus", bus.as_str(), "publish"][..], &args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        let kind = &reason[..reason.find(':').unwrap()];
        assert!(!out.status.success() && err.contains(kind), "{err}");
        assert!(crate_publisher.publish(channel, event, &1).is_err());
    }
    let out = cli(&["channel-token", "a b"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&invalid_channel),
        "{err}"
    );
    sub.set_rcvtimeo(300).unwrap();
    assert!(sub.recv_multipart(0).is_err(), "nothing else was sent");
}
