//! Fan-out of one broadcast to 1,000 channels: encode once, queue the shared
//! frame on every channel's connection.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use roomhost::Conn;
use roomhost::hub::{Body, Broadcast, Channel, Hub, Outbound, Peer};
use roomhost::protocol::{Ref, Vsn};
use roomhost::topic::Topic;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

const CHANNELS: usize = 1000;
/// Broadcasts queued before the receivers are drained (outside the timing).
const QUEUE: usize = 512;

fn fanout(c: &mut Criterion) {
    let topic = Topic::parse("chat:lobby").expect("valid topic");
    let hub = Hub::new(topic.clone());
    let mut receivers: Vec<mpsc::Receiver<Outbound>> = Vec::with_capacity(CHANNELS);
    for id in 0..CHANNELS {
        let (peer, rx) = Peer::new(QUEUE + 1);
        let meta = RawValue::from_string("{}".into()).expect("JSON");
        hub.subscribe(Arc::new(Channel {
            id: id as u64,
            topic: topic.clone(),
            conn: Conn::new(format!("user{id}"), meta),
            join_ref: Some(Ref::from_text("1")),
            vsn: Vsn::V2,
            binary: true,
            peer,
        }));
        receivers.push(rx);
    }
    let payload = Body::from(
        r#"{"id":1234,"user":"alice","text":"hello there, how is everyone doing today?","at":1764300000000}"#,
    );
    c.bench_function("broadcast to 1000 channels", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            let mut queued = 0;
            for _ in 0..iters {
                let started = Instant::now();
                let broadcast = Broadcast::new("chat:lobby", "new_msg", black_box(&payload));
                let delivered = hub.publish(&broadcast, None);
                took += started.elapsed();
                assert_eq!(delivered, CHANNELS, "a channel was kicked");
                queued += 1;
                if queued == QUEUE {
                    for rx in &mut receivers {
                        while rx.try_recv().is_ok() {}
                    }
                    queued = 0;
                }
            }
            for rx in &mut receivers {
                while rx.try_recv().is_ok() {}
            }
            took
        })
    });
}

criterion_group!(benches, fanout);
criterion_main!(benches);
