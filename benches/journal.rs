//! Journal append with group commit: one write of a batch of framed events,
//! then one fdatasync for the whole batch (what a room task does per batch
//! with durability `strict`), against one fdatasync per event.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use roomhost::store::{ConnRecord, DiskJournal, Event, EventKind};
use serde_json::value::RawValue;

fn batch(first_seq: u64, events: usize) -> Vec<u8> {
    let meta = RawValue::from_string(r#"{"transport":"websocket"}"#.into()).expect("JSON");
    let data =
        RawValue::from_string(r#"{"text":"hello there, how is everyone doing today?"}"#.into())
            .expect("JSON");
    let mut out = Vec::new();
    for i in 0..events as u64 {
        Event {
            seq: first_seq + i,
            kind: EventKind::Message,
            at: 1_764_300_000_000 + i as i64,
            seed: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            conn: ConnRecord {
                id: "5f0c2a9e1b7d3c44".into(),
                user: "alice".into(),
                meta: &meta,
            },
            event: Some("new_msg".into()),
            data: &data,
            origin: None,
        }
        .encode_into(&mut out);
    }
    out
}

fn journal(c: &mut Criterion) {
    c.bench_function("encode 1 event", |b| b.iter(|| batch(black_box(1), 1)));

    let mut group = c.benchmark_group("append + fdatasync");
    group.sample_size(20);
    for events in [1usize, 32] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut journal = DiskJournal::new(dir.path().join("room"));
        let framed = batch(1, events);
        let mut seq = 1;
        group.bench_with_input(
            BenchmarkId::new("events per commit", events),
            &framed,
            |b, framed| {
                b.iter(|| {
                    journal.append(framed, seq).expect("append");
                    seq += events as u64;
                    if let Some(sync) = journal.sync_job() {
                        sync().expect("fdatasync");
                    }
                })
            },
        );
    }
    group.finish();

    let dir = tempfile::tempdir().expect("temp dir");
    let mut journal = DiskJournal::new(dir.path().join("room"));
    let framed = batch(1, 32);
    let mut seq = 1;
    c.bench_function("append 32 events, no sync", |b| {
        b.iter(|| {
            journal.append(&framed, seq).expect("append");
            seq += 32;
        })
    });
}

criterion_group!(benches, journal);
criterion_main!(benches);
