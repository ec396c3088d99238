//! Redis' wire protocol, RESP (versions 2 and 3): commands encoded, replies and pushes parsed,
//! within bounds (pure).
//!
//! A reply is parsed from the bytes read so far: [`parse`] says how many bytes one whole reply
//! took, or that more are needed. What a peer sends is bounded before it is buffered: a bulk
//! string's length, an aggregate's count and nesting are checked from their headers, so a
//! Redis (or anything posing as one) that answers garbage is an error, never a large
//! allocation.

/// One reply, push or element of Redis.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A simple string, a double, a big number or a boolean (`+`, `,`, `(`, `#`), as written.
    Simple(Vec<u8>),
    /// An error reply (`-`, `!`): Redis' sentence.
    Error(String),
    /// An integer (`:`).
    Int(i64),
    /// A bulk or verbatim string (`$`, `=`).
    Bulk(Vec<u8>),
    /// The null of RESP3 (`_`) or RESP2's null bulk string or array.
    Nil,
    /// An array or a set (`*`, `~`).
    Array(Vec<Value>),
    /// A map (`%`), as its keys and values in turn.
    Map(Vec<Value>),
    /// Out-of-band data (`>`): a Pub/Sub message, for one.
    Push(Vec<Value>),
}

impl Value {
    /// The bytes of a string value.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// An integer, or a string holding one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Simple(b) | Value::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The elements of an array, a set or a push.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }
}

/// What a reply may be, at most.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of one string.
    pub string_bytes: usize,
    /// Elements of one aggregate (a map's keys and values each count).
    pub elements: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            string_bytes: 64 * 1024 * 1024,
            elements: 1 << 20,
        }
    }
}

/// Nesting deeper than this is not a reply pushnote asks for.
const MAX_DEPTH: usize = 8;

/// Why bytes are not a reply.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("not a Redis reply: {0}")]
pub struct RespError(pub String);

fn bad(why: impl Into<String>) -> RespError {
    RespError(why.into())
}

/// Appends `args` as one command (an array of bulk strings).
pub fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The first whole reply in `buf` and the bytes it took, `None` if more are needed.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, RespError> {
    let mut at = 0;
    Ok(value(buf, &mut at, limits, 0)?.map(|v| (v, at)))
}

/// The line at `*at` without its CRLF, `*at` moved past it.
fn line<'b>(buf: &'b [u8], at: &mut usize) -> Result<Option<&'b [u8]>, RespError> {
    let rest = &buf[*at..];
    // A header or simple value is short: past this without its end it is not RESP.
    const LONGEST_LINE: usize = 64 * 1024;
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end > LONGEST_LINE => Err(bad("a line too long")),
        Some(end) => {
            *at += end + 2;
            Ok(Some(&rest[..end]))
        }
        None if rest.len() > LONGEST_LINE => Err(bad("a line too long")),
        None => Ok(None),
    }
}

fn number(text: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            bad(format!(
                "{:?} is not a number",
                String::from_utf8_lossy(text)
            ))
        })
}

fn value(
    buf: &[u8],
    at: &mut usize,
    limits: &Limits,
    depth: usize,
) -> Result<Option<Value>, RespError> {
    if depth > MAX_DEPTH {
        return Err(bad("nested too deep"));
    }
    let Some(&kind) = buf.get(*at) else {
        return Ok(None);
    };
    let start = *at;
    *at += 1;
    let Some(head) = line(buf, at)? else {
        *at = start;
        return Ok(None);
    };
    let parsed = match kind {
        b'+' | b',' | b'(' | b'#' => Some(Value::Simple(head.to_vec())),
        b'-' => Some(Value::Error(String::from_utf8_lossy(head).into_owned())),
        b':' => Some(Value::Int(number(head)?)),
        b'_' => Some(Value::Nil),
        b'$' | b'=' | b'!' => {
            let len = number(head)?;
            if len == -1 {
                Some(Value::Nil)
            } else {
                let len = usize::try_from(len).map_err(|_| bad("a negative length"))?;
                if len > limits.string_bytes {
                    return Err(bad(format!("a string of {len} bytes")));
                }
                if buf.len() < *at + len + 2 {
                    None
                } else if &buf[*at + len..*at + len + 2] != b"\r\n" {
                    return Err(bad("a string without its end"));
                } else {
                    let bytes = buf[*at..*at + len].to_vec();
                    *at += len + 2;
                    Some(match kind {
                        b'!' => Value::Error(String::from_utf8_lossy(&bytes).into_owned()),
                        // A verbatim string starts with its format and a colon.
                        b'=' => Value::Bulk(bytes.get(4..).unwrap_or_default().to_vec()),
                        _ => Value::Bulk(bytes),
                    })
                }
            }
        }
        b'*' | b'~' | b'%' | b'>' | b'|' => {
            let count = number(head)?;
            if count == -1 && kind == b'*' {
                Some(Value::Nil)
            } else {
                let count = usize::try_from(count).map_err(|_| bad("a negative count"))?;
                let count = if matches!(kind, b'%' | b'|') {
                    count
                        .checked_mul(2)
                        .ok_or_else(|| bad("a count too large"))?
                } else {
                    count
                };
                if count > limits.elements {
                    return Err(bad(format!("an aggregate of {count} elements")));
                }
                // Grown as elements arrive: a header's count alone allocates nothing.
                let mut items = Vec::new();
                let mut whole = true;
                for _ in 0..count {
                    match value(buf, at, limits, depth + 1)? {
                        Some(v) => items.push(v),
                        None => {
                            whole = false;
                            break;
                        }
                    }
                }
                match (whole, kind) {
                    (false, _) => None,
                    (true, b'>') => Some(Value::Push(items)),
                    (true, b'%') => Some(Value::Map(items)),
                    // Attributes describe the value after them, which is the reply.
                    (true, b'|') => value(buf, at, limits, depth)?,
                    (true, _) => Some(Value::Array(items)),
                }
            }
        }
        other => return Err(bad(format!("type byte {other:#04x}"))),
    };
    if parsed.is_none() {
        *at = start;
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Value {
        let (v, used) = parse(bytes, &Limits::default()).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        v
    }

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&[b"SET", b"k", b"a\r\nb"], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
    }

    #[test]
    fn every_type_of_resp2_and_resp3_parses() {
        assert_eq!(whole(b"+OK\r\n"), Value::Simple(b"OK".to_vec()));
        assert_eq!(whole(b"-ERR no\r\n"), Value::Error("ERR no".into()));
        assert_eq!(whole(b":-7\r\n"), Value::Int(-7));
        assert_eq!(whole(b"$3\r\na\r\n\r\n"), Value::Bulk(b"a\r\n".to_vec()));
        assert_eq!(whole(b"$-1\r\n"), Value::Nil);
        assert_eq!(whole(b"*-1\r\n"), Value::Nil);
        assert_eq!(whole(b"_\r\n"), Value::Nil);
        assert_eq!(whole(b"#t\r\n"), Value::Simple(b"t".to_vec()));
        assert_eq!(whole(b",1.5\r\n"), Value::Simple(b"1.5".to_vec()));
        assert_eq!(whole(b"=7\r\ntxt:abc\r\n"), Value::Bulk(b"abc".to_vec()));
        assert_eq!(whole(b"!3\r\nbad\r\n"), Value::Error("bad".into()));
        assert_eq!(
            whole(b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n"),
            Value::Array(vec![
                Value::Int(1),
                Value::Array(vec![Value::Bulk(b"x".to_vec())])
            ])
        );
        assert_eq!(
            whole(b"%1\r\n+a\r\n:2\r\n"),
            Value::Map(vec![Value::Simple(b"a".to_vec()), Value::Int(2)])
        );
        assert_eq!(
            whole(b">2\r\n$7\r\nmessage\r\n$0\r\n\r\n"),
            Value::Push(vec![Value::Bulk(b"message".to_vec()), Value::Bulk(vec![])])
        );
        assert_eq!(whole(b"|1\r\n+k\r\n+v\r\n:5\r\n"), Value::Int(5));
    }

    #[test]
    fn a_reply_cut_anywhere_waits_for_the_rest() {
        let reply = b">3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$5\r\nhello\r\n+OK\r\n";
        for cut in 0..reply.len() - 5 {
            assert_eq!(
                parse(&reply[..cut], &Limits::default()),
                Ok(None),
                "cut at {cut}"
            );
        }
        let (v, used) = parse(reply, &Limits::default()).unwrap().unwrap();
        assert_eq!(used, reply.len() - 5);
        assert_eq!(v.items().unwrap()[2].bytes(), Some(&b"hello"[..]));
    }

    #[test]
    fn garbage_and_oversized_headers_are_errors_not_allocations() {
        let limits = Limits {
            string_bytes: 10,
            elements: 4,
        };
        assert!(parse(b"$11\r\n", &limits).is_err());
        assert!(parse(b"*5\r\n", &limits).is_err());
        assert!(parse(b"%3\r\n", &limits).is_err());
        assert!(parse(b"$-2\r\n", &limits).is_err());
        assert!(parse(b"$x\r\n", &limits).is_err());
        assert!(parse(b"?\r\n", &limits).is_err());
        assert!(parse(b"$2\r\nabcd", &limits).is_err());
        assert!(parse(&[b'+'; 70 * 1024], &limits).is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(parse(deep.as_bytes(), &limits).is_err());
        assert_eq!(parse(b"*4\r\n", &limits), Ok(None));
    }
}
