//! Phoenix frame decode and encode: the per-message work of every connection.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use roomhost::protocol::{self, Ref, Status, Vsn};

const PUSH: &str =
    r#"["3","17","chat:lobby","new_msg",{"text":"hello there, how is everyone doing today?"}]"#;
const BROADCAST: &str = r#"{"id":1234,"user":"alice","text":"hello there, how is everyone doing today?","at":1764300000000}"#;

fn frames(c: &mut Criterion) {
    c.bench_function("decode V2 push", |b| {
        b.iter(|| protocol::decode_text(Vsn::V2, black_box(PUSH)))
    });
    c.bench_function("encode V2 broadcast", |b| {
        b.iter(|| {
            protocol::encode(
                Vsn::V2,
                None,
                None,
                black_box("chat:lobby"),
                "new_msg",
                black_box(BROADCAST),
            )
        })
    });
    let join_ref = Ref::from_text("3");
    let msg_ref = Ref::from_text("17");
    c.bench_function("encode V2 reply", |b| {
        b.iter(|| {
            protocol::encode_reply(
                Vsn::V2,
                Some(&join_ref),
                Some(&msg_ref),
                black_box("chat:lobby"),
                Status::Ok,
                black_box(r#"{"id":1234}"#),
            )
        })
    });
}

criterion_group!(benches, frames);
criterion_main!(benches);
