//! A fast, property-based pass over the parsers of untrusted input (the
//! same properties the `cargo fuzz` targets in `fuzz/` check, from
//! `roomhost::fuzzing`): arbitrary bytes, JSON-shaped noise and mutated
//! valid frames. `.ci/run` adds a long coverage-guided pass.

use proptest::prelude::*;
use roomhost::fuzzing;

/// Valid frames of both serializers, plus binary pushes: the seeds that
/// mutations start from.
fn valid_frame() -> impl Strategy<Value = Vec<u8>> {
    let r = prop_oneof![Just("null".to_string()), "[0-9]{1,4}", "\"[a-z0-9]{0,4}\"",];
    let topic = "(phoenix|chat:[a-z.~_-]{1,8}|[a-z:./\\\\]{0,12})";
    let event = "(heartbeat|phx_join|phx_leave|new_msg|[a-z_]{0,6})";
    let payload = "\\{(\"[a-z]{1,3}\":(1|\"x\"|null|\\[\\]|\\{\\}|\\[\\{\\}\\]),?){0,3}\\}";
    (r.clone(), r, topic, event, payload, any::<bool>()).prop_map(
        |(join_ref, msg_ref, topic, event, payload, v2)| {
            if v2 {
                format!(r#"[{join_ref},{msg_ref},"{topic}","{event}",{payload}]"#).into_bytes()
            } else {
                format!(
                    r#"{{"topic":"{topic}","event":"{event}","payload":{payload},"ref":{msg_ref},"join_ref":{join_ref}}}"#
                )
                .into_bytes()
            }
        },
    )
}

/// A valid frame with a few bytes flipped, inserted or removed.
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        valid_frame(),
        prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
    )
        .prop_map(|(mut frame, edits)| {
            for (at, byte, op) in edits {
                let at = at % (frame.len() + 1);
                match op {
                    0 if at < frame.len() => frame[at] = byte,
                    1 => frame.insert(at, byte),
                    _ if at < frame.len() => {
                        frame.remove(at);
                    }
                    _ => frame.push(byte),
                }
            }
            frame
        })
}

/// Bytes drawn from JSON's punctuation, so nesting and strings are common.
fn json_noise() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(b"[]{}\",:\\ 0123456789abnul.-e\x00\xff".to_vec()),
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn frames_from_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..400)) {
        fuzzing::frame(&data);
    }

    #[test]
    fn frames_from_json_noise(data in json_noise()) {
        fuzzing::frame(&data);
    }

    #[test]
    fn valid_and_mutated_frames(valid in valid_frame(), mutated in mutated_frame()) {
        fuzzing::frame(&valid);
        fuzzing::frame(&mutated);
    }

    #[test]
    fn binary_pushes(kind in 0u8..3, lens in prop::array::uniform4(0u8..12), body in prop::collection::vec(any::<u8>(), 0..60)) {
        let mut frame = vec![kind];
        frame.extend_from_slice(&lens);
        frame.extend_from_slice(&body);
        fuzzing::frame(&frame);
    }

    #[test]
    fn topics_and_params(
        text in "[a-z0-9:._~/\\\\%=&;,-]{0,80}",
        bytes in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        fuzzing::topic_and_params(text.as_bytes());
        fuzzing::topic_and_params(&bytes);
    }
}
