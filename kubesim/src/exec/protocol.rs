//! The Kubernetes remote-command WebSocket sub-protocols (`channel.k8s.io`, `v2`..`v5`):
//! negotiation, channel framing and the `Status` documents of the error channel — pure functions,
//! no I/O.
//!
//! Every binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error/status,
//! 4 resize (v3+), and in v5 255 "close" (`[255, <channel>]`, used by clients to signal stdin EOF).
//! From v4 on the error channel carries a JSON `metav1.Status`; before, plain text.

use serde_json::{json, Value};

/// stdin channel.
pub const STDIN: u8 = 0;
/// stdout channel.
pub const STDOUT: u8 = 1;
/// stderr channel.
pub const STDERR: u8 = 2;
/// error/status channel.
pub const ERROR: u8 = 3;
/// terminal resize channel.
pub const RESIZE: u8 = 4;
/// v5 close-signal channel.
pub const CLOSE: u8 = 255;

/// A negotiated sub-protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// `channel.k8s.io` (or no sub-protocol): text errors, no resize.
    V1,
    /// `v2.channel.k8s.io`.
    V2,
    /// `v3.channel.k8s.io`: adds resize.
    V3,
    /// `v4.channel.k8s.io`: JSON `Status` on the error channel.
    V4,
    /// `v5.channel.k8s.io`: adds the close signal.
    V5,
}

/// Sub-protocols the server accepts, in its order of preference.
pub const SUPPORTED: &[(&str, Protocol)] = &[
    ("v5.channel.k8s.io", Protocol::V5),
    ("v4.channel.k8s.io", Protocol::V4),
    ("v3.channel.k8s.io", Protocol::V3),
    ("v2.channel.k8s.io", Protocol::V2),
    ("channel.k8s.io", Protocol::V1),
];

impl Protocol {
    /// The wire name.
    pub fn name(self) -> &'static str {
        SUPPORTED
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("channel.k8s.io", |(n, _)| n)
    }

    /// Whether the error channel carries JSON `Status` documents.
    pub fn json_status(self) -> bool {
        self >= Protocol::V4
    }

    /// Whether clients may half-close streams with the close channel.
    pub fn supports_close(self) -> bool {
        self == Protocol::V5
    }
}

/// Picks the sub-protocol from the values of the `Sec-WebSocket-Protocol` request headers
/// (each possibly a comma-separated list). `Ok(None)`: the client asked for none (plain
/// `channel.k8s.io` framing); `Err(requested)`: none of the requested ones is supported.
pub fn negotiate<'a>(headers: impl IntoIterator<Item = &'a str>) -> Result<Option<Protocol>, Vec<String>> {
    let requested: Vec<String> = headers
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if requested.is_empty() {
        return Ok(None);
    }
    SUPPORTED
        .iter()
        .find(|(name, _)| requested.iter().any(|r| r == name))
        .map(|(_, p)| Some(*p))
        .ok_or(requested)
}

/// One message on the wire: channel byte + payload.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    v
}

/// A message received from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Data for the process's stdin.
    Stdin(Vec<u8>),
    /// The client closed its stdin (v5 close signal for channel 0).
    CloseStdin,
    /// Terminal size change.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// Anything else (ignored, like the real server does).
    Ignored,
}

/// Decodes one binary client message.
pub fn parse_incoming(protocol: Protocol, msg: &[u8]) -> Incoming {
    let Some((&channel, data)) = msg.split_first() else {
        return Incoming::Ignored;
    };
    match channel {
        STDIN => Incoming::Stdin(data.to_vec()),
        CLOSE if protocol.supports_close() && data.first() == Some(&STDIN) => Incoming::CloseStdin,
        RESIZE if protocol >= Protocol::V3 => {
            let v: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
            let dim = |k: &str| v[k].as_u64().and_then(|n| u16::try_from(n).ok());
            match (dim("Width"), dim("Height")) {
                (Some(width), Some(height)) => Incoming::Resize { width, height },
                _ => Incoming::Ignored,
            }
        }
        _ => Incoming::Ignored,
    }
}

/// Serialises like Go's `encoding/json` (which escapes `<`, `>` and `&` inside strings).
pub fn go_json(v: &Value) -> Vec<u8> {
    let s = v.to_string();
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .into_bytes()
}

/// The `Status` the kubelet sends when the command exited with 0.
pub fn success_status() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

/// The `Status` the kubelet sends for a non-zero exit code (containerd's error wording).
pub fn exit_status(command: &[String], code: i32) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {}",
            command.join(" "),
            code
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
    })
}

/// An `InternalError` status (`apierrors.NewInternalError`).
pub fn internal_error_status(err: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {err}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": err}]},
        "code": 500
    })
}

/// What to put on the error channel at the end of a session, if anything.
pub fn final_error_message(protocol: Protocol, status: &Value) -> Option<Vec<u8>> {
    if protocol.json_status() {
        return Some(go_json(status));
    }
    // Text protocols only report failures, as the status message.
    (status["status"] != "Success").then(|| status["message"].as_str().unwrap_or("").as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_the_newest_supported_protocol() {
        assert_eq!(
            negotiate(["v4.channel.k8s.io, v5.channel.k8s.io"]),
            Ok(Some(Protocol::V5))
        );
        assert_eq!(
            negotiate(["v4.channel.k8s.io", "v3.channel.k8s.io"]),
            Ok(Some(Protocol::V4))
        );
        assert_eq!(negotiate(["channel.k8s.io"]), Ok(Some(Protocol::V1)));
        assert_eq!(negotiate(Vec::<&str>::new()), Ok(None));
        assert_eq!(
            negotiate(["v9.channel.k8s.io"]),
            Err(vec!["v9.channel.k8s.io".to_string()])
        );
    }

    #[test]
    fn frames_carry_the_channel_byte() {
        assert_eq!(frame(STDOUT, b"hi"), vec![1, b'h', b'i']);
        assert_eq!(frame(ERROR, b""), vec![3]);
    }

    #[test]
    fn incoming_messages_decode_per_protocol() {
        assert_eq!(
            parse_incoming(Protocol::V5, &[0, b'a']),
            Incoming::Stdin(vec![b'a'])
        );
        assert_eq!(parse_incoming(Protocol::V5, &[255, 0]), Incoming::CloseStdin);
        assert_eq!(parse_incoming(Protocol::V4, &[255, 0]), Incoming::Ignored);
        assert_eq!(parse_incoming(Protocol::V5, &[255, 1]), Incoming::Ignored);
        assert_eq!(
            parse_incoming(Protocol::V4, &frame(RESIZE, br#"{"Width":80,"Height":24}"#)),
            Incoming::Resize {
                width: 80,
                height: 24
            }
        );
        assert_eq!(
            parse_incoming(Protocol::V2, &frame(RESIZE, br#"{"Width":80,"Height":24}"#)),
            Incoming::Ignored
        );
        assert_eq!(parse_incoming(Protocol::V5, &[]), Incoming::Ignored);
    }

    #[test]
    fn statuses_match_the_kubelet() {
        assert_eq!(
            go_json(&success_status()),
            br#"{"metadata":{},"status":"Success"}"#.to_vec()
        );
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        let s = String::from_utf8(go_json(&exit_status(&cmd, 3))).unwrap();
        assert_eq!(
            s,
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        assert_eq!(
            String::from_utf8(go_json(&json!({"m": "a<b>&"}))).unwrap(),
            r#"{"m":"a\u003cb\u003e\u0026"}"#
        );
    }

    #[test]
    fn text_protocols_report_only_failures() {
        assert_eq!(final_error_message(Protocol::V1, &success_status()), None);
        let failure = exit_status(&["false".to_string()], 1);
        assert_eq!(
            final_error_message(Protocol::V2, &failure).unwrap(),
            b"command terminated with non-zero exit code: error executing command [false], exit code 1"
                .to_vec()
        );
        assert!(final_error_message(Protocol::V4, &success_status()).is_some());
    }
}
