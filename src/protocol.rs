//! The Phoenix Channels wire format: decoding client frames and encoding
//! server frames, for serializer versions 1 (JSON objects) and 2 (JSON arrays).
//!
//! Pure functions only: no I/O and no room logic, so the connection task,
//! the long-poll transport, the benchmarks and the fuzz targets share them.
//! Payloads stay raw JSON text (`RawValue`) end to end: the host never builds
//! a `serde_json::Value` tree for a message it only forwards.
//!
//! V2 also carries binary payloads in binary frames, as
//! `Phoenix.Socket.V2.JSONSerializer` lays them out: a kind byte (0 push,
//! 1 reply, 2 broadcast), one length byte per header field (each at most
//! 255 bytes), the fields, then the payload bytes unchanged.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Serializer version negotiated from the `vsn` connect parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vsn {
    /// `{"event","payload","ref","topic"}` objects (no `join_ref`, keys in the
    /// order Phoenix's Jason writes them); `vsn` absent or 1.x.
    V1,
    /// `[join_ref, ref, topic, event, payload]` arrays; `vsn` 2.x.
    V2,
}

impl Vsn {
    /// Phoenix's rule: 2.x is the array serializer, anything else (or nothing)
    /// the object one. Unknown major versions are refused.
    pub fn from_param(vsn: Option<&str>) -> Result<Vsn, String> {
        match vsn {
            None => Ok(Vsn::V1),
            Some(v) if v == "1" || v.starts_with("1.") => Ok(Vsn::V1),
            Some(v) if v == "2" || v.starts_with("2.") => Ok(Vsn::V2),
            Some(v) => Err(format!("unsupported serializer version {v:?}")),
        }
    }
}

/// A `ref` or `join_ref` as the client sent it: the raw JSON token (a string
/// or a number), echoed back byte for byte so any client's refs match.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ref(Box<str>);

impl Ref {
    fn from_raw(raw: &RawValue) -> Result<Option<Ref>, &'static str> {
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'n') => Ok(None),
            Some(b'"') | Some(b'-') | Some(b'0'..=b'9') => Ok(Some(Ref(text.into()))),
            _ => Err("ref must be a string, a number or null"),
        }
    }

    /// A ref from its JSON token as [`Ref::as_json`] gave it (cluster mode
    /// carries refs between nodes that way); `null` is no ref.
    pub fn from_json(text: &str) -> Result<Option<Ref>, &'static str> {
        let raw: Box<RawValue> =
            serde_json::from_str(text).map_err(|_| "ref must be a JSON token")?;
        Ref::from_raw(&raw)
    }

    /// A ref made from plain text (binary frames carry refs as bare strings).
    pub fn from_text(text: &str) -> Ref {
        Ref(json_string(text).into())
    }

    pub fn as_json(&self) -> &str {
        &self.0
    }
}

/// What a client frame carries: a JSON object (text frames) or bytes (a V2
/// binary push, `{:binary, data}` in Phoenix).
#[derive(Debug, Clone)]
pub enum Payload {
    /// Raw JSON text, always an object.
    Json(Box<RawValue>),
    Binary(Bytes),
}

impl Payload {
    /// The JSON object, or `Err` with a reason naming `what` for bytes.
    pub fn into_json(self, what: &str) -> Result<Box<RawValue>, String> {
        match self {
            Payload::Json(json) => Ok(json),
            Payload::Binary(_) => Err(format!("{what} needs a JSON object payload, not binary")),
        }
    }

    /// The JSON text, if the payload is JSON.
    pub fn as_json(&self) -> Option<&RawValue> {
        match self {
            Payload::Json(json) => Some(json),
            Payload::Binary(_) => None,
        }
    }

    /// Bytes of the payload as it came over the wire.
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(json) => json.get().len(),
            Payload::Binary(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One decoded client frame.
#[derive(Debug)]
pub struct Incoming {
    pub join_ref: Option<Ref>,
    pub msg_ref: Option<Ref>,
    pub topic: String,
    pub event: String,
    pub payload: Payload,
}

/// A frame that could not be used. When the frame told us where it came from
/// (`reply_to`), the client gets an error reply; otherwise the connection is
/// closed with `reason`, because nothing could be answered.
#[derive(Debug, PartialEq, Eq)]
pub struct BadFrame {
    pub reason: String,
    pub reply_to: Option<(Option<Ref>, Option<Ref>, String)>,
}

impl BadFrame {
    fn unanswerable(reason: impl Into<String>) -> BadFrame {
        BadFrame {
            reason: reason.into(),
            reply_to: None,
        }
    }
}

#[derive(Deserialize)]
struct V1Frame<'a> {
    #[serde(borrow)]
    topic: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, rename = "ref")]
    msg_ref: Option<&'a RawValue>,
    #[serde(borrow)]
    join_ref: Option<&'a RawValue>,
}

/// Decodes one text frame.
pub fn decode_text(vsn: Vsn, text: &str) -> Result<Incoming, BadFrame> {
    let (join_ref, msg_ref, topic, event, payload) = match vsn {
        Vsn::V2 => {
            let parts: Vec<&RawValue> = serde_json::from_str(text)
                .map_err(|e| BadFrame::unanswerable(format!("malformed frame: {e}")))?;
            // Phoenix matches `[join_ref, ref, topic, event, payload | _]`:
            // trailing elements are ignored, fewer than five refused.
            let [join_ref, msg_ref, topic, event, payload, ..] = parts[..] else {
                return Err(BadFrame::unanswerable(format!(
                    "malformed frame: expected [join_ref, ref, topic, event, payload], got {} elements",
                    parts.len()
                )));
            };
            (Some(join_ref), Some(msg_ref), topic, event, Some(payload))
        }
        Vsn::V1 => {
            let f: V1Frame = serde_json::from_str(text)
                .map_err(|e| BadFrame::unanswerable(format!("malformed frame: {e}")))?;
            let (Some(topic), Some(event)) = (f.topic, f.event) else {
                return Err(BadFrame::unanswerable(
                    "malformed frame: topic and event are required",
                ));
            };
            (f.join_ref, f.msg_ref, topic, event, f.payload)
        }
    };
    let optional_ref = |raw: Option<&RawValue>| match raw {
        None => Ok(None),
        Some(raw) => Ref::from_raw(raw)
            .map_err(|why| BadFrame::unanswerable(format!("malformed frame: {why}"))),
    };
    let join_ref = optional_ref(join_ref)?;
    let msg_ref = optional_ref(msg_ref)?;
    let topic: String = serde_json::from_str(topic.get())
        .map_err(|_| BadFrame::unanswerable("malformed frame: topic must be a string"))?;
    let bad = |reason: &str| BadFrame {
        reason: reason.to_string(),
        reply_to: Some((join_ref.clone(), msg_ref.clone(), topic.clone())),
    };
    let event: String =
        serde_json::from_str(event.get()).map_err(|_| bad("event must be a string"))?;
    if event.is_empty() {
        return Err(bad("event must not be empty"));
    }
    let payload = match payload {
        Some(p) if p.get().starts_with('{') => p.to_owned(),
        // V1 clients may omit the payload; Phoenix treats that as `{}`.
        None => empty_object(),
        Some(_) => return Err(bad("payload must be a JSON object")),
    };
    Ok(Incoming {
        join_ref,
        msg_ref,
        topic,
        event,
        payload: Payload::Json(payload),
    })
}

/// Whether no array or object in `text` is nested deeper than `limit`. A
/// byte scan that skips string contents: linear, no recursion, no
/// allocation, so it can run before anything parses the text recursively
/// (a room's `JSON.parse`, a `serde_json::Value`). Malformed JSON is not its
/// concern; unbalanced closers are simply ignored.
pub fn json_depth_within(text: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// [`decode_text`] for frames whose payload may be nested at most
/// `max_depth` deep (the payload object itself is depth 1; the frame's own
/// array or object adds one). A deeper frame is refused with an error reply
/// when its envelope tells whom to answer: serde_json reads the envelope's
/// raw values without recursing, so decoding it is safe at any depth.
pub fn decode_text_within(vsn: Vsn, text: &str, max_depth: usize) -> Result<Incoming, BadFrame> {
    if json_depth_within(text.as_bytes(), max_depth.saturating_add(1)) {
        return decode_text(vsn, text);
    }
    let reason = format!("payload nested too deeply (limit {max_depth})");
    let reply_to = match decode_text(vsn, text) {
        Ok(m) => Some((m.join_ref, m.msg_ref, m.topic)),
        Err(bad) => bad.reply_to,
    };
    Err(BadFrame { reason, reply_to })
}

/// Binary frame kinds of the V2 serializer (`@push`, `@reply`,
/// `@broadcast` in `Phoenix.Socket.V2.JSONSerializer`).
const KIND_PUSH: u8 = 0;
const KIND_REPLY: u8 = 1;
const KIND_BROADCAST: u8 = 2;

/// Decodes a V2 binary push (kind 0): `<<0, join_ref_size, ref_size,
/// topic_size, event_size, join_ref, ref, topic, event, data::binary>>`,
/// as `decode_binary/1` of Phoenix's V2 serializer matches it. The payload
/// is the rest of the frame, byte for byte (it may be empty). A frame whose
/// header does not parse is garbage (close); one whose header names a
/// topic but whose event is unusable gets an error reply.
pub fn decode_binary(frame: &Bytes) -> Result<Incoming, BadFrame> {
    let garbage = || BadFrame::unanswerable("binary frame is not a Phoenix push");
    let Some((&kind, rest)) = frame.split_first() else {
        return Err(garbage());
    };
    if kind != KIND_PUSH || rest.len() < 4 {
        return Err(garbage());
    }
    let lens = [rest[0], rest[1], rest[2], rest[3]].map(usize::from);
    let mut at = 5;
    let mut fields: Vec<&str> = Vec::with_capacity(4);
    for len in lens {
        let field = frame.get(at..at + len).ok_or_else(garbage)?;
        fields.push(std::str::from_utf8(field).map_err(|_| garbage())?);
        at += len;
    }
    let [join_ref, msg_ref, topic, event] = fields[..] else {
        return Err(garbage());
    };
    if topic.is_empty() {
        return Err(garbage());
    }
    // Binary pushes carry refs as bare strings; an empty one is taken as
    // no ref, as the server side writes `nil` (`to_string(nil)` is "").
    let as_ref = |s: &str| (!s.is_empty()).then(|| Ref::from_text(s));
    let (join_ref, msg_ref) = (as_ref(join_ref), as_ref(msg_ref));
    if event.is_empty() {
        return Err(BadFrame {
            reason: "event must not be empty".into(),
            reply_to: Some((join_ref, msg_ref, topic.to_string())),
        });
    }
    Ok(Incoming {
        join_ref,
        msg_ref,
        topic: topic.to_string(),
        event: event.to_string(),
        payload: Payload::Binary(frame.slice(at..)),
    })
}

/// A header field of a binary frame: Phoenix refuses (`byte_size!`) any
/// longer than 255 bytes.
fn binary_field(out: &mut Vec<u8>, at: usize, field: &str, what: &str) -> Result<(), String> {
    let len = u8::try_from(field.len()).map_err(|_| {
        format!(
            "unable to send a binary frame: {what} must be at most 255 bytes, but is {}",
            field.len()
        )
    })?;
    out[at] = len;
    out.extend_from_slice(field.as_bytes());
    Ok(())
}

/// A binary frame: `kind`, one length byte per field, the fields, `data`.
fn binary_frame(kind: u8, fields: &[(&str, &str)], data: &[u8]) -> Result<Vec<u8>, String> {
    let header = 1 + fields.len();
    let mut out =
        Vec::with_capacity(header + fields.iter().map(|f| f.0.len()).sum::<usize>() + data.len());
    out.push(kind);
    out.resize(header, 0);
    for (i, (field, what)) in fields.iter().enumerate() {
        binary_field(&mut out, 1 + i, field, what)?;
    }
    out.extend_from_slice(data);
    Ok(out)
}

/// A ref as a binary frame writes it: `to_string(ref)`, so `nil` is "" and a
/// string ref loses its quotes.
fn ref_text(r: Option<&Ref>) -> String {
    match r {
        None => String::new(),
        Some(r) => {
            serde_json::from_str::<String>(r.as_json()).unwrap_or_else(|_| r.as_json().to_string())
        }
    }
}

/// A V2 binary push (kind 0) to one channel: `<<0, join_ref_size,
/// topic_size, event_size, join_ref, topic, event, data>>` (no ref).
pub fn encode_binary_push(
    join_ref: Option<&Ref>,
    topic: &str,
    event: &str,
    data: &[u8],
) -> Result<Vec<u8>, String> {
    let join_ref = ref_text(join_ref);
    binary_frame(
        KIND_PUSH,
        &[(&join_ref, "join_ref"), (topic, "topic"), (event, "event")],
        data,
    )
}

/// A V2 binary reply (kind 1): `<<1, join_ref_size, ref_size, topic_size,
/// status_size, join_ref, ref, topic, status, data>>`.
pub fn encode_binary_reply(
    join_ref: Option<&Ref>,
    msg_ref: Option<&Ref>,
    topic: &str,
    status: Status,
    data: &[u8],
) -> Result<Vec<u8>, String> {
    let (join_ref, msg_ref) = (ref_text(join_ref), ref_text(msg_ref));
    binary_frame(
        KIND_REPLY,
        &[
            (&join_ref, "join_ref"),
            (&msg_ref, "ref"),
            (topic, "topic"),
            (status.as_str(), "status"),
        ],
        data,
    )
}

/// A V2 binary broadcast (kind 2): `<<2, topic_size, event_size, topic,
/// event, data>>`.
pub fn encode_binary_broadcast(topic: &str, event: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    binary_frame(KIND_BROADCAST, &[(topic, "topic"), (event, "event")], data)
}

/// `{}` as a raw value.
pub fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_string()).expect("{} is valid JSON")
}

/// A JSON string literal for `s`, escaped.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("serializing a str cannot fail")
}

fn write_ref(out: &mut String, r: Option<&Ref>) {
    out.push_str(r.map_or("null", Ref::as_json));
}

/// Whether a reply reports success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
        }
    }
}

/// `phx_reply` with `{response, status}`: Phoenix encodes the reply payload
/// as a map, which Jason writes with its keys sorted.
pub fn encode_reply(
    vsn: Vsn,
    join_ref: Option<&Ref>,
    msg_ref: Option<&Ref>,
    topic: &str,
    status: Status,
    response: &str,
) -> String {
    let status = status.as_str();
    let mut payload = String::with_capacity(response.len() + 32);
    payload.push_str(r#"{"response":"#);
    payload.push_str(response);
    payload.push_str(r#","status":""#);
    payload.push_str(status);
    payload.push_str(r#""}"#);
    encode(vsn, join_ref, msg_ref, topic, "phx_reply", &payload)
}

/// An error reply whose response is `{"reason": reason}`.
pub fn encode_error_reply(
    vsn: Vsn,
    join_ref: Option<&Ref>,
    msg_ref: Option<&Ref>,
    topic: &str,
    reason: &str,
) -> String {
    let response = format!(r#"{{"reason":{}}}"#, json_string(reason));
    encode_reply(vsn, join_ref, msg_ref, topic, Status::Error, &response)
}

/// Any server frame. `payload` must be valid JSON text.
///
/// V1 writes what `Phoenix.Socket.V1.JSONSerializer` writes: `Map.take([:topic,
/// :event, :payload, :ref])`, so no `join_ref` (V1 clients that get one may
/// refuse the frame), in Jason's sorted key order.
pub fn encode(
    vsn: Vsn,
    join_ref: Option<&Ref>,
    msg_ref: Option<&Ref>,
    topic: &str,
    event: &str,
    payload: &str,
) -> String {
    let mut out = String::with_capacity(payload.len() + topic.len() + event.len() + 48);
    match vsn {
        Vsn::V2 => {
            out.push('[');
            write_ref(&mut out, join_ref);
            out.push(',');
            write_ref(&mut out, msg_ref);
            out.push(',');
            push_json_string(&mut out, topic);
            out.push(',');
            push_json_string(&mut out, event);
            out.push(',');
            out.push_str(payload);
            out.push(']');
        }
        Vsn::V1 => {
            out.push_str(r#"{"event":"#);
            push_json_string(&mut out, event);
            out.push_str(r#","payload":"#);
            out.push_str(payload);
            out.push_str(r#","ref":"#);
            write_ref(&mut out, msg_ref);
            out.push_str(r#","topic":"#);
            push_json_string(&mut out, topic);
            out.push('}');
        }
    }
    out
}

/// Appends `s` as a JSON string literal. Topics and events are plain ASCII in
/// the common case, which skips serde's escaper.
fn push_json_string(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&json_string(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn v(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn decodes_v2_arrays() {
        let m = decode_text(Vsn::V2, r#"["1","2","chat:x","new_msg",{"text":"hi"}]"#).unwrap();
        assert_eq!(m.join_ref.unwrap().as_json(), r#""1""#);
        assert_eq!(m.msg_ref.unwrap().as_json(), r#""2""#);
        assert_eq!((m.topic.as_str(), m.event.as_str()), ("chat:x", "new_msg"));
        assert_eq!(m.payload.as_json().unwrap().get(), r#"{"text":"hi"}"#);
        let m = decode_text(Vsn::V2, r#"[null,7,"phoenix","heartbeat",{}]"#).unwrap();
        assert!(m.join_ref.is_none());
        assert_eq!(m.msg_ref.unwrap().as_json(), "7");
    }

    #[test]
    fn decodes_v1_objects() {
        let m = decode_text(
            Vsn::V1,
            r#"{"topic":"chat:x","event":"phx_join","payload":{},"ref":"1"}"#,
        )
        .unwrap();
        assert!(m.join_ref.is_none());
        assert_eq!(m.event, "phx_join");
        let m = decode_text(
            Vsn::V1,
            r#"{"topic":"phoenix","event":"heartbeat","ref":3}"#,
        )
        .unwrap();
        assert_eq!(m.payload.as_json().unwrap().get(), "{}");
    }

    #[test]
    fn refuses_malformed_frames() {
        for (vsn, text) in [
            (Vsn::V2, "not json"),
            (Vsn::V2, "[1,2,3]"),
            (Vsn::V2, r#"{"topic":"t"}"#),
            (Vsn::V2, r#"[{},"2","t","e",{}]"#),
            (Vsn::V2, r#"["1","2",5,"e",{}]"#),
            (Vsn::V1, r#"["1","2","t","e",{}]"#),
            (Vsn::V1, r#"{"event":"e"}"#),
        ] {
            let err = decode_text(vsn, text).unwrap_err();
            assert!(err.reply_to.is_none(), "{text}: {err:?}");
            assert!(!err.reason.is_empty());
        }
        // Known origin: answered with an error reply.
        for text in [
            r#"["1","2","chat:x","new_msg",[1]]"#,
            r#"["1","2","chat:x","new_msg","str"]"#,
            r#"["1","2","chat:x",5,{}]"#,
            r#"["1","2","chat:x","",{}]"#,
        ] {
            let err = decode_text(Vsn::V2, text).unwrap_err();
            let (_, r, topic) = err.reply_to.expect("answerable");
            assert_eq!((r.unwrap().as_json(), topic.as_str()), (r#""2""#, "chat:x"));
        }
    }

    /// Binary frames as Phoenix lays them out (phoenixframework/phoenix at
    /// 167c469: `decode_binary/1` and `encode!/1` in
    /// `lib/phoenix/socket/serializers/v2_json_serializer.ex`, and
    /// `binaryEncode` in `assets/js/phoenix/serializer.js`).
    #[test]
    fn binary_pushes_decode_as_phoenix_encodes_them() {
        // binaryEncode({join_ref: "1", ref: "2", topic: "chat:x", event:
        // "msg", payload}): <<0, 1, 1, 6, 3, "1", "2", "chat:x", "msg", data>>.
        let mut push = vec![0u8, 1, 1, 6, 3];
        push.extend_from_slice(b"12chat:xmsg\x00\x01\xff");
        let m = decode_binary(&Bytes::from(push)).unwrap();
        assert_eq!(m.join_ref.unwrap().as_json(), r#""1""#);
        assert_eq!(m.msg_ref.unwrap().as_json(), r#""2""#);
        assert_eq!((m.topic.as_str(), m.event.as_str()), ("chat:x", "msg"));
        let Payload::Binary(data) = m.payload else {
            panic!("bytes expected")
        };
        assert_eq!(
            &data[..],
            b"\x00\x01\xff",
            "the payload is the rest, unchanged"
        );
        // An empty ref field is no ref (what the server's `to_string(nil)`
        // writes), and an empty payload is a payload.
        let m = decode_binary(&Bytes::from_static(b"\x00\x00\x01\x01\x01\x37te")).unwrap();
        assert!(m.join_ref.is_none());
        assert_eq!(m.msg_ref.unwrap().as_json(), r#""7""#);
        assert!(m.payload.is_empty());
        // An empty event is answered; garbage closes.
        let bad = decode_binary(&Bytes::from_static(b"\x00\x00\x01\x01\x00\x37t")).unwrap_err();
        assert_eq!(bad.reply_to.unwrap().2, "t");
        for garbage in [
            &b""[..],
            b"\x00",
            b"\x07abc",
            b"\x00\x09\x09\x09\x09ab",
            b"\x01\x00\x00\x01\x01te",
            b"\x00\x00\x00\x00\x01e",
            b"\x00\x00\x00\x01\x01\xffe",
        ] {
            let bad = decode_binary(&Bytes::copy_from_slice(garbage)).unwrap_err();
            assert!(bad.reply_to.is_none(), "{garbage:?}");
        }
    }

    #[test]
    fn binary_server_frames_match_phoenix_layouts() {
        let jr = Ref::from_text("1");
        let r = Ref::from_text("12");
        // encode!(%Reply{payload: {:binary, data}}), as phoenix.js's
        // decodeReply reads it back: status sits where an event would.
        assert_eq!(
            encode_binary_reply(Some(&jr), Some(&r), "t", Status::Ok, b"\x01\x02").unwrap(),
            b"\x01\x01\x02\x01\x02112tok\x01\x02"
        );
        // A numeric ref is `to_string`ed too; nil is "".
        let n = Ref::from_raw(&RawValue::from_string("5".into()).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            encode_binary_reply(None, Some(&n), "t", Status::Error, b"").unwrap(),
            b"\x01\x00\x01\x01\x055terror"
        );
        // encode!(%Message{payload: {:binary, data}}): no ref field.
        assert_eq!(
            encode_binary_push(Some(&jr), "t", "ev", b"xyz").unwrap(),
            b"\x00\x01\x01\x021tevxyz"
        );
        assert_eq!(
            encode_binary_push(None, "t", "ev", b"").unwrap(),
            b"\x00\x00\x01\x02tev"
        );
        // fastlane!(%Broadcast{payload: {:binary, data}}).
        assert_eq!(
            encode_binary_broadcast("t", "ev", b"\x00").unwrap(),
            b"\x02\x01\x02tev\x00"
        );
        // byte_size!/3: a field over 255 bytes is refused, never truncated.
        let long = "e".repeat(256);
        let err = encode_binary_broadcast("t", &long, b"").unwrap_err();
        assert!(err.contains("event must be at most 255 bytes"), "{err}");
        assert!(encode_binary_broadcast("t", &long[..255], b"").is_ok());
    }

    #[test]
    fn encodes_both_versions() {
        let jr = Ref::from_text("1");
        let r = Ref::from_text("2");
        let f = encode_reply(
            Vsn::V2,
            Some(&jr),
            Some(&r),
            "chat:x",
            Status::Ok,
            r#"{"id":1}"#,
        );
        assert_eq!(
            v(&f),
            json!(["1", "2", "chat:x", "phx_reply", {"status":"ok","response":{"id":1}}])
        );
        let f = encode(Vsn::V1, None, None, "chat:\"x", "new_msg", r#"{"a":1}"#);
        assert_eq!(
            v(&f),
            json!({"topic":"chat:\"x","event":"new_msg","payload":{"a":1},"ref":null})
        );
        let f = encode_error_reply(Vsn::V2, None, Some(&r), "t", "bad \"thing\"\n");
        assert_eq!(v(&f)[4]["response"]["reason"], "bad \"thing\"\n");
    }

    /// Frames from Phoenix's own serializer tests and source
    /// (phoenixframework/phoenix at 167c469, `test/phoenix/socket/
    /// v1_json_serializer_test.exs`, `v2_json_serializer_test.exs`,
    /// `lib/phoenix/socket/serializers/*.ex`), compared byte for byte.
    #[test]
    fn frames_match_phoenix_serializers() {
        // v1_json_serializer_test.exs: `@v1_msg_json`, "v1 responses must
        // not contain join_ref"; a broadcast (`fastlane!`) is the same frame.
        let v1_msg_json = "{\"event\":\"e\",\"payload\":\"m\",\"ref\":null,\"topic\":\"t\"}";
        assert_eq!(encode(Vsn::V1, None, None, "t", "e", "\"m\""), v1_msg_json);
        // A V1 channel's own frames drop the join_ref too.
        let jr = Ref::from_text("1");
        assert_eq!(
            encode(Vsn::V1, Some(&jr), None, "t", "e", "\"m\""),
            v1_msg_json
        );
        // v2_json_serializer_test.exs: `@v2_msg_json` / `@v2_fastlane_json`.
        let v2_msg_json = "[null,null,\"t\",\"e\",{\"m\":1}]";
        assert_eq!(
            encode(Vsn::V2, None, None, "t", "e", r#"{"m":1}"#),
            v2_msg_json
        );
        // encode!(%Reply{}) builds `%{status: _, response: _}`; Jason writes
        // a map's keys sorted, so `response` comes first. V1 keeps the ref
        // and drops the join_ref; V2 carries both.
        let r = Ref::from_text("null");
        assert_eq!(
            encode_reply(Vsn::V1, Some(&jr), Some(&r), "t", Status::Ok, "{}"),
            r#"{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"null","topic":"t"}"#
        );
        let r = Ref::from_text("123");
        assert_eq!(
            encode_reply(
                Vsn::V2,
                Some(&jr),
                Some(&r),
                "t",
                Status::Error,
                r#"{"reason":"x"}"#
            ),
            r#"["1","123","t","phx_reply",{"response":{"reason":"x"},"status":"error"}]"#
        );
        // Channel.Server's phx_error / phx_close and the heartbeat reply.
        assert_eq!(
            encode(Vsn::V2, Some(&jr), Some(&jr), "t", "phx_close", "{}"),
            r#"["1","1","t","phx_close",{}]"#
        );
        assert_eq!(
            encode(Vsn::V1, Some(&jr), Some(&jr), "t", "phx_error", "{}"),
            r#"{"event":"phx_error","payload":{},"ref":"1","topic":"t"}"#
        );
        let hb = Ref::from_text("7");
        assert_eq!(
            encode_reply(Vsn::V2, None, Some(&hb), "phoenix", Status::Ok, "{}"),
            r#"[null,"7","phoenix","phx_reply",{"response":{},"status":"ok"}]"#
        );
        // presence_state / presence_diff are plain pushes and broadcasts.
        assert_eq!(
            encode(
                Vsn::V1,
                None,
                None,
                "t",
                "presence_diff",
                r#"{"joins":{},"leaves":{}}"#
            ),
            r#"{"event":"presence_diff","payload":{"joins":{},"leaves":{}},"ref":null,"topic":"t"}"#
        );
    }

    #[test]
    fn decoders_accept_what_phoenix_accepts() {
        // decode!(@v2_msg_json, opcode: :text)
        let m = decode_text(Vsn::V2, "[null,null,\"t\",\"e\",{\"m\":1}]").unwrap();
        assert!(m.join_ref.is_none() && m.msg_ref.is_none());
        assert_eq!(
            (
                m.topic.as_str(),
                m.event.as_str(),
                m.payload.as_json().unwrap().get()
            ),
            ("t", "e", r#"{"m":1}"#)
        );
        // V2 decode_text matches `[join_ref, ref, topic, event, payload | _]`.
        let m = decode_text(Vsn::V2, r#"["1","2","t","e",{},6]"#).unwrap();
        assert_eq!(m.msg_ref.unwrap().as_json(), r#""2""#);
        // V1: `Message.from_map!` takes an optional join_ref.
        let m = decode_text(
            Vsn::V1,
            r#"{"event":"phx_join","payload":{},"ref":"1","topic":"t","join_ref":"1"}"#,
        )
        .unwrap();
        assert_eq!(m.join_ref.unwrap().as_json(), r#""1""#);
        // `@v1_bad_json`: "V1 JSON Serializer expected a map".
        assert!(decode_text(Vsn::V1, "[null,null,\"t\",\"e\",{\"m\":1}]").is_err());
        // `@v1_msg_json` carries a string payload: Phoenix decodes it, a
        // room cannot use it, so it is answered with an error reply.
        let bad = decode_text(
            Vsn::V1,
            "{\"event\":\"e\",\"payload\":\"m\",\"ref\":null,\"topic\":\"t\"}",
        )
        .unwrap_err();
        assert_eq!(bad.reason, "payload must be a JSON object");
        assert_eq!(bad.reply_to.unwrap().2, "t");
    }

    #[test]
    fn numeric_refs_echo_unchanged() {
        let m = decode_text(Vsn::V2, r#"[null,42,"phoenix","heartbeat",{}]"#).unwrap();
        let f = encode_reply(
            Vsn::V2,
            None,
            m.msg_ref.as_ref(),
            "phoenix",
            Status::Ok,
            "{}",
        );
        assert!(f.starts_with("[null,42,"));
    }

    #[test]
    fn vsn_param() {
        assert_eq!(Vsn::from_param(None), Ok(Vsn::V1));
        assert_eq!(Vsn::from_param(Some("1.0.0")), Ok(Vsn::V1));
        assert_eq!(Vsn::from_param(Some("2.0.0")), Ok(Vsn::V2));
        assert!(Vsn::from_param(Some("3.0.0")).is_err());
    }

    #[test]
    fn depth_scan_counts_brackets_outside_strings() {
        assert!(json_depth_within(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(!json_depth_within(br#"{"a":[1,{"b":2}]}"#, 2));
        assert!(json_depth_within(br#"{"a":"[[[[{{{{"}"#, 1));
        assert!(json_depth_within(br#"{"a":"\"[[["}"#, 1));
        assert!(!json_depth_within(br#"{"a":"\\",[[1]]}"#, 2));
        assert!(
            json_depth_within(b"]]]]{}", 1),
            "stray closers never go negative"
        );
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(!json_depth_within(deep.as_bytes(), 32));
    }

    #[test]
    fn deep_payloads_are_refused_with_a_reply() {
        let nested = |n: usize| {
            format!(
                "{}{}",
                "{\"a\":".repeat(n),
                "1".to_string() + &"}".repeat(n)
            )
        };
        let ok = format!(r#"["1","2","chat:x","e",{}]"#, nested(4));
        assert!(decode_text_within(Vsn::V2, &ok, 4).is_ok());
        let deep = format!(r#"["1","2","chat:x","e",{}]"#, nested(5));
        let bad = decode_text_within(Vsn::V2, &deep, 4).unwrap_err();
        assert_eq!(bad.reason, "payload nested too deeply (limit 4)");
        let (_, msg_ref, topic) = bad.reply_to.unwrap();
        assert_eq!(
            (msg_ref.unwrap().as_json(), topic.as_str()),
            (r#""2""#, "chat:x")
        );
        let v1 = format!(
            r#"{{"topic":"chat:x","event":"e","ref":"3","payload":{}}}"#,
            nested(5)
        );
        assert!(
            decode_text_within(Vsn::V1, &v1, 4)
                .unwrap_err()
                .reply_to
                .is_some()
        );
        // Far deeper than serde_json's own recursion limit: still no crash.
        let abyss = format!(r#"["1","2","chat:x","e",{}]"#, nested(100_000));
        let bad = decode_text_within(Vsn::V2, &abyss, 32).unwrap_err();
        assert!(bad.reason.contains("nested too deeply"), "{bad:?}");
    }
}
