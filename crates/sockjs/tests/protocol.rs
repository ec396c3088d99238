//! The SockJS protocol over real HTTP: every endpoint and transport, the way the official
//! protocol suite (sockjs-protocol.py) checks them, so a regression fails here without it.

mod support;

use std::time::Duration;

use sockjs::{Options, MAX_ID_BYTES};
use support::{get, post, request, serve, sid};

const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";

#[tokio::test]
async fn greeting_and_paths_that_are_not_found() {
    let addr = serve(Options::default());
    for path in ["/echo", "/echo/"] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/plain; charset=UTF-8"));
        assert_eq!(r.header("set-cookie"), None);
        assert_eq!(r.text().await, "Welcome to SockJS!\n");
    }
    for path in [
        "/echo/a",
        "/echo/a.html",
        "/echo//",
        "/echo///",
        "/echo/a/a",
        "/echo/a/a/",
        "/echo/a/",
        "/echo/a./a/xhr",
        "/echo/a/a./xhr",
        "/echo/././xhr",
        "/echo//xhr",
        "/echo////xhr",
    ] {
        assert_eq!(get(addr, path).await.status, 404, "GET {path}");
        assert_eq!(post(addr, path, b"").await.status, 404, "POST {path}");
    }
}

/// A fresh session id exactly `len` bytes long.
fn sid_of_len(len: usize) -> String {
    let id = sid();
    format!("{id}{}", "z".repeat(len - id.len()))
}

const HANDSHAKE: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "x3JJHMbDL1EzLkh9GBhXDw=="),
];

/// Every endpoint of `/echo/<server>/<session>` works, `<session>` standing for fresh ids of
/// its length where a transport would take the session over.
async fn session_url_works(addr: std::net::SocketAddr, server: &str, session_len: usize) {
    let url = format!("/echo/{server}/{}", sid_of_len(session_len));
    let r = post(addr, &format!("{url}/xhr"), b"").await;
    assert_eq!(r.status, 200, "{url}/xhr");
    assert_eq!(r.text().await, "o\n");
    let r = post(addr, &format!("{url}/xhr_send"), br#"["x"]"#).await;
    assert_eq!(r.status, 204, "{url}/xhr_send");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = request(
        addr,
        "POST",
        &format!("{url}/jsonp_send"),
        &form,
        b"d=%5B%22y%22%5D",
    )
    .await;
    assert_eq!(r.status, 200, "{url}/jsonp_send");
    assert_eq!(r.text().await, "ok");
    let r = get(addr, &format!("{url}/jsonp?c=x")).await;
    assert_eq!(r.status, 200, "{url}/jsonp");
    assert_eq!(r.text().await, "/**/x(\"a[\\\"x\\\",\\\"y\\\"]\");\r\n");
    for transport in ["xhr", "xhr_streaming", "xhr_send"] {
        let path = format!("{url}/{transport}");
        let r = request(addr, "OPTIONS", &path, &[], b"").await;
        assert_eq!(r.status, 204, "OPTIONS {path}");
    }
    let fresh = || format!("/echo/{server}/{}", sid_of_len(session_len));
    let mut r = post(addr, &format!("{}/xhr_streaming", fresh()), b"").await;
    assert_eq!(r.status, 200, "xhr_streaming");
    r.chunk().await;
    assert_eq!(r.chunk().await.unwrap(), "o\n");
    let mut r = get(addr, &format!("{}/eventsource", fresh())).await;
    assert_eq!(r.status, 200, "eventsource");
    r.chunk().await;
    assert_eq!(r.chunk().await.unwrap(), "data: o\r\n\r\n");
    let mut r = get(addr, &format!("{}/htmlfile?c=x", fresh())).await;
    assert_eq!(r.status, 200, "htmlfile");
    r.chunk().await;
    assert_eq!(
        r.chunk().await.unwrap(),
        "<script>\np(\"o\");\n</script>\r\n"
    );
    let path = format!("{}/websocket", fresh());
    let r = request(addr, "GET", &path, &HANDSHAKE, b"").await;
    assert_eq!(r.status, 101, "{path}");
}

/// Every endpoint of `/echo/<server>/<session>` answers exactly as a path that is not part of
/// the protocol does.
async fn session_url_is_not_found(addr: std::net::SocketAddr, server: &str, session: &str) {
    let url = format!("/echo/{server}/{session}");
    let unknown = post(addr, &format!("/echo/000/{}/unknown", sid()), b"").await;
    assert_eq!(unknown.status, 404);
    let unknown_type = unknown.header("content-type").map(str::to_owned);
    let unknown_body = unknown.text().await;
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    for (method, transport) in [
        ("POST", "xhr"),
        ("POST", "xhr_streaming"),
        ("POST", "xhr_send"),
        ("POST", "jsonp_send"),
        ("GET", "eventsource"),
        ("GET", "htmlfile?c=x"),
        ("GET", "jsonp?c=x"),
        ("OPTIONS", "xhr"),
        ("OPTIONS", "xhr_streaming"),
        ("OPTIONS", "xhr_send"),
        ("GET", "websocket"),
    ] {
        let (headers, body): (&[(&str, &str)], &[u8]) = match transport {
            "xhr_send" => (&[], br#"["x"]"#),
            "jsonp_send" => (&form, b"d=%5B%22y%22%5D"),
            "websocket" => (&HANDSHAKE, b""),
            _ => (&[], b""),
        };
        let path = format!("{url}/{transport}");
        let r = request(addr, method, &path, headers, body).await;
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(
            r.header("content-type").map(str::to_owned),
            unknown_type,
            "{method} {path}"
        );
        assert_eq!(r.text().await, unknown_body, "{method} {path}");
    }
}

/// Regression: ids of any length were accepted, and each session kept its id, so 60 KB ids
/// cost 60 KB a session. Ids are bounded; longer ones are not found, like any unknown path.
#[tokio::test]
async fn session_ids_up_to_the_bound_work_and_longer_ones_are_not_found() {
    let addr = serve(Options::default());
    session_url_works(addr, "000", MAX_ID_BYTES).await;
    session_url_is_not_found(addr, "000", &sid_of_len(MAX_ID_BYTES + 1)).await;
    session_url_is_not_found(addr, "000", &sid_of_len(60_000)).await;
}

#[tokio::test]
async fn server_ids_up_to_the_bound_work_and_longer_ones_are_not_found() {
    let addr = serve(Options::default());
    session_url_works(addr, &"9".repeat(MAX_ID_BYTES), 36).await;
    session_url_is_not_found(addr, &"9".repeat(MAX_ID_BYTES + 1), &sid()).await;
    session_url_is_not_found(addr, &"9".repeat(60_000), &sid()).await;
}

#[tokio::test]
async fn the_iframe_page_is_cached_forever_and_revalidates_by_etag() {
    let addr = serve(Options::default());
    let r = get(addr, "/echo/iframe.html").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=UTF-8"));
    assert!(r.header("cache-control").unwrap().contains("public"));
    assert!(r.header("expires").is_some());
    assert_eq!(r.header("last-modified"), None);
    let etag = r.header("etag").unwrap().to_owned();
    let body = r.text().await;
    assert!(body.contains(r#"<script src="http://127.0.0.1/sockjs.min.js"></script>"#));
    assert!(body.contains("SockJS.bootstrap_iframe();"));
    for path in [
        "/echo/iframe-0.1.2abc-dirty.2144.html",
        "/echo/iframe-.html?t=1",
    ] {
        let r = get(addr, path).await;
        assert_eq!(r.header("etag"), Some(etag.as_str()), "{path}");
        assert_eq!(r.text().await, body);
    }
    let r = request(
        addr,
        "GET",
        "/echo/iframe.html",
        &[("If-None-Match", &etag)],
        b"",
    )
    .await;
    assert_eq!(r.status, 304);
    assert_eq!(r.header("content-type"), None);
    for path in [
        "/echo/iframe.htm",
        "/echo/IFRAME.HTML",
        "/echo/iframe-/.html",
    ] {
        assert_eq!(get(addr, path).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn info_and_preflights() {
    let addr = serve(Options::default());
    let r = request(
        addr,
        "GET",
        "/echo/info",
        &[("Origin", "http://a.test")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some(NO_CACHE));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://a.test")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let first: serde_json::Value = serde_json::from_str(&r.text().await).unwrap();
    assert_eq!(first["websocket"], true);
    assert_eq!(first["cookie_needed"], false);
    assert_eq!(first["origins"], serde_json::json!(["*:*"]));
    let second: serde_json::Value =
        serde_json::from_str(&get(addr, "/echo/info").await.text().await).unwrap();
    assert_ne!(first["entropy"], second["entropy"]);
    let off: serde_json::Value = serde_json::from_str(
        &get(addr, "/disabled_websocket_echo/info")
            .await
            .text()
            .await,
    )
    .unwrap();
    assert_eq!(off["websocket"], false);
    let cookie = get(addr, "/cookie_needed_echo/info").await;
    assert_eq!(cookie.header("set-cookie"), None);
    let on: serde_json::Value = serde_json::from_str(&cookie.text().await).unwrap();
    assert_eq!(on["cookie_needed"], true);

    for (path, methods) in [
        ("/echo/info", "OPTIONS, GET"),
        ("/echo/abc/abc/xhr", "OPTIONS, POST"),
        ("/echo/abc/abc/xhr_send", "OPTIONS, POST"),
        ("/echo/abc/abc/xhr_streaming", "OPTIONS, POST"),
    ] {
        for origin in ["test", "null"] {
            let r = request(
                addr,
                "OPTIONS",
                path,
                &[
                    ("Origin", origin),
                    ("Access-Control-Request-Headers", "a, b, c"),
                ],
                b"",
            )
            .await;
            assert!(r.status == 204 || r.status == 200, "{path}");
            assert!(r.header("cache-control").unwrap().contains("public"));
            let max_age: u64 = r.header("access-control-max-age").unwrap().parse().unwrap();
            assert!(max_age > 1_000_000);
            assert_eq!(r.header("access-control-allow-methods"), Some(methods));
            assert_eq!(r.header("access-control-allow-headers"), Some("a, b, c"));
            assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        }
        let r = request(addr, "OPTIONS", path, &[("Origin", "test")], b"").await;
        assert_eq!(r.header("access-control-allow-headers"), None, "{path}");
    }
}

#[tokio::test]
async fn xhr_polling_opens_echoes_and_sends() {
    let addr = serve(Options::default());
    let url = format!("/echo/000/{}", sid());
    let r = request(
        addr,
        "POST",
        &format!("{url}/xhr"),
        &[("Origin", "test")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/javascript; charset=UTF-8")
    );
    assert_eq!(r.header("cache-control"), Some(NO_CACHE));
    assert_eq!(r.header("access-control-allow-origin"), Some("test"));
    assert_eq!(r.text().await, "o\n");

    let r = post(addr, &format!("{url}/xhr_send"), br#"["x"]"#).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=UTF-8"));
    assert_eq!(r.header("cache-control"), Some(NO_CACHE));
    assert_eq!(
        post(addr, &format!("{url}/xhr"), b"").await.text().await,
        "a[\"x\"]\n"
    );

    // Errors leave the session usable.
    for (body, status, text) in [
        (&b""[..], 500, "Payload expected."),
        (&b"[\"x"[..], 500, "Broken JSON encoding."),
        (&b"\xff\xfe"[..], 500, "Broken JSON encoding."),
    ] {
        let r = post(addr, &format!("{url}/xhr_send"), body).await;
        assert_eq!(r.status, status);
        assert!(r.text().await.contains(text));
    }
    assert_eq!(
        post(addr, &format!("{url}/xhr_send"), b"[]").await.status,
        204
    );
    let unknown = format!("/echo/000/{}/xhr_send", sid());
    assert_eq!(post(addr, &unknown, br#"["x"]"#).await.status, 404);
    assert_eq!(
        post(addr, &format!("{url}/xhr_send"), br#"["y"]"#)
            .await
            .status,
        204
    );
    assert_eq!(
        post(addr, &format!("{url}/xhr"), b"").await.text().await,
        "a[\"y\"]\n"
    );
    assert_eq!(get(addr, &format!("{url}/xhr")).await.status, 405);
}

#[tokio::test]
async fn one_receiving_request_at_a_time() {
    let addr = serve(Options::default());
    let url = format!("/echo/000/{}", sid());
    assert_eq!(
        post(addr, &format!("{url}/xhr"), b"").await.text().await,
        "o\n"
    );
    let mut pending = post(addr, &format!("{url}/xhr"), b"").await;
    let second = post(addr, &format!("{url}/xhr"), b"").await;
    assert_eq!(
        second.text().await,
        "c[2010,\"Another connection still open\"]\n"
    );
    assert!(pending.silent_for(Duration::from_millis(100)).await);
    assert_eq!(
        post(addr, &format!("{url}/xhr_send"), br#"["z"]"#)
            .await
            .status,
        204
    );
    assert_eq!(pending.text().await, "a[\"z\"]\n");
}

#[tokio::test]
async fn close_frames_repeat_until_the_session_is_forgotten() {
    let addr = serve(Options::default());
    let url = format!("/close/000/{}", sid());
    assert_eq!(
        post(addr, &format!("{url}/xhr"), b"").await.text().await,
        "o\n"
    );
    for _ in 0..2 {
        assert_eq!(
            post(addr, &format!("{url}/xhr"), b"").await.text().await,
            "c[3000,\"Go away!\"]\n"
        );
    }
    let mut r = post(addr, &format!("/close/000/{}/xhr_streaming", sid()), b"").await;
    assert_eq!(r.chunk().await.unwrap().len(), 2049);
    assert_eq!(r.chunk().await.unwrap(), "o\n");
    assert_eq!(r.chunk().await.unwrap(), "c[3000,\"Go away!\"]\n");
    assert_eq!(r.chunk().await, None);
}

#[tokio::test]
async fn xhr_streaming_sends_a_chunk_per_frame_up_to_the_response_limit() {
    let addr = serve(Options::default());
    let url = format!("/echo/000/{}", sid());
    let mut r = request(
        addr,
        "POST",
        &format!("{url}/xhr_streaming"),
        &[("Origin", "test")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("access-control-allow-origin"), Some("test"));
    assert_eq!(r.chunk().await.unwrap(), format!("{}\n", "h".repeat(2048)));
    assert_eq!(r.chunk().await.unwrap(), "o\n");
    let busy = post(addr, &format!("{url}/xhr_streaming"), b"").await;
    assert_eq!(
        busy.text().await,
        format!(
            "{}\nc[2010,\"Another connection still open\"]\n",
            "h".repeat(2048)
        )
    );
    let msg = format!("\"{}\"", "x".repeat(128));
    for _ in 0..31 {
        let sent = post(
            addr,
            &format!("{url}/xhr_send"),
            format!("[{msg}]").as_bytes(),
        )
        .await;
        assert_eq!(sent.status, 204);
        assert_eq!(r.chunk().await.unwrap(), format!("a[{msg}]\n"));
    }
    assert_eq!(r.chunk().await, None, "the response ends at the limit");
}

#[tokio::test]
async fn eventsource_frames_are_events_and_keep_their_escapes() {
    let addr = serve(Options::default());
    let url = format!("/echo/000/{}", sid());
    let mut r = get(addr, &format!("{url}/eventsource")).await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("cache-control"), Some(NO_CACHE));
    assert_eq!(r.chunk().await.unwrap(), "\r\n");
    assert_eq!(r.chunk().await.unwrap(), "data: o\r\n\r\n");
    post(addr, &format!("{url}/xhr_send"), br#"["  \u0000\n\r "]"#).await;
    assert_eq!(
        r.chunk().await.unwrap(),
        "data: a[\"  \\u0000\\n\\r \"]\r\n\r\n"
    );
    post(
        addr,
        &format!("{url}/xhr_send"),
        format!("[\"{}\"]", "x".repeat(4096)).as_bytes(),
    )
    .await;
    assert!(r.chunk().await.unwrap().len() > 4096);
    assert_eq!(r.chunk().await, None, "the response ends at the limit");
}

#[tokio::test]
async fn htmlfile_calls_the_callback_and_never_lets_a_message_end_the_script() {
    let addr = serve(Options::default());
    let url = format!("/echo/000/{}", sid());
    let mut r = get(addr, &format!("{url}/htmlfile?c=%63allback")).await;
    assert_eq!(r.header("content-type"), Some("text/html; charset=UTF-8"));
    assert_eq!(r.header("cache-control"), Some(NO_CACHE));
    let prelude = r.chunk().await.unwrap();
    assert!(prelude.len() > 1024);
    assert!(prelude.contains("var c = parent.callback;"));
    assert_eq!(
        r.chunk().await.unwrap(),
        "<script>\np(\"o\");\n</script>\r\n"
    );
    post(
        addr,
        &format!("{url}/xhr_send"),
        br#"["</script><script>alert(1)</script>"]"#,
    )
    .await;
    let frame = r.chunk().await.unwrap();
    assert_eq!(frame.matches("</script>").count(), 1, "{frame}");
    assert!(frame.contains(r#"\u003c/script\u003e"#), "{frame}");

    for (query, error) in [
        ("", "\"callback\" parameter required"),
        ("?c=%20", "invalid \"callback\" parameter"),
        ("?c=abc(", "invalid \"callback\" parameter"),
        ("?c=abc%28", "invalid \"callback\" parameter"),
    ] {
        for transport in ["htmlfile", "jsonp"] {
            let r = get(addr, &format!("/echo/000/{}/{transport}{query}", sid())).await;
            assert_eq!(r.status, 500);
            assert!(r.text().await.contains(error), "{transport}{query}");
        }
    }
}

#[tokio::test]
async fn jsonp_polls_and_takes_forms_or_raw_bodies() {
    let addr = serve(Options::default());
    let url = format!("/echo/000/{}", sid());
    let r = get(addr, &format!("{url}/jsonp?c=%63allback")).await;
    assert_eq!(
        r.header("content-type"),
        Some("application/javascript; charset=UTF-8")
    );
    assert_eq!(r.text().await, "/**/callback(\"o\");\r\n");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = request(
        addr,
        "POST",
        &format!("{url}/jsonp_send"),
        &form,
        b"d=%5B%22x%22%5D",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some(NO_CACHE));
    assert_eq!(r.text().await, "ok");
    let raw = [("Content-Type", "text/plain")];
    let r = request(
        addr,
        "POST",
        &format!("{url}/jsonp_send"),
        &raw,
        br#"["%61bc"]"#,
    )
    .await;
    assert_eq!(r.text().await, "ok");
    assert_eq!(
        get(addr, &format!("{url}/jsonp?c=x")).await.text().await,
        "/**/x(\"a[\\\"x\\\",\\\"%61bc\\\"]\");\r\n"
    );
    for (body, error) in [
        (&b"d=%5B%22x"[..], "Broken JSON encoding."),
        (&b""[..], "Payload expected."),
        (&b"d="[..], "Payload expected."),
        (&b"p=p"[..], "Payload expected."),
    ] {
        let r = request(addr, "POST", &format!("{url}/jsonp_send"), &form, body).await;
        assert_eq!(r.status, 500);
        assert!(r.text().await.contains(error));
    }
    let r = request(
        addr,
        "POST",
        &format!("{url}/jsonp_send"),
        &form,
        b"d=%5B%5D",
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn the_session_cookie_is_set_on_session_responses_when_needed() {
    let addr = serve(Options::default());
    let url = format!("/cookie_needed_echo/000/{}", sid());
    let r = post(addr, &format!("{url}/xhr"), b"").await;
    assert_eq!(r.header("set-cookie"), Some("JSESSIONID=dummy; path=/"));
    let r = request(
        addr,
        "POST",
        &format!("{url}/xhr_send"),
        &[("Cookie", "JSESSIONID=abcdef")],
        br#"["a"]"#,
    )
    .await;
    assert_eq!(r.header("set-cookie"), Some("JSESSIONID=abcdef; path=/"));
    let r = get(addr, &format!("{url}/jsonp?c=x")).await;
    assert_eq!(r.header("set-cookie"), Some("JSESSIONID=dummy; path=/"));
    let echo = post(addr, &format!("/echo/000/{}/xhr", sid()), b"").await;
    assert_eq!(echo.header("set-cookie"), None);
}

#[tokio::test]
async fn the_protocol_escapes_what_browsers_mangle_in_lowercase() {
    let addr = serve(Options::default());
    let url = format!("/echo/000/{}", sid());
    post(addr, &format!("{url}/xhr"), b"").await.text().await;
    let chars: String = (0x200c..=0x200f)
        .chain(0x2028..=0x202f)
        .chain(0x2060..=0x206f)
        .chain(0xfff0..=0xffff)
        .filter_map(char::from_u32)
        .collect();
    let body = serde_json::to_string(&[&chars]).unwrap();
    assert_eq!(
        post(addr, &format!("{url}/xhr_send"), body.as_bytes())
            .await
            .status,
        204
    );
    let frame = post(addr, &format!("{url}/xhr"), b"").await.text().await;
    let expected: String = chars
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    assert_eq!(frame, format!("a[\"{expected}\"]\n"));
}

#[tokio::test]
async fn websocket_urls_answer_other_requests_with_the_protocols_statuses() {
    let addr = serve(Options::default());
    let url = format!("/echo/000/{}/websocket", sid());
    assert_eq!(get(addr, &url).await.status, 400);
    let upgrade_close = request(
        addr,
        "GET",
        &url,
        &[("Upgrade", "WebSocket"), ("Connection", "close")],
        b"",
    )
    .await;
    assert_eq!(upgrade_close.status, 400);
    for headers in [
        &[][..],
        &[("Upgrade", "WebSocket"), ("Connection", "Upgrade")][..],
    ] {
        let r = request(addr, "POST", &url, headers, b"").await;
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("GET"));
        assert_eq!(r.header("content-type"), None);
        assert_eq!(r.text().await, "");
    }
    let handshake = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "x3JJHMbDL1EzLkh9GBhXDw=="),
    ];
    let r = request(addr, "GET", &url, &handshake, b"").await;
    assert_eq!(r.status, 101);
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("HSmrc0sMlYUkAGmm5OPpG2HaGWk=")
    );
    let off = format!("/disabled_websocket_echo/000/{}/websocket", sid());
    assert_eq!(
        request(addr, "GET", &off, &handshake, b"").await.status,
        404
    );
}

#[tokio::test]
async fn pages_from_origins_outside_the_allow_list_are_refused() {
    let addr = serve(Options {
        origins: sockjs::Origins::list(["https://app.example"]).unwrap(),
        ..Options::default()
    });
    let url = format!("/custom/000/{}", sid());
    let evil = [("Origin", "https://evil.example")];
    let r = request(addr, "POST", &format!("{url}/xhr"), &evil, b"").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let handshake = [
        ("Origin", "https://evil.example"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "x3JJHMbDL1EzLkh9GBhXDw=="),
    ];
    let r = request(addr, "GET", &format!("{url}/websocket"), &handshake, b"").await;
    assert_eq!(r.status, 403);
    let good = [("Origin", "https://app.example")];
    let r = request(addr, "POST", &format!("{url}/xhr"), &good, b"").await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.text().await, "o\n");
    let same = format!("http://{addr}");
    let r = request(
        addr,
        "POST",
        &format!("/custom/000/{}/xhr", sid()),
        &[("Origin", &same)],
        b"",
    )
    .await;
    assert_eq!(
        r.status, 200,
        "same-origin requests (the iframe transports) pass"
    );
}

#[tokio::test]
async fn silent_sessions_get_heartbeats_and_absent_ones_are_reaped() {
    let addr = serve(Options {
        heartbeat_interval: Duration::from_millis(200),
        disconnect_delay: Duration::from_millis(300),
        ..Options::default()
    });
    let url = format!("/custom/000/{}", sid());
    assert_eq!(
        post(addr, &format!("{url}/xhr"), b"").await.text().await,
        "o\n"
    );
    assert_eq!(
        post(addr, &format!("{url}/xhr"), b"").await.text().await,
        "h\n"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        post(addr, &format!("{url}/xhr_send"), br#"["x"]"#)
            .await
            .status,
        404,
        "the session is gone after the disconnect delay"
    );
    assert_eq!(
        post(addr, &format!("{url}/xhr"), b"").await.text().await,
        "o\n",
        "the id opens a new session"
    );
}

#[tokio::test]
async fn a_receiver_that_vanishes_closes_the_session_as_interrupted() {
    let addr = serve(Options::default());
    let url = format!("/echo/000/{}", sid());
    assert_eq!(
        post(addr, &format!("{url}/xhr"), b"").await.text().await,
        "o\n"
    );
    let pending = post(addr, &format!("{url}/xhr_streaming"), b"").await;
    drop(pending);
    // The server notices when it next writes; a heartbeat-free wait would hide it, so poll.
    let mut answer = String::new();
    for _ in 0..50 {
        answer = post(addr, &format!("{url}/xhr"), b"").await.text().await;
        if answer != "c[2010,\"Another connection still open\"]\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answer, "c[1002,\"Connection interrupted\"]\n");
}

#[tokio::test]
async fn oversized_sends_are_refused_and_close_the_session() {
    let addr = serve(Options {
        max_request_bytes: 1024,
        max_message_bytes: 100,
        ..Options::default()
    });
    for body in [
        format!("[\"{}\"]", "x".repeat(2000)),
        format!("[\"{}\"]", "x".repeat(200)),
    ] {
        let url = format!("/custom/000/{}", sid());
        assert_eq!(
            post(addr, &format!("{url}/xhr"), b"").await.text().await,
            "o\n"
        );
        let r = post(addr, &format!("{url}/xhr_send"), body.as_bytes()).await;
        assert_eq!(r.status, 413);
        assert_eq!(
            post(addr, &format!("{url}/xhr"), b"").await.text().await,
            "c[3009,\"Message too big\"]\n"
        );
    }
}

#[tokio::test]
async fn a_trickled_send_body_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = serve(Options {
        body_timeout: Duration::from_millis(300),
        ..Options::default()
    });
    let url = format!("/custom/000/{}", sid());
    assert_eq!(
        post(addr, &format!("{url}/xhr"), b"").await.text().await,
        "o\n"
    );
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("POST {url}/xhr_send HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[\"");
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 12];
    tokio::time::timeout(support::READ, conn.read_exact(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 408");
}
