//! Interoperability with Python apps: tokens minted by real Django, and the documented Python
//! publisher (pyzmq) from examples/python. Needs python3 with Django and pyzmq
//! (tests/python/requirements.txt; .ci/run installs them).

use std::process::Command;

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
