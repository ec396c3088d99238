//! What a publish promises when the forwarder dies: a publish the forwarder did not take is
//! never reported as sent once the publisher knows the forwarder is gone.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// The forwarder is killed (SIGKILL) and reaped; after `delay`, the publisher's first
/// `notify` since then must say it is not connected: nothing can arrive anywhere.
async fn first_notify_after_the_forwarder_died(delay: Duration) {
    let (mut fwd, srv, bus, mut c) = stack(&[]).await;
    c.subscribe(&token("r")).await;
    sync(&bus, &mut c, Some("r")).await;
    bus.notify(&json!("before"), ["r"]).unwrap();
    assert_eq!(c.next().await, json!("before"));

    fwd.proc.child.kill().unwrap(); // SIGKILL: no goodbye
    fwd.proc.child.wait().unwrap(); // its connections are closed by now
    std::thread::sleep(delay);
    let sent = bus.notify(&json!("after"), ["r"]);
    assert!(
        matches!(sent, Err(pushnote::PublishError::NotConnected(_))),
        "{delay:?} after the forwarder was gone: {sent:?}"
    );
    drop(srv);
}

#[tokio::test]
async fn the_first_notify_100_ms_after_the_forwarder_died_is_refused() {
    first_notify_after_the_forwarder_died(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn the_first_notify_a_second_after_the_forwarder_died_is_refused() {
    first_notify_after_the_forwarder_died(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_first_notify_5_s_after_the_forwarder_died_is_refused() {
    first_notify_after_the_forwarder_died(Duration::from_secs(5)).await;
}
