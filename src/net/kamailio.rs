//! Kamailio load over JSON-RPC: the number of dialogs (calls) it is tracking now.
//!
//! Kamailio's jsonrpcs module answers HTTP through xhttp, on the SIP TCP listener. One POST
//! per reading; this is what Kamailio 5.6.3 (Debian 12) actually sends back:
//!
//! ```text
//! → POST /RPC HTTP/1.0\r\n
//!   Host: 127.0.0.1:5060\r\n
//!   Content-Type: application/json\r\n
//!   Content-Length: 65\r\n
//!   Connection: close\r\n
//!   \r\n
//!   {"jsonrpc":"2.0","method":"dlg.stats_active","params":[1],"id":1}
//! ← HTTP/1.0 200 OK\r\n
//!   Sia: SIP/2.0/TCP 127.0.0.1:44068\r\n
//!   Content-Type: application/json\r\n
//!   Server: kamailio (5.6.3 (x86_64/linux))\r\n
//!   Content-Length: 129\r\n
//!   \r\n
//!   {\n\t"jsonrpc":\t"2.0",\n\t"result":\t{\n\t\t"starting":\t0,\n\t\t"connecting":\t0,\n
//!   \t\t"answering":\t0,\n\t\t"ongoing":\t0,\n\t\t"all":\t0\n\t},\n\t"id":\t1\n}
//! ```
//!
//! Kamailio keeps the connection open after the reply despite `Connection: close`, so the
//! body ends at `Content-Length`, not at end of stream. A JSON-RPC error comes with an HTTP
//! status taken from it, e.g. `HTTP/1.0 500 Method Not Found` and
//! `{"error":{"code":500,"message":"Method Not Found"}}` when the dialog module is absent.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::probe::ProbeErrorKind;
use serde_json::Value;

use super::probe::{printable, Deadline, ProbeError};

/// `params: [1]` for `dlg.stats_active` is dialog.c's "own dialogs" flag: in a DMQ cluster
/// every node also holds the other nodes' dialogs (replicated for failover), and without the
/// flag it counts those too, so each node would report the whole cluster's calls as its own.
const LOCAL_ONLY: &str = "[1]";
/// Real header blocks are about 200 bytes.
const MAX_HEADER: usize = 8 * 1024;
/// The reply is about 130 bytes; anything huge is not the reply we asked for.
const MAX_BODY: usize = 64 * 1024;

/// Reads the number of active dialogs from `url` (`http://host:port/path`, the path being
/// whatever the `xhttp:request` route hands to `jsonrpc_dispatch()`, usually `/RPC`).
///
/// The count is `all` from `dlg.stats_active`: dialogs in every state, from the first INVITE
/// (`starting`) through ringing (`connecting`) and answered (`answering`, `ongoing`). A call
/// that is still ringing already holds a channel on the gateway behind Kamailio and counts
/// against dialog-profile limits, so it is load now, not when it is answered; counting only
/// `ongoing` would hide a burst of call set-ups. Needs dialog tracking in the script
/// (`dlg_manage()` or the dialog flag); a stateless proxy always reports 0.
///
/// The whole exchange, connect included, takes at most `timeout`.
pub fn read_active_dialogs(url: &str, timeout: Duration) -> Result<u32, ProbeError> {
    read_active_dialogs_via(url, None, timeout)
}

/// `host:port` that [`read_active_dialogs`] connects to for `url`, for a caller that
/// resolves names itself; `None` for a URL it would refuse.
pub fn connect_target(url: &str) -> Option<String> {
    Target::parse(url).ok().map(|t| t.connect_to)
}

/// As [`read_active_dialogs`], connecting to `via` (the URL's host, already resolved) when
/// given; the Host header still names the URL's host.
pub fn read_active_dialogs_via(
    url: &str,
    via: Option<SocketAddr>,
    timeout: Duration,
) -> Result<u32, ProbeError> {
    let body = call_with(
        url,
        via,
        "dlg.stats_active",
        Some(LOCAL_ONLY),
        MAX_BODY,
        timeout,
    )?;
    let all = serde_json::from_str::<Value>(&body).ok().and_then(|doc| {
        let n = doc.pointer("/result/all")?.as_u64()?;
        u32::try_from(n).ok()
    });
    all.ok_or_else(|| {
        let shown = printable(body.as_bytes(), 80);
        // `call` has refused URLs with credentials, so the URL is fit for a message.
        Deadline::new(url, timeout).err(ProbeErrorKind::Protocol(format!(
            "no result.all in \"{shown}\""
        )))
    })
}

/// Calls JSON-RPC `method` (no parameters) at `url` and returns the reply body, which is a
/// JSON-RPC result: an `error` member or an HTTP status other than 200 is an error. Bodies
/// longer than `max_body` are refused. The whole exchange takes at most `timeout`.
pub(crate) fn call(
    url: &str,
    method: &str,
    max_body: usize,
    timeout: Duration,
) -> Result<String, ProbeError> {
    call_with(url, None, method, None, max_body, timeout)
}

/// As [`call`], with `params` (a JSON array, sent as is) and connecting to `via` when given.
fn call_with(
    url: &str,
    via: Option<SocketAddr>,
    method: &str,
    params: Option<&str>,
    max_body: usize,
    timeout: Duration,
) -> Result<String, ProbeError> {
    let target = match Target::parse(url) {
        Ok(target) => target,
        Err((peer, why)) => {
            return Err(Deadline::new(&peer, timeout).err(ProbeErrorKind::BadTarget(why)));
        }
    };
    let d = Deadline::new(&target.peer, timeout);
    let mut stream = match via {
        Some(addr) => d.connect_addr(addr)?,
        None => d.connect(&target.connect_to)?,
    };
    let params = params.map_or(String::new(), |p| format!(r#","params":{p}"#));
    let request_body = format!(r#"{{"jsonrpc":"2.0","method":"{method}"{params},"id":1}}"#);
    let request = format!(
        "POST {} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{request_body}",
        target.path,
        target.host,
        request_body.len()
    );
    d.write_all(&mut stream, request.as_bytes(), "sending the request")?;
    let reply = read_reply(&d, &mut stream, max_body)?;
    // Without a copy when it is valid UTF-8, as Kamailio's JSON is.
    let body = String::from_utf8(reply.body)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());

    // A JSON-RPC error explains a non-200 status better than the status does.
    let doc = serde_json::from_str::<Value>(&body).ok();
    if let Some(error) = doc.as_ref().and_then(|d| d.get("error")) {
        let code = error.get("code").map_or("?".into(), Value::to_string);
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        let shown = printable(format!("{code} {message}").as_bytes(), 80);
        return Err(d.err(ProbeErrorKind::Remote(format!("json-rpc error {shown}"))));
    }
    if reply.status != 200 {
        let shown = printable(reply.reason.as_bytes(), 80);
        return Err(d.err(ProbeErrorKind::Remote(format!(
            "http status {} {shown}",
            reply.status
        ))));
    }
    Ok(body)
}

/// The parts of an `http://` URL that the request needs.
struct Target {
    /// For messages: the URL with any user:password@ part removed.
    peer: String,
    /// `host:port` for the Host header, as written in the URL.
    host: String,
    /// `host:port` with the default port filled in.
    connect_to: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, (String, &'static str)> {
        let Some(rest) = url.strip_prefix("http://") else {
            let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
            return Err((format!("{scheme}://…"), "only http:// urls are supported"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if let Some((_, host)) = authority.rsplit_once('@') {
            // Credentials must not end up in log lines, not even in this error.
            let peer = format!("http://{host}{path}");
            return Err((peer, "credentials in the url are not supported"));
        }
        if authority.is_empty() || path.contains([' ', '\r', '\n']) {
            return Err((url.to_string(), "no host, or spaces in the path"));
        }
        // `[::1]` has colons but no port; `[::1]:5060` and `host:5060` have one.
        let has_port = match authority.rfind(']') {
            Some(close) => authority[close..].contains(':'),
            None => authority.contains(':'),
        };
        let connect_to = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Target {
            peer: url.to_string(),
            host: authority.to_string(),
            connect_to,
            path: path.to_string(),
        })
    }
}

struct Reply {
    status: u16,
    reason: String,
    body: Vec<u8>,
}

fn read_reply(d: &Deadline, stream: &mut TcpStream, max_body: usize) -> Result<Reply, ProbeError> {
    const DURING: &str = "waiting for the http reply";
    let protocol = |detail: String| d.err(ProbeErrorKind::Protocol(detail));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut eof = false;
    let (head_len, sep_len) = loop {
        if let Some(found) = header_end(&buf) {
            break found;
        }
        if buf.len() > MAX_HEADER || eof {
            let shown = printable(&buf, 80);
            return Err(if eof && buf.is_empty() {
                d.err(ProbeErrorKind::Closed { during: DURING })
            } else {
                protocol(format!("no http header block in \"{shown}\""))
            });
        }
        let n = d.read(stream, &mut chunk, DURING)?;
        eof = n == 0;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let mut body = buf.split_off(head_len + sep_len);

    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (version, code, reason) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
    let status = match (version, code.and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code,
        _ => {
            let shown = printable(status_line.as_bytes(), 80);
            return Err(protocol(format!("bad http status line \"{shown}\"")));
        }
    };
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("content-length") {
            let len = value.parse::<usize>().map_err(|_| {
                protocol(format!(
                    "bad content-length \"{}\"",
                    printable(value.as_bytes(), 40)
                ))
            })?;
            content_length = Some(len);
        } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
            // An HTTP/1.0 request must not get a chunked reply.
            return Err(protocol(format!(
                "unexpected transfer-encoding \"{value}\""
            )));
        }
    }

    match content_length {
        Some(len) if len > max_body => {
            return Err(protocol(format!("body of {len} bytes exceeds {max_body}")));
        }
        // Kamailio leaves the connection open: stop at Content-Length, never wait for EOF.
        // Read straight into place: an `ul.dump` reply can be megabytes.
        Some(len) => {
            let mut filled = body.len().min(len);
            body.resize(len.max(body.len()), 0);
            while filled < len {
                let n = d.read(stream, &mut body[filled..len], "reading the http body")?;
                if n == 0 {
                    return Err(d.err(ProbeErrorKind::Closed {
                        during: "reading the http body",
                    }));
                }
                filled += n;
            }
            body.truncate(len);
        }
        None => {
            while !eof {
                if body.len() > max_body {
                    return Err(protocol(format!("body exceeds {max_body} bytes")));
                }
                let n = d.read(stream, &mut chunk, "reading the http body")?;
                eof = n == 0;
                body.extend_from_slice(&chunk[..n]);
            }
        }
    }
    Ok(Reply {
        status,
        reason: reason.to_string(),
        body,
    })
}

/// Length of the header block (without the blank line) and of the blank-line separator.
fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else if buf[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests;
