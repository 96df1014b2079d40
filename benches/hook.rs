//! One `onMessage` call through QuickJS with a chat payload: rooms-js/chat.js
//! loaded from bytecode, as the server runs it.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use roomhost::engine::{Blank, Hook, Identity, ModuleSource, RoomJs};
use roomhost::scripts::compile_file;
use roomhost::{Conn, ScriptLimits};
use serde_json::value::RawValue;

fn hook(c: &mut Criterion) {
    // A generous CPU budget, so the bench also runs under valgrind (the
    // budget is still armed and checked on every call).
    let limits = ScriptLimits {
        cpu_per_call: Duration::from_secs(60),
        ..ScriptLimits::default()
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("rooms-js");
    let kind = Arc::new(compile_file(&root, "chat.js", "chat", &limits).expect("chat.js compiles"));
    let js = RoomJs::load(
        &Identity::new("chat", "bench"),
        ModuleSource::Compiled(kind.modules.clone()),
        &kind.entry,
        &limits,
        None,
    )
    .expect("chat.js loads");
    footprint(&kind, &limits, js.memory_used());
    let meta = RawValue::from_string(r#"{"transport":"websocket"}"#.into()).expect("JSON");
    let conn = Conn::new("alice", meta);
    let payload = r#"{"text":"hello there, how is everyone doing today?"}"#;
    let mut at = 1_764_300_000_000i64;
    c.bench_function("chat onMessage", |b| {
        b.iter(|| {
            at += 1;
            let called = js
                .call(
                    &conn,
                    Hook::Message {
                        event: "new_msg",
                        payload: black_box(payload),
                    },
                    at,
                    at as u64,
                )
                .expect("the hook returns");
            black_box(called)
        })
    });
    c.bench_function("chat room load (bytecode)", |b| {
        b.iter(|| {
            RoomJs::load(
                &Identity::new("chat", "bench2"),
                ModuleSource::Compiled(kind.modules.clone()),
                &kind.entry,
                &limits,
                None,
            )
            .expect("chat.js loads")
        })
    });
    // What a warm context saves a cold start: the runtime, its context and
    // the prelude, built ahead by the warm pool...
    c.bench_function("warm context build (runtime, context, prelude)", |b| {
        b.iter(|| black_box(Blank::new().expect("a blank context")))
    });
    // The same on fresh memory, as in a server whose rooms stay: each
    // context is kept until the sample ends, so the heap grows into pages
    // never touched before (returned to the system after each sample).
    c.bench_function("warm context build, kept (fresh heap pages)", |b| {
        b.iter_custom(|iters| {
            let mut kept = Vec::with_capacity(iters as usize);
            let started = Instant::now();
            for _ in 0..iters {
                kept.push(Blank::new().expect("a blank context"));
            }
            let took = started.elapsed();
            drop(kept);
            // Give the pages back, so the next sample touches fresh ones.
            // SAFETY: only asks the allocator to release free memory.
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            unsafe {
                libc::malloc_trim(0);
            }
            took
        })
    });
    // ...and what is left: the kind's bytecode into a ready context.
    c.bench_function("chat room load into a warm context", |b| {
        b.iter_batched(
            || Blank::new().expect("a blank context"),
            |blank| {
                RoomJs::load_into(
                    blank,
                    &Identity::new("chat", "bench3"),
                    ModuleSource::Compiled(kind.modules.clone()),
                    &kind.entry,
                    &limits,
                    None,
                )
                .expect("chat.js loads")
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

/// Prints what one more loaded chat room costs in process RSS, next to the
/// QuickJS heap it reports (the idle scenario of `roomhost bench` measures
/// the whole server). The gap is QuickJS's allocator: it carves small
/// objects out of 4 KiB arenas per size class, and a fresh runtime leaves
/// most of its arenas partly empty.
fn footprint(kind: &Arc<roomhost::scripts::CompiledKind>, limits: &ScriptLimits, heap: u64) {
    const ROOMS: usize = 200;
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let before = rss();
    let rooms: Vec<RoomJs> = (0..ROOMS)
        .map(|i| {
            RoomJs::load(
                &Identity::new("chat", &format!("f{i}")),
                ModuleSource::Compiled(kind.modules.clone()),
                &kind.entry,
                limits,
                None,
            )
            .expect("chat.js loads")
        })
        .collect();
    let after = rss();
    eprintln!(
        "a loaded chat room: QuickJS heap {:.1} KiB, process RSS {:.1} KiB per room",
        heap as f64 / 1024.0,
        after.saturating_sub(before) as f64 / ROOMS as f64
    );
    drop(rooms);
}

criterion_group!(benches, hook);
criterion_main!(benches);
