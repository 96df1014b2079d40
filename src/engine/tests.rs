//! Unit tests of the engine: hooks, limits, determinism, the sandbox.

use super::budget::{REREAD, read_thread_cpu, thread_cpu_nanos};
use super::*;
use crate::hub::Audience;
use crate::protocol::empty_object;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

fn load(src: &str) -> Result<RoomJs, ScriptError> {
    load_with(src, ScriptLimits::default())
}

fn load_with(src: &str, limits: ScriptLimits) -> Result<RoomJs, ScriptError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.js"), src).unwrap();
    let root = dir.path().canonicalize().unwrap();
    let source = ModuleSource::Disk {
        root,
        compiled: Arc::new(Mutex::new(BTreeMap::new())),
    };
    RoomJs::load(&Identity::new("t", "x"), source, "t.js", &limits, None)
}

#[test]
fn a_warm_context_built_on_another_thread_keeps_every_limit() {
    let blank = std::thread::spawn(|| Blank::new().unwrap()).join().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.js"),
        r#"const keep = [];
        const loadedAt = Date.now();
        export function onMessage(c, e, p) {
          if (p.spin) { while (true) {} }
          if (p.alloc) { for (;;) keep.push(new Array(100000).fill(1)); }
          if (p.recurse) { const f = (k) => f(k + 1) + 1; return f(0); }
          return { topic: room.topic, kind: room.kind, name: room.name, loadedAt };
        }"#,
    )
    .unwrap();
    let source = ModuleSource::Disk {
        root: dir.path().canonicalize().unwrap(),
        compiled: Arc::new(Mutex::new(BTreeMap::new())),
    };
    let limits = ScriptLimits {
        memory: 8 << 20,
        cpu_per_call: Duration::from_millis(20),
        ..ScriptLimits::default()
    };
    std::thread::sleep(Duration::from_millis(20));
    let before = now_ms();
    let js = RoomJs::load_into(
        blank,
        &Identity::new("t", "x"),
        source,
        "t.js",
        &limits,
        None,
    )
    .unwrap();
    // The identity is the room's, not the blank's (built before any
    // room), and the module's top level ran at load time.
    let response: serde_json::Value =
        serde_json::from_str(message(&js, "{}").unwrap().response.as_json().unwrap()).unwrap();
    assert_eq!(response["topic"], "t:x");
    assert_eq!(
        (&response["kind"], &response["name"]),
        (&"t".into(), &"x".into())
    );
    let loaded_at = response["loadedAt"].as_i64().unwrap();
    assert!(
        loaded_at >= before,
        "top level saw {loaded_at}, load began {before}"
    );
    let err = message(&js, r#"{"recurse":1}"#).unwrap_err();
    assert!(
        matches!(err, CallError::Script { .. }),
        "stack limit: {err:?}"
    );
    let err = message(&js, r#"{"spin":1}"#).unwrap_err();
    assert!(matches!(err, CallError::Fatal(Fatal::CpuBudget)), "{err:?}");
    let err = message(&js, r#"{"alloc":1}"#).unwrap_err();
    assert!(
        matches!(err, CallError::Fatal(Fatal::OutOfMemory)),
        "{err:?}"
    );
}

fn conn() -> Conn {
    Conn::new("alice", empty_object())
}

fn message(js: &RoomJs, payload: &str) -> Result<Called, CallError> {
    js.call(
        &conn(),
        Hook::Message {
            event: "e",
            payload,
        },
        1_000,
        7,
    )
}

#[test]
fn hooks_run_and_effects_are_collected() {
    let js = load(
        r#"let n = 0;
        export function onMessage(conn, event, payload) {
          n += payload.by;
          room.broadcast("count", {n, user: conn.user}, {except: conn.id});
          return {n, topic: room.topic};
        }"#,
    )
    .unwrap();
    let called = message(&js, r#"{"by":2}"#).unwrap();
    assert_eq!(
        called.response.as_json().unwrap().to_string(),
        r#"{"n":2,"topic":"t:x"}"#
    );
    assert_eq!(called.effects.len(), 1);
    assert!(
        matches!(&called.effects[0], Emit { event, payload, to: Audience::All { except: Some(_) } }
        if event == "count" && payload.as_json() == Some(r#"{"n":2,"user":"alice"}"#))
    );
}

#[test]
fn throws_become_script_errors_and_drop_effects() {
    let js = load(
        r#"export function onMessage(c, e, p) {
          room.broadcast("x", {});
          if (p.kind === "error") throw new Error("nope");
          if (p.kind === "string") throw "plain";
          if (p.kind === "type") null.x;
          return {};
        }"#,
    )
    .unwrap();
    let err = message(&js, r#"{"kind":"error"}"#).unwrap_err();
    assert!(
        matches!(&err, CallError::Script { message, stack: Some(s) } if message == "nope" && s.contains("t.js")),
        "{err:?}"
    );
    let err = message(&js, r#"{"kind":"string"}"#).unwrap_err();
    assert_eq!(err.to_string(), "plain");
    let err = message(&js, r#"{"kind":"type"}"#).unwrap_err();
    assert!(err.to_string().starts_with("TypeError"), "{err}");
    let ok = message(&js, "{}").unwrap();
    assert_eq!(ok.effects.len(), 1, "effects of failed calls do not leak");
}

#[test]
fn time_and_randomness_are_deterministic() {
    let src = r#"export function onMessage() {
        return {now: Date.now(), d: new Date().getTime(), r: Math.random(), u: crypto.randomUUID()};
    }"#;
    let a = load(src).unwrap();
    let b = load(src).unwrap();
    let ra = message(&a, "{}")
        .unwrap()
        .response
        .as_json()
        .unwrap()
        .to_string();
    let rb = message(&b, "{}")
        .unwrap()
        .response
        .as_json()
        .unwrap()
        .to_string();
    assert_eq!(ra, rb);
    assert!(ra.contains(r#""now":1000,"d":1000"#), "{ra}");
    let other = a
        .call(
            &conn(),
            Hook::Message {
                event: "e",
                payload: "{}",
            },
            1_000,
            8,
        )
        .unwrap();
    assert_ne!(
        other.response.as_json().unwrap().to_string(),
        ra,
        "another seed draws other numbers"
    );
}

#[test]
fn runaway_scripts_hit_the_budget() {
    let limits = ScriptLimits {
        cpu_per_call: Duration::from_millis(20),
        ..ScriptLimits::default()
    };
    let js = load_with(
        r#"export function onMessage(c, e, p) {
          if (p.spin) { while (true) {} }
          if (p.catch) { for (;;) { try { while (true) {} } catch (e) {} } }
          if (p.jobs) { const f = () => Promise.resolve().then(f); f(); }
          return {};
        }"#,
        limits,
    )
    .unwrap();
    for payload in [r#"{"spin":1}"#, r#"{"catch":1}"#, r#"{"jobs":1}"#] {
        let started = Instant::now();
        let err = message(&js, payload).unwrap_err();
        assert!(
            matches!(err, CallError::Fatal(Fatal::CpuBudget)),
            "{payload}: {err:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}

#[test]
fn the_budget_charges_cpu_time_never_more_than_used() {
    let allowance = Duration::from_millis(20);
    let used_until_expired = |budget: &Budget| {
        let before = thread_cpu_nanos();
        while !budget.expired() {}
        Duration::from_nanos(thread_cpu_nanos() - before)
    };
    let budget = Budget::new();
    // Asleep past the allowance is not running.
    budget.arm(allowance);
    std::thread::sleep(Duration::from_millis(40));
    assert!(!budget.expired());
    let used = used_until_expired(&budget);
    assert!(budget.disarm(), "fired");
    assert!(
        used >= allowance - Duration::from_millis(1) && used < allowance + REREAD,
        "{used:?}"
    );
    // Armed on a recent reading (no clock read): charged less, never more,
    // than it used, by at most REREAD.
    read_thread_cpu();
    std::thread::sleep(REREAD / 2);
    budget.arm(allowance);
    let used = used_until_expired(&budget);
    assert!(budget.disarm());
    assert!(
        used >= allowance && used <= allowance + REREAD + Duration::from_millis(1),
        "{used:?}"
    );
    // Running since that reading: charged all of it.
    read_thread_cpu();
    let start = thread_cpu_nanos();
    while thread_cpu_nanos() - start < (REREAD / 2).as_nanos() as u64 {}
    budget.arm(allowance);
    let used = used_until_expired(&budget);
    assert!(budget.disarm());
    assert!(used >= allowance - REREAD / 4, "{used:?}");
    assert!(!budget.expired(), "idle once disarmed");
}

#[test]
fn attacks_are_contained_within_budget_plus_20ms_of_cpu() {
    // The default limits, measured in the same clock the budget uses
    // (thread CPU time), so a loaded machine cannot skew the result.
    let js = load(
        r#"const keep = [];
        export function onMessage(c, e, p) {
          if (p.spin) { while (true) {} }
          if (p.alloc) { for (;;) keep.push(new Array(1e6)); }
          if (p.recurse) { const f = (k) => f(k + 1) + 1; return f(0); }
          return {};
        }"#,
    )
    .unwrap();
    let budget = ScriptLimits::default().cpu_per_call;
    for payload in [r#"{"spin":1}"#, r#"{"alloc":1}"#, r#"{"recurse":1}"#] {
        let before = thread_cpu_nanos();
        let err = message(&js, payload).unwrap_err();
        let used = Duration::from_nanos(thread_cpu_nanos() - before);
        println!("{payload}: {err} after {used:?} of CPU");
        assert!(
            used < budget + Duration::from_millis(20),
            "{payload}: {used:?}"
        );
    }
}

#[test]
fn memory_exhaustion_is_fatal() {
    let limits = ScriptLimits {
        memory: 8 << 20,
        ..ScriptLimits::default()
    };
    let js = load_with(
        r#"const keep = [];
        export function onMessage() { for (;;) keep.push(new Array(100000).fill(1)); }"#,
        limits,
    )
    .unwrap();
    let err = message(&js, "{}").unwrap_err();
    assert!(
        matches!(err, CallError::Fatal(Fatal::OutOfMemory)),
        "{err:?}"
    );
}

#[test]
fn deep_recursion_is_a_script_error() {
    let js = load("export function onMessage() { const f = (n) => f(n + 1) + 1; return f(0); }")
        .unwrap();
    let err = message(&js, "{}").unwrap_err();
    assert!(matches!(err, CallError::Script { .. }), "{err:?}");
    assert!(message(&js, "{}").is_err(), "room still answers");
}

#[test]
fn load_errors_are_located() {
    let err = load("export function onMessage() {\n  return (;\n}")
        .err()
        .unwrap();
    assert_eq!((err.file.as_str(), err.line), ("t.js", 2), "{err}");
    let err = load("\n\nthrow new Error('top');\nexport function onMessage() {}")
        .err()
        .unwrap();
    assert_eq!((err.line, err.message.as_str()), (3, "top"), "{err}");
    let err = load("export const x = 1;").err().unwrap();
    assert!(err.message.contains("onMessage"), "{err}");
    let err = load("import x from '../evil.js'; export function onMessage() {}")
        .err()
        .unwrap();
    assert!(err.message.contains("escapes"), "{err}");
    let err = load("while (true) {} export function onMessage() {}")
        .err()
        .unwrap();
    assert!(err.message.contains("CPU budget"), "{err}");
}

#[test]
fn snapshot_and_restore_round_trip_with_members() {
    let src = r#"let items = [];
        export function onJoin(conn) { return {n: room.connections().length}; }
        export function onMessage(c, e, p) { items.push(p.v); return {}; }
        export function snapshot() { return {items}; }
        export function restore(s) { items = s.items; }"#;
    let a = load(src).unwrap();
    assert!(a.has_snapshot());
    let alice = conn();
    let joined = a.call(&alice, Hook::Join { params: "{}" }, 1, 1).unwrap();
    assert_eq!(joined.response.as_json().unwrap().to_string(), r#"{"n":1}"#);
    message(&a, r#"{"v":1}"#).unwrap();
    let snap = a.snapshot().unwrap();
    let b = load(src).unwrap();
    b.restore(&snap, 5).unwrap();
    assert_eq!(b.snapshot().unwrap(), snap);
    assert!(snap.contains(r#""state":{"items":[1]}"#), "{snap}");
    let bob = Conn::new("bob", empty_object());
    let joined = b.call(&bob, Hook::Join { params: "{}" }, 1, 1).unwrap();
    assert_eq!(
        joined.response.as_json().unwrap().to_string(),
        r#"{"n":2}"#,
        "restored members count"
    );
}

#[test]
fn async_hooks_settle_within_the_event() {
    let js = load(
        r#"export async function onMessage(c, e, p) {
          await null;
          if (p.fail) throw new Error("async fail");
          room.broadcast("later", {});
          return {ok: true};
        }"#,
    )
    .unwrap();
    let called = message(&js, "{}").unwrap();
    assert_eq!(
        called.response.as_json().unwrap().to_string(),
        r#"{"ok":true}"#
    );
    assert_eq!(called.effects.len(), 1);
    assert_eq!(
        message(&js, r#"{"fail":1}"#).unwrap_err().to_string(),
        "async fail"
    );
}

#[test]
fn reserved_events_and_bad_payloads_throw() {
    let js = load(
        r#"export function onMessage(c, e, p) {
          if (p.k === 1) room.broadcast("phx_reply", {});
          if (p.k === 2) room.broadcast("", {});
          if (p.k === 3) { const o = {}; o.o = o; room.broadcast("x", o); }
          if (p.k === 4) return {big: 1n};
          return {};
        }"#,
    )
    .unwrap();
    for k in 1..=4 {
        let err = message(&js, &format!(r#"{{"k":{k}}}"#)).unwrap_err();
        assert!(matches!(err, CallError::Script { .. }), "{k}: {err:?}");
    }
}

/// Every global a script can see, as the script API documents them:
/// ECMAScript's built-ins plus `room`, `console` and `crypto`.
const ALLOWED_GLOBALS: &[&str] = &[
    // ECMAScript values, functions and constructors.
    "globalThis",
    "undefined",
    "NaN",
    "Infinity",
    "eval",
    "isFinite",
    "isNaN",
    "parseFloat",
    "parseInt",
    "decodeURI",
    "decodeURIComponent",
    "encodeURI",
    "encodeURIComponent",
    "escape",
    "unescape",
    "Object",
    "Function",
    "Array",
    "Number",
    "Boolean",
    "String",
    "Symbol",
    "BigInt",
    "Math",
    "JSON",
    "Reflect",
    "Date",
    "RegExp",
    "Map",
    "Set",
    "WeakMap",
    "WeakSet",
    "WeakRef",
    "FinalizationRegistry",
    "Proxy",
    "Promise",
    "Iterator",
    "Error",
    "EvalError",
    "RangeError",
    "ReferenceError",
    "SyntaxError",
    "TypeError",
    "URIError",
    "InternalError",
    "AggregateError",
    "SuppressedError",
    "ArrayBuffer",
    "SharedArrayBuffer",
    "DataView",
    "Atomics",
    "Int8Array",
    "Uint8Array",
    "Uint8ClampedArray",
    "Int16Array",
    "Uint16Array",
    "Int32Array",
    "Uint32Array",
    "Float16Array",
    "Float32Array",
    "Float64Array",
    "BigInt64Array",
    "BigUint64Array",
    "TypedArray",
    "queueMicrotask",
    "structuredClone",
    "DisposableStack",
    "AsyncDisposableStack",
    // Pure functions of their arguments (Web APIs QuickJS provides).
    "DOMException",
    "atob",
    "btoa",
    // The host's documented globals, and its (non-enumerable) hook
    // dispatcher.
    "room",
    "console",
    "crypto",
    "__roomhost",
];

#[test]
fn scripts_see_only_documented_globals() {
    let js = load(
        r#"export function onMessage(c, e, p) {
          if (e === "names") return {names: Object.getOwnPropertyNames(globalThis)};
          return {types: p.names.map((n) => [n, eval(`typeof ${n}`)])};
        }"#,
    )
    .unwrap();
    let call = |event: &str, payload: &str| {
        js.call(&conn(), Hook::Message { event, payload }, 1, 1)
            .unwrap()
            .response
            .as_json()
            .unwrap()
            .to_string()
    };
    let names: serde_json::Value = serde_json::from_str(&call("names", "{}")).unwrap();
    let unexpected: Vec<&str> = names["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .filter(|n| !ALLOWED_GLOBALS.contains(n))
        .collect();
    assert!(
        unexpected.is_empty(),
        "undocumented globals: {unexpected:?}"
    );
    let forbidden = [
        "require",
        "module",
        "exports",
        "process",
        "std",
        "os",
        "fetch",
        "XMLHttpRequest",
        "WebSocket",
        "setTimeout",
        "setInterval",
        "setImmediate",
        "clearTimeout",
        "performance",
        "navigator",
        "Deno",
        "Bun",
        "Worker",
        "importScripts",
        "scriptArgs",
        "print",
        "__roomhost_native",
        "gc",
    ];
    let payload = serde_json::json!({ "names": forbidden }).to_string();
    let types: serde_json::Value = serde_json::from_str(&call("types", &payload)).unwrap();
    for pair in types["types"].as_array().unwrap() {
        assert_eq!(pair[1], "undefined", "{} is visible to scripts", pair[0]);
    }
}

/// Typed arrays and base64 are added on first use; afterwards the
/// globals are exactly what a full QuickJS context has.
#[test]
fn lazy_builtins_work_and_end_up_as_in_a_full_context() {
    let js = load(
        r#"const describe = (n) => {
          const d = Object.getOwnPropertyDescriptor(globalThis, n);
          return [n, typeof d.value, !!d.writable, d.enumerable, d.configurable];
        };
        export function onMessage(c, e, p) {
          if (e === "use") {
            const bytes = new Uint8Array([104, 105]);
            const words = crypto.getRandomValues(new Uint32Array(4));
            let dom = null;
            try { atob("%"); } catch (err) { dom = err instanceof DOMException; }
            return {
              len: bytes.length, view: new DataView(bytes.buffer).getUint8(1),
              words: words.length, b64: btoa("hi"), back: atob("aGk="), dom,
              atomics: typeof Atomics.add, big: new BigInt64Array(1).length,
            };
          }
          if (e === "assign") { globalThis.btoa = 7; return {btoa, atob: atob("aGk=")}; }
          return {globals: Object.getOwnPropertyNames(globalThis).sort().map(describe)};
        }"#,
    )
    .unwrap();
    let call = |event: &str| -> serde_json::Value {
        let called = js.call(
            &conn(),
            Hook::Message {
                event,
                payload: "{}",
            },
            1,
            1,
        );
        serde_json::from_str(called.unwrap().response.as_json().unwrap()).unwrap()
    };
    assert_eq!(
        call("use"),
        serde_json::json!({"len": 2, "view": 105, "words": 4, "b64": "aGk=", "back": "hi",
            "dom": true, "atomics": "function", "big": 1})
    );
    assert_eq!(call("assign"), serde_json::json!({"btoa": 7, "atob": "hi"}));

    // The same description of every global, from a full context.
    let rt = Runtime::new().unwrap();
    let full = Context::full(&rt).unwrap();
    let expected: Vec<serde_json::Value> = full.with(|ctx| {
        let json: String = ctx
            .eval(
                r#"JSON.stringify(Object.getOwnPropertyNames(globalThis).sort().map((n) => {
                  const d = Object.getOwnPropertyDescriptor(globalThis, n);
                  return [n, typeof d.value, !!d.writable, d.enumerable, d.configurable];
                }))"#,
            )
            .unwrap();
        serde_json::from_str(&json).unwrap()
    });
    let host = ["room", "console", "crypto", "__roomhost", "performance"];
    let ours = call("globals")["globals"].as_array().unwrap().clone();
    let strip = |v: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        v.into_iter()
            .filter(|d| !host.contains(&d[0].as_str().unwrap()))
            .map(|mut d| {
                if d[0] == "btoa" {
                    d[1] = "assigned above".into();
                }
                d
            })
            .collect()
    };
    assert_eq!(strip(ours), strip(expected));
}

#[test]
fn a_lazy_global_made_permanent_fails_its_group_with_an_exception() {
    let js = load(
        r#"Object.defineProperty(globalThis, "Atomics", {value: 1, configurable: false});
        export function onMessage(c, e, p) {
          return p.typed ? {n: new Uint8Array(2).length} : {b: btoa("hi")};
        }"#,
    )
    .unwrap();
    let err = message(&js, r#"{"typed":true}"#).unwrap_err().to_string();
    assert!(err.contains("globalThis.Atomics was redefined"), "{err}");
    // The room goes on, with its other built-ins.
    assert_eq!(
        message(&js, "{}")
            .unwrap()
            .response
            .as_json()
            .unwrap()
            .to_string(),
        r#"{"b":"aGk="}"#
    );
}

#[test]
fn a_warm_context_keeps_track_of_the_builtins_it_added() {
    let blank = Blank::new().unwrap();
    blank.ctx.with(|ctx| {
        let n: usize = ctx.eval("new Uint8Array(3).length").unwrap();
        assert_eq!(n, 3);
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.js"),
        r#"globalThis.Int8Array = "mine";
        export function onMessage(c, e, p) { return {t: globalThis.Int8Array, n: new Uint16Array(2).length}; }"#,
    )
    .unwrap();
    let source = ModuleSource::Disk {
        root: dir.path().canonicalize().unwrap(),
        compiled: Arc::new(Mutex::new(BTreeMap::new())),
    };
    let limits = ScriptLimits::default();
    let js = RoomJs::load_into(
        blank,
        &Identity::new("t", "x"),
        source,
        "t.js",
        &limits,
        None,
    )
    .unwrap();
    // Adding the group a second time would have overwritten "mine".
    assert_eq!(
        message(&js, "{}")
            .unwrap()
            .response
            .as_json()
            .unwrap()
            .to_string(),
        r#"{"t":"mine","n":2}"#
    );
}

#[test]
fn modules_outside_the_sandbox_cannot_be_imported() {
    for spec in [
        "std",
        "os",
        "qjs:std",
        "node:fs",
        "/etc/passwd",
        "../x.js",
        "https://x/y.js",
    ] {
        let src = format!("import x from {spec:?}; export function onMessage() {{}}");
        assert!(load(&src).is_err(), "{spec} was importable");
    }
    let js = load(
        r#"export async function onMessage() {
          try { await import("std"); return {imported: true}; }
          catch (e) { return {imported: false}; }
        }"#,
    )
    .unwrap();
    assert_eq!(
        message(&js, "{}")
            .unwrap()
            .response
            .as_json()
            .unwrap()
            .to_string(),
        r#"{"imported":false}"#
    );
}

#[test]
fn hostile_calls_into_host_functions_never_panic() {
    let js = load(
        r#"export function onMessage(c, e, p) {
          const junk = [undefined, null, 1n, Symbol("s"), () => 1, {toJSON() { throw new Error("j"); }},
            {get x() { throw 1; }}, "x".repeat(100000), new Proxy({}, {get() { throw 2; }})];
          let threw = 0;
          for (const a of junk) for (const b of junk) {
            for (const f of [() => room.broadcast(a, b), () => room.push(a, "e", b),
                             () => room.broadcast("e", b, a), () => console.log(a, b),
                             () => room.presence(a), () => room.connections(a),
                             () => crypto.randomUUID(a), () => console.error(b)]) {
              try { f(); } catch (err) { threw++; }
            }
          }
          return {threw};
        }"#,
    )
    .unwrap();
    let called = message(&js, "{}").unwrap();
    assert!(
        called
            .response
            .as_json()
            .unwrap()
            .to_string()
            .contains("threw"),
        "{}",
        called.response.as_json().unwrap().to_string()
    );
    assert!(message(&js, "{}").is_ok(), "the runtime is still usable");
}

#[test]
fn binary_payloads_cross_as_uint8arrays_both_ways() {
    let js = load(
        r#"export function onMessage(conn, event, payload) {
          if (event === "json") return { isBytes: payload instanceof Uint8Array, n: payload.n };
          if (!(payload instanceof Uint8Array)) throw new Error("expected bytes");
          if (event === "echo") {
            room.broadcast("b", payload, { except: conn.id });
            room.push(conn.id, "p", payload.buffer);
            // A view of the middle bytes only: its bytes, not the buffer's.
            return payload.subarray(1, payload.length - 1);
          }
          if (event === "timer") room.setTimer("t", 1000, payload);
          if (event === "send") room.send("t:y", "e", payload);
          return {};
        }
        export function onJoin() { return new Uint8Array([1]); }"#,
    )
    .unwrap();
    let conn = Conn::new("alice", empty_object());
    let bytes = [0u8, 1, 2, 255];
    let hook = Hook::Binary {
        event: "echo",
        payload: &bytes,
    };
    let called = js.call(&conn, hook, 1000, 1).unwrap();
    assert_eq!(called.response, Body::Binary(vec![1u8, 2].into()));
    assert_eq!(called.effects.len(), 2);
    assert_eq!(
        called.effects[0].payload,
        Body::Binary(bytes.to_vec().into())
    );
    assert!(matches!(
        called.effects[0].to,
        Audience::All { except: Some(_) }
    ));
    assert_eq!(
        called.effects[1].payload,
        Body::Binary(bytes.to_vec().into())
    );
    // JSON pushes still get an object, even once typed arrays exist.
    let hook = Hook::Message {
        event: "json",
        payload: r#"{"n":3}"#,
    };
    let called = js.call(&conn, hook, 1000, 1).unwrap();
    assert_eq!(called.response, Body::from(r#"{"isBytes":false,"n":3}"#));
    // Bytes are refused where only JSON fits, with a clear error.
    for event in ["timer", "send"] {
        let hook = Hook::Binary {
            event,
            payload: &bytes,
        };
        let Err(CallError::Script { message, .. }) = js.call(&conn, hook, 1000, 1) else {
            panic!("{event}: bytes accepted")
        };
        assert!(message.contains("binary payloads go only to"), "{message}");
    }
    let join = Hook::Join { params: "{}" };
    let Err(CallError::Script { message, .. }) = js.call(&conn, join, 1000, 1) else {
        panic!("a binary join reply was accepted")
    };
    assert_eq!(message, "the join hook must return JSON, not binary");
}
