//! Faults the system recovers from by itself.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn servers_and_apps_resume_by_themselves_when_the_forwarder_restarts() {
    let mut fwd = forwarder();
    let srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let mut c = Client::connect(&srv).await;
    sync(&bus, &mut c, None).await;
    c.subscribe(&token("r")).await;
    sync(&bus, &mut c, Some("r")).await;

    fwd.proc.child.kill().unwrap(); // SIGKILL: no goodbye to anyone
    fwd.proc.child.wait().unwrap();

    // While it is down, notify fails at once: no blocking, nothing buffered.
    let deadline = Instant::now() + WAIT;
    while bus.is_connected() {
        assert!(Instant::now() < deadline, "the publisher never noticed");
        std::thread::sleep(Duration::from_millis(5));
    }
    // None waits: a blocked call would take the publisher's ready timeout (2 s).
    let mut slowest = Duration::ZERO;
    for i in 0..1_000 {
        let since = Instant::now();
        let sent = bus.notify(&json!({"lost": i}), ["r"]);
        slowest = slowest.max(since.elapsed());
        assert!(
            matches!(sent, Err(pushnote::PublishError::NotConnected(_))),
            "{sent:?}"
        );
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a refused send took {slowest:?}"
    );

    let restarted = forwarder_with(&["--sub", &fwd.sub, "--pub", &fwd.publish]);
    let since = Instant::now();
    // The same publisher and the same server, neither restarted.
    sync(&bus, &mut c, None).await;
    sync(&bus, &mut c, Some("r")).await;
    let took = since.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?} to resume");
    bus.notify(&json!("after restart"), ["r"]).unwrap();
    assert_eq!(c.next().await, json!("after restart"));
    drop(restarted);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_hurts_no_one_else() {
    let (_fwd, srv, bus, mut reader) = stack(&["--queue-messages", "200"]).await;
    // Connected, then never read again: its socket buffers fill, then its queue.
    let stalled = Client::connect(&srv).await;
    let payload = "x".repeat(8 * 1024);
    for round in 0..20 {
        for i in 0..100 {
            bus.notify_all(&json!({"n": round * 100 + i, "pad": payload}))
                .unwrap();
        }
        for i in 0..100 {
            assert_eq!(reader.next().await["n"], round * 100 + i);
        }
    }
    srv.wait_metric("pushnote_sessions_closed_slow_total", 1)
        .await;
    assert_eq!(srv.metric("pushnote_sessions_closed_slow_total").await, 1);
    drop(stalled);
}
