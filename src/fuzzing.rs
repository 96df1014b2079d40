//! Properties of the parsers that read untrusted bytes, checked on arbitrary
//! input: the frame decoders (V1, V2, binary), the JSON depth scan, topic
//! names and connect/CLI parameters. Each function panics when a property
//! fails. The `cargo fuzz` targets (`fuzz/`) and the proptest suite
//! (`tests/fuzz.rs`) both drive these, so the two never check different
//! things. Not part of the supported API.

use crate::protocol::{self, Vsn};
use crate::topic::Topic;

/// The frame decoders: never panic, and whatever they accept re-encodes to
/// a frame that decodes to the same thing (less the join_ref in V1).
pub fn frame(data: &[u8]) {
    match protocol::decode_binary(&bytes::Bytes::copy_from_slice(data)) {
        Ok(m) => {
            assert!(!m.topic.is_empty() && !m.event.is_empty());
            let protocol::Payload::Binary(payload) = &m.payload else {
                panic!("a binary push carries bytes");
            };
            assert!(data.ends_with(payload), "the payload is the frame's tail");
        }
        Err(bad) => {
            if let Some((_, _, topic)) = &bad.reply_to {
                assert!(!topic.is_empty(), "a binary reply goes to a topic");
            }
        }
    }
    for limit in [0, 1, 2, 8, 32] {
        if protocol::json_depth_within(data, limit) {
            assert!(
                protocol::json_depth_within(data, limit + 1),
                "depth is monotonic"
            );
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for vsn in [Vsn::V1, Vsn::V2] {
        let decoded = protocol::decode_text(vsn, text);
        let within = protocol::decode_text_within(vsn, text, 32);
        if protocol::json_depth_within(data, 33) {
            assert_eq!(
                decoded.is_ok(),
                within.is_ok(),
                "the depth limit only refuses deep frames"
            );
        } else {
            assert!(within.is_err(), "a too-deep frame is refused");
        }
        let Ok(m) = decoded else {
            continue;
        };
        assert!(!m.event.is_empty());
        let payload = m.payload.as_json().expect("text frames carry JSON").get();
        assert!(payload.starts_with('{'), "payloads are objects");
        let again = protocol::encode(
            vsn,
            m.join_ref.as_ref(),
            m.msg_ref.as_ref(),
            &m.topic,
            &m.event,
            payload,
        );
        let back = protocol::decode_text(vsn, &again)
            .unwrap_or_else(|bad| panic!("re-encoded frame refused: {bad:?}: {again}"));
        assert_eq!(
            (
                &back.join_ref,
                &back.msg_ref,
                &back.topic,
                &back.event,
                back.payload.as_json().map(|p| p.get())
            ),
            (
                // V1 frames carry no join_ref (Phoenix's V1 serializer).
                &m.join_ref.filter(|_| vsn == Vsn::V2),
                &m.msg_ref,
                &m.topic,
                &m.event,
                Some(payload)
            ),
        );
    }
}

/// Topic names and parameters: never panic; an accepted topic is well
/// formed and can never name a path outside its room directory.
pub fn topic_and_params(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(topic) = Topic::parse(&text) {
        assert_eq!(topic.as_str(), &*text);
        assert_eq!(format!("{}:{}", topic.kind(), topic.name()), &*text);
        let name = topic.name();
        assert!((1..=crate::topic::MAX_NAME_LEN).contains(&name.len()));
        assert!(!name.contains("..") && !name.contains('/') && !name.contains('\\'));
        assert!(!text.contains('\0'));
        let dir = crate::store::paths::room_dir(std::path::Path::new("/data"), topic.kind(), name);
        assert_eq!(
            dir.parent().and_then(|p| p.parent()),
            Some(std::path::Path::new("/data/rooms"))
        );
        assert_eq!(
            crate::store::paths::unescape(&crate::store::paths::escape(name)).as_deref(),
            Some(name)
        );
    }
    let _ = Vsn::from_param(Some(&text));
    if let Ok(params) = serde_urlencoded::from_str::<Vec<(String, String)>>(&text) {
        for (key, value) in &params {
            match key.as_str() {
                "vsn" => {
                    let _ = Vsn::from_param(Some(value));
                }
                "topic" => {
                    let _ = Topic::parse(value);
                }
                _ => {}
            }
        }
    }
    let _ = crate::config::parse_bytes(&text);
    let _ = crate::config::parse_duration(&text);
    if let Ok(kinds) = crate::config::parse_kind_limits(&text, &crate::ScriptLimits::default()) {
        for limits in kinds.values() {
            assert!(limits.check().is_ok(), "accepted limits are valid");
        }
    }
}
