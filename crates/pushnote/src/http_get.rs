//! A bounded, blocking HTTP/1.1 `GET` over a plain `TcpStream`: what the crate needs to ask a
//! server or forwarder's HTTP port a question (a presence channel's members), with no HTTP
//! library and no async runtime.
//!
//! Encoding the request and reading the answer are pure ([`HttpUrl::parse`], [`request`],
//! [`parse_response`]: `Ok(None)` meaning "need more bytes"); [`get`] does the I/O, within one
//! deadline for connecting, sending and reading, and never holds more than its byte limit.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The most bytes of a response's status line and headers.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// An `http://host[:port][/prefix]` URL: where an HTTP port answers, and the path its
/// endpoints are under (a proxy may put them under a prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// The host as written (an IPv6 address in brackets), for the `Host` header.
    authority: String,
    /// The host to connect to (an IPv6 address without brackets).
    host: String,
    port: u16,
    /// The path before the endpoint's, without a trailing `/` (empty for none).
    prefix: String,
}

/// Why a `GET` got no answer to read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not one this client can ask.
    #[error("{0}")]
    Url(&'static str),
    /// The host could not be reached or the connection failed.
    #[error("cannot reach {authority}: {source}")]
    Io {
        authority: String,
        source: std::io::Error,
    },
    /// No whole answer within the deadline.
    #[error("no answer from {authority} within {timeout:?}")]
    Timeout {
        authority: String,
        timeout: Duration,
    },
    /// The answer is longer than the limit.
    #[error("the answer from {authority} is over {limit} bytes")]
    TooLarge { authority: String, limit: usize },
    /// Not an HTTP/1.x answer.
    #[error("the answer from {authority} is not HTTP: {reason}")]
    Malformed {
        authority: String,
        reason: &'static str,
    },
}

/// An answer: its status and its body (de-chunked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpUrl {
    /// Reads `http://host[:port][/prefix]` (port 80 by default). `https://` and anything with
    /// a query, a fragment or credentials are refused.
    pub fn parse(url: &str) -> Result<HttpUrl, HttpError> {
        let rest = if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            rest
        } else if strip_prefix_ignore_case(url, "https://").is_some() {
            return Err(HttpError::Url(
                "https:// URLs are not supported: give the http:// address of the HTTP port \
                 (on loopback or a private network)",
            ));
        } else {
            return Err(HttpError::Url(
                "the URL must start with http:// (such as http://127.0.0.1:8003)",
            ));
        };
        if rest.contains(['?', '#', '@'])
            || rest.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(HttpError::Url(
                "the URL must be http://host[:port][/path], without a query, fragment, \
                 credentials or spaces",
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(authority)?;
        Ok(HttpUrl {
            authority: authority.to_owned(),
            host: host.to_owned(),
            port,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `host[:port]`, `[v6][:port]` into the host to connect to and the port.
fn split_host_port(authority: &str) -> Result<(&str, u16), HttpError> {
    const BAD_PORT: HttpError = HttpError::Url("the URL's port must be a number from 1 to 65535");
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or(HttpError::Url("the URL's IPv6 address lacks its closing ]"))?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or(BAD_PORT)?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(HttpError::Url("the URL has no host"));
    }
    let port = match port {
        None => 80,
        Some(text) => match text.parse::<u16>() {
            Ok(p) if p > 0 && text.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(BAD_PORT),
        },
    };
    Ok((host, port))
}

/// `text` percent-encoded for a URL's query: every byte but RFC 3986's unreserved ones.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The bytes of `GET {prefix}{target}` to `url` with `Authorization: Bearer {bearer}`, asking
/// the server to close the connection after answering. `target` is a path and query, already
/// encoded; `bearer` has no control characters (the caller checks).
pub fn request(url: &HttpUrl, target: &str, bearer: &str) -> Vec<u8> {
    format!(
        "GET {}{target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {bearer}\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n",
        url.prefix, url.authority
    )
    .into_bytes()
}

/// The answer in `buf`, once it is whole: `Ok(None)` while more bytes are needed and the
/// peer has not closed (`eof` false). A body with neither `Content-Length` nor chunked coding
/// lasts until the peer closes.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, &'static str> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD_BYTES {
            return Err("its head is over 64 KiB");
        }
        return if eof {
            Err("the connection closed before the answer's head ended")
        } else {
            Ok(None)
        };
    };
    if head_end > MAX_HEAD_BYTES {
        return Err("its head is over 64 KiB");
    }
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "its head is not text")?;
    let mut lines = head.split("\r\n");
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("a header line has no ':'")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| "its Content-Length is not a number")?;
            if length.is_some_and(|l| l != n) {
                return Err("it has two different Content-Lengths");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err("its Transfer-Encoding is not chunked");
            }
            chunked = true;
        }
    }
    let rest = &buf[head_end + 4..];
    let body = if chunked {
        match dechunk(rest)? {
            Some(body) => body,
            None if eof => return Err("the connection closed before the last chunk"),
            None => return Ok(None),
        }
    } else if let Some(n) = length {
        if rest.len() < n {
            return if eof {
                Err("the connection closed before the body ended")
            } else {
                Ok(None)
            };
        }
        rest[..n].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { status, body }))
}

/// The status code of `HTTP/1.x SSS reason`.
fn parse_status_line(line: &str) -> Result<u16, &'static str> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err("it does not start with HTTP/1.x");
    }
    let code = parts.next().unwrap_or_default();
    match code.parse::<u16>() {
        Ok(c) if code.len() == 3 && (200..600).contains(&c) => Ok(c),
        Ok(c) if code.len() == 3 && (100..200).contains(&c) => Err("it is an interim (1xx) answer"),
        _ => Err("its status line has no status code"),
    }
}

/// A chunked body's data, once its last chunk (and trailers) arrived; `Ok(None)` before.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let line =
            std::str::from_utf8(&data[..line_end]).map_err(|_| "a chunk size is not text")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| "a chunk size is not hex")?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let mut rest = data;
            loop {
                let Some(end) = find(rest, b"\r\n") else {
                    return Ok(None);
                };
                if end == 0 {
                    return Ok(Some(body));
                }
                rest = &rest[end + 2..];
            }
        }
        if data.len() < size.saturating_add(2) {
            return Ok(None);
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err("a chunk does not end with CRLF");
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `GET {target}` at `url` with the bearer token, connecting, sending and reading the whole
/// answer within `timeout`, and at most `max_bytes` of it.
pub fn get(
    url: &HttpUrl,
    target: &str,
    bearer: &str,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Response, HttpError> {
    let deadline = Instant::now() + timeout;
    let authority = || url.authority.clone();
    let io = |source: std::io::Error| HttpError::Io {
        authority: authority(),
        source,
    };
    let timed_out = || HttpError::Timeout {
        authority: authority(),
        timeout,
    };
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };

    let mut last = None;
    let mut stream = None;
    for addr in (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(io)?
    {
        let Some(left) = left() else { break };
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) if is_timeout(&e) => return Err(timed_out()),
        (None, Some(e)) => return Err(io(e)),
        (None, None) if left().is_none() => return Err(timed_out()),
        (None, None) => return Err(io(std::io::Error::other("the host has no address"))),
    };

    stream
        .set_write_timeout(Some(left().ok_or_else(timed_out)?))
        .map_err(io)?;
    stream
        .write_all(&request(url, target, bearer))
        .map_err(|e| if is_timeout(&e) { timed_out() } else { io(e) })?;

    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        stream
            .set_read_timeout(Some(left().ok_or_else(timed_out)?))
            .map_err(io)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Err(timed_out()),
            Err(e) => return Err(io(e)),
        };
        if buf.len() + n > max_bytes {
            return Err(HttpError::TooLarge {
                authority: authority(),
                limit: max_bytes,
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_response(&buf, n == 0) {
            Ok(Some(response)) => return Ok(response),
            Ok(None) => {}
            Err(reason) => {
                return Err(HttpError::Malformed {
                    authority: authority(),
                    reason,
                })
            }
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_prefix() {
        let u = HttpUrl::parse("http://127.0.0.1:8003").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("127.0.0.1", 8003, "")
        );
        let u = HttpUrl::parse("HTTP://push.example/pushnote/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("push.example", 80, "/pushnote")
        );
        let u = HttpUrl::parse("http://[::1]:9/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("::1", 9, "[::1]:9")
        );
        for bad in [
            "https://x",
            "127.0.0.1:8003",
            "http://",
            "http://:80",
            "http://x:0",
            "http://x:99999",
            "http://x:+80",
            "http://x:8a",
            "http://[::1",
            "http://[::1]x",
            "http://u:p@x",
            "http://x/?a=1",
            "http://x/a b",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_request_is_a_get_with_the_key_that_asks_for_close() {
        let u = HttpUrl::parse("http://h:1/base/").unwrap();
        let r = request(&u, "/presence?channel=presence-a", "KEY");
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "GET /base/presence?channel=presence-a HTTP/1.1\r\nHost: h:1\r\n\
             Authorization: Bearer KEY\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            percent_encode("presence-a=b@c,d;e.f_g~"),
            "presence-a%3Db%40c%2Cd%3Be.f_g~"
        );
    }

    #[test]
    fn answers_are_read_by_length_by_chunks_or_to_the_end() {
        let by_length = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        for cut in 0..by_length.len() {
            assert_eq!(parse_response(&by_length[..cut], false), Ok(None), "{cut}");
        }
        assert_eq!(
            parse_response(by_length, false),
            Ok(Some(Response {
                status: 200,
                body: b"{}".to_vec()
            }))
        );
        let chunked =
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n{\"e\r\n2\r\n\"}\r\n0\r\n\r\n";
        for cut in 0..chunked.len() {
            assert_eq!(parse_response(&chunked[..cut], false), Ok(None), "{cut}");
        }
        assert_eq!(
            parse_response(chunked, false),
            Ok(Some(Response {
                status: 401,
                body: b"{\"e\"}".to_vec()
            }))
        );
        let to_end = b"HTTP/1.0 404 Not Found\r\n\r\nnope";
        assert_eq!(parse_response(to_end, false), Ok(None));
        assert_eq!(
            parse_response(to_end, true),
            Ok(Some(Response {
                status: 404,
                body: b"nope".to_vec()
            }))
        );
    }

    #[test]
    fn what_is_not_http_is_refused() {
        for (bad, eof) in [
            (&b"SSH-2.0-OpenSSH\r\n\r\n"[..], false),
            (b"HTTP/1.1 20 OK\r\n\r\n", false),
            (b"HTTP/1.1 100 Continue\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
            ),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
                false,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", true),
            (b"HTTP/1.1 200 OK\r\n", true),
        ] {
            assert!(
                parse_response(bad, eof).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let endless_head = vec![b'a'; MAX_HEAD_BYTES + 1];
        assert!(parse_response(&endless_head, false).is_err());
    }

    /// A listener on a free loopback port whose one connection gets `answer`, then is held
    /// open (until the test ends) unless `close`.
    fn peer(answer: Vec<u8>, close: bool) -> HttpUrl {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = HttpUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.write_all(&answer);
            if !close {
                std::thread::sleep(Duration::from_secs(30));
            }
        });
        url
    }

    #[test]
    fn an_exchange_reads_the_answer_and_holds_its_bounds() {
        let ok = peer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            false,
        );
        let r = get(&ok, "/x", "k", Duration::from_secs(20), 1000).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));

        let silent = peer(Vec::new(), false);
        let e = get(&silent, "/x", "k", Duration::from_millis(300), 1000).unwrap_err();
        assert!(matches!(e, HttpError::Timeout { .. }), "{e:?}");

        let endless = peer(vec![b'a'; 5000], false);
        let e = get(&endless, "/x", "k", Duration::from_secs(20), 1000).unwrap_err();
        assert!(
            matches!(e, HttpError::TooLarge { limit: 1000, .. }),
            "{e:?}"
        );

        let garbage = peer(b"hello\r\n\r\n".to_vec(), true);
        let e = get(&garbage, "/x", "k", Duration::from_secs(20), 1000).unwrap_err();
        assert!(matches!(e, HttpError::Malformed { .. }), "{e:?}");
    }
}
