//! Whatever a client sends, it gets a clear answer, and nothing stalls or crashes.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn malformed_and_unknown_messages_get_error_replies_and_the_session_lives_on() {
    let (_fwd, srv, bus, mut c) = stack(&[]).await;
    c.ask_replies().await;
    let cases = [
        ("not json at all", "bad_message"),
        ("[1,2,3]", "bad_message"),
        (r#"{"data":{}}"#, "bad_message"),
        (r#"{"name":"subscribe"}"#, "bad_request"),
        (r#"{"name":"subscribe","data":{"token":42}}"#, "bad_request"),
        (
            r#"{"name":"publish","data":{"msg":"spoof"}}"#,
            "unknown_request",
        ),
    ];
    for (text, code) in cases {
        c.send_text(text).await;
        let reply = c.next().await;
        assert_eq!(reply["name"], "pushnote:error", "{text}");
        assert_eq!(reply["data"]["code"], code, "{text}");
    }
    // Several messages in one SockJS frame are each answered, in order.
    c.send_raw(r#"["x","{\"name\":\"unsubscribe\"}"]"#).await;
    assert_eq!(c.next().await["data"]["code"], "bad_message");
    assert_eq!(c.next().await["name"], "pushnote:unsubscribed");
    // Empty frames and empty arrays are ignored, as the protocol says.
    c.send_raw("").await;
    c.send_raw("[]").await;
    bus.notify_all(&json!("alive")).unwrap();
    assert_eq!(c.next().await, json!("alive"));
    assert_eq!(srv.metric("pushnote_client_errors_total").await, 7);
}

#[tokio::test]
async fn broken_sockjs_framing_closes_only_that_connection() {
    let fwd = forwarder();
    let srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let mut bystander = Client::connect(&srv).await;
    let mut c = Client::connect(&srv).await;
    c.send_raw(r#"["a"#).await;
    assert_eq!(c.frame().await, Frame::Gone(Some(3010)));
    sync(&bus, &mut bystander, None).await;
}

#[tokio::test]
async fn an_oversized_client_message_closes_the_session_with_3009() {
    let fwd = forwarder();
    let srv = server(&fwd, &["--max-message-bytes", "1024"]);
    let bus = publisher(&fwd.sub);
    let mut c = Client::connect(&srv).await;
    c.send_text(&"x".repeat(2000)).await;
    assert_eq!(
        c.frame().await,
        Frame::Close(3009, "Message too big".into())
    );
    let mut fine = Client::connect(&srv).await;
    sync(&bus, &mut fine, None).await;
}

#[tokio::test]
async fn invalid_utf8_ends_only_that_connection() {
    let (_fwd, srv, bus, mut bystander) = stack(&[]).await;
    let mut sender = Client::connect(&srv).await;
    sender.send_text_bytes(b"[\"\xff\xfe\"]".to_vec()).await;
    assert!(
        matches!(sender.frame().await, Frame::Gone(_)),
        "the connection is closed"
    );
    srv.wait_metric_at_most("pushnote_sessions", 1).await;
    sync(&bus, &mut bystander, None).await;
}
