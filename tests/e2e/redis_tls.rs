//! Redis over TLS (`rediss://`): servers and apps check Redis' certificate against the CA the
//! endpoint names (`?ca=`), and refuse one it did not sign, with a clear error.

use std::time::Duration;

use serde_json::json;

use crate::redis_engine::{broker_server, positions};
use crate::redis_proc::Redis;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_and_an_app_reach_a_redis_that_speaks_tls_only() {
    let redis = Redis::with_tls();
    let url = redis.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let srv = broker_server(&url, &[]);
    srv.wait_metric("pushnote_bus_connected", 1).await;
    let bus = pushnote::Publisher::connect(&url).unwrap();
    let mut page = Client::connect(&srv).await;
    // The page's positions reply first; then a broadcast published over TLS.
    positions(&mut page, None).await;
    let at = bus.notify_all_confirmed(&json!({"n": 1})).unwrap();
    let got = loop {
        let v = page.next().await;
        if v["data"]["n"] == 1 {
            break v;
        }
    };
    assert_eq!(got["position"]["offset"], at.offset, "{got}");
    // Many messages at once: what TLS holds for the socket is written as it takes it.
    for n in 2..=2000 {
        bus.notify_all(&json!({"n": n})).unwrap();
    }
    loop {
        let v = page.next().await;
        if v["data"]["n"] == 2000 {
            break;
        }
    }
    assert_eq!(srv.metric("pushnote_broker_errors_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_no_trusted_ca_signed_is_refused() {
    let redis = Redis::with_tls();
    // The system's roots in place of the test's CA: Redis' certificate cannot be checked.
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let srv = broker_server(&url, &[]);
    srv.wait_metric("pushnote_broker_errors_total", 1).await;
    assert_eq!(srv.metric("pushnote_bus_connected").await, 0);
    let bus = pushnote::Publisher::builder(&url)
        .ready_timeout(Duration::from_secs(2))
        .connect()
        .unwrap();
    let e = bus.notify_all(&json!(1)).unwrap_err().to_string();
    assert!(e.contains("certificate"), "{e}");
    // A CA file that is not one is said so.
    let bad = format!("rediss://127.0.0.1:{}?ca=/nonexistent/ca.pem", redis.port);
    let e = pushnote::Publisher::connect(&bad)
        .and_then(|b| b.notify_all(&json!(1)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}

#[test]
fn a_server_given_a_ca_file_it_cannot_read_stops_at_once_and_says_why() {
    let out = server_cmd(&[
        "--port",
        "0",
        "--broker",
        "rediss://:hunter2@127.0.0.1:1?ca=/nonexistent/ca.pem",
    ])
    .output()
    .expect("run server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/ca.pem") && err.contains("--broker"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
