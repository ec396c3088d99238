//! Targeted routing is exact, and happens in ZeroMQ: servers only receive what their users need.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn user_1_never_receives_what_was_sent_to_10_11_or_1_x() {
    let (_fwd, _srv, bus, mut c) = stack(&[]).await;
    c.subscribe(&token("1")).await;
    sync(&bus, &mut c, Some("1")).await;
    for other in ["10", "11", "1:x", "01", " 1"] {
        bus.notify(&json!({"for": other}), [other]).unwrap();
    }
    bus.notify(&json!({"for": "1"}), ["1"]).unwrap();
    assert_eq!(c.next().await, json!({"for": "1"}));
    c.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn every_session_of_a_user_receives_on_whichever_server_it_is() {
    let fwd = forwarder();
    let (a, b) = (server(&fwd, &[]), server(&fwd, &[]));
    let bus = publisher(&fwd.sub);
    let mut on_a = Client::connect(&a).await;
    let mut also_on_a = Client::connect(&a).await;
    let mut on_b = Client::connect(&b).await;
    let mut other_user = Client::connect(&b).await;
    for c in [&mut on_a, &mut also_on_a, &mut on_b, &mut other_user] {
        sync(&bus, c, None).await;
    }
    other_user.subscribe(&token("bob")).await;
    for c in [&mut on_a, &mut also_on_a, &mut on_b] {
        assert_eq!(c.subscribe(&token("alice")).await["data"]["user"], "alice");
        sync(&bus, c, Some("alice")).await;
    }
    // The sync markers reached every alice session; drain them so only the real one is left.
    for c in [&mut on_a, &mut also_on_a, &mut on_b] {
        drain_sync(c).await;
    }
    bus.notify(&json!({"hello": "alice"}), ["alice"]).unwrap();
    for c in [&mut on_a, &mut also_on_a, &mut on_b] {
        assert_eq!(c.next_unmarked().await, json!({"hello": "alice"}));
    }
    // A broadcast published after it: had alice's message reached bob, it would come first.
    bus.notify_all(&json!("fence")).unwrap();
    assert_eq!(other_user.next().await, json!("fence"));
}

async fn drain_sync(c: &mut Client) {
    while let Ok(v) = tokio::time::timeout(Duration::from_millis(150), c.next()).await {
        assert!(v.get("sync").is_some(), "unexpected {v}");
    }
}

#[tokio::test]
async fn a_server_without_the_user_never_receives_the_users_messages_from_the_bus() {
    let fwd = forwarder();
    let (holder, bystander) = (server(&fwd, &[]), server(&fwd, &[]));
    let bus = publisher(&fwd.sub);
    let mut c = Client::connect(&holder).await;
    let mut d = Client::connect(&bystander).await;
    sync(&bus, &mut c, None).await;
    sync(&bus, &mut d, None).await;
    c.subscribe(&token("u")).await;
    sync(&bus, &mut c, Some("u")).await;
    let before = holder.metric("pushnote_bus_user_messages_total").await;
    for i in 0..20 {
        bus.notify(&json!({"i": i}), ["u"]).unwrap();
    }
    bus.notify_all(&json!("fence")).unwrap();
    holder
        .wait_metric("pushnote_bus_user_messages_total", before + 20)
        .await;
    // The broadcast after them reached the bystander, so they would have too.
    assert_eq!(d.next().await, json!("fence"));
    assert_eq!(
        bystander.metric("pushnote_bus_user_messages_total").await,
        0
    );
    assert_eq!(
        holder
            .metric("pushnote_bus_user_messages_unrouted_total")
            .await,
        0
    );

    // Once the user leaves, the holder unsubscribes too (fails if it never does).
    drop(c);
    holder.wait_metric_at_most("pushnote_users", 0).await;
    holder.wait_unsubscribed(&bus, "u").await;
}
