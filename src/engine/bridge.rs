//! The host side of `room.*` and `console.*`: the [`Bridge`] (runtime
//! userdata the host functions write into), the native functions the
//! prelude wraps, and the built-ins added on first use.
//!
//! Host functions never panic (a panic inside one poisons the runtime):
//! they only record into the bridge and return.

use std::cell::{Cell, RefCell};

use rquickjs::prelude::Opt;
use rquickjs::{ArrayBuffer, Ctx, Function, JsLifetime, Object, TypedArray, Value};

use super::{ConsoleSink, Effects, Kick, KindExists, LogLevel, NextTimer, RoomSend};
use crate::hub::{Audience, Body, Emit};
use crate::topic::Topic;

/// Messages one event may send to other rooms.
pub(super) const MAX_SENDS_PER_EVENT: usize = 100;

/// Host state reachable from host functions (runtime userdata). Only touched
/// while the runtime lock is held, inside `ctx.with`.
pub(super) struct Bridge {
    /// What the hook being called asked for (cleared by every call).
    pub(super) effects: RefCell<Effects>,
    /// The room's next timer due, as the prelude last reported it.
    pub(super) next_timer: RefCell<Option<NextTimer>>,
    /// `next_timer` changed since the last call returned.
    pub(super) timers_changed: Cell<bool>,
    /// Whether a room kind exists (for `room.send`); unknown without one.
    pub(super) kinds: RefCell<Option<KindExists>>,
    /// During replay, console output is suppressed (effects are dropped by
    /// the room task).
    pub(super) replaying: Cell<bool>,
    pub(super) generation: Cell<u64>,
    /// The [`Builtins`] groups added so far (one bit each).
    pub(super) builtins: Cell<u8>,
    pub(super) identity: String,
    /// What `room.presence()` reads (none: `{}`).
    pub(super) presence: RefCell<Option<crate::presence::Shared>>,
    pub(super) console: Option<ConsoleSink>,
}

impl Bridge {
    pub(super) fn new(identity: String, console: Option<ConsoleSink>) -> Bridge {
        Bridge {
            effects: RefCell::new(Effects::default()),
            next_timer: RefCell::new(None),
            timers_changed: Cell::new(false),
            kinds: RefCell::new(None),
            replaying: Cell::new(false),
            generation: Cell::new(0),
            builtins: Cell::new(0),
            identity,
            presence: RefCell::new(None),
            console,
        }
    }
}

// SAFETY: `Bridge` holds no JS values, so it is the same type for every 'js.
unsafe impl<'js> JsLifetime<'js> for Bridge {
    type Changed<'to> = Bridge;
}

pub(super) fn bridge<'a>(ctx: &'a Ctx<'_>) -> rquickjs::runtime::UserDataGuard<'a, Bridge> {
    ctx.userdata::<Bridge>()
        .expect("the bridge is stored before any JS runs")
}

/// The host functions behind `room.*` and `console.*`. Each only records
/// into the bridge and returns; none can panic.
pub(super) fn install_natives(ctx: &Ctx) -> rquickjs::Result<()> {
    let native = Object::new(ctx.clone())?;
    native.set(
        "identity",
        Function::new(ctx.clone(), |ctx: Ctx| bridge(&ctx).identity.clone())?,
    )?;
    native.set(
        "generation",
        Function::new(ctx.clone(), |ctx: Ctx| bridge(&ctx).generation.get() as f64)?,
    )?;
    native.set(
        "presence",
        Function::new(ctx.clone(), |ctx: Ctx| {
            let bridge = bridge(&ctx);
            let presence = bridge.presence.borrow();
            presence
                .as_ref()
                .map_or_else(|| "{}".to_string(), |p| p.state_json())
        })?,
    )?;
    native.set(
        "isBytes",
        Function::new(ctx.clone(), |ctx: Ctx, value: Value| {
            bytes_of(&ctx, &value).is_some()
        })?,
    )?;
    native.set(
        "broadcast",
        Function::new(
            ctx.clone(),
            |ctx: Ctx, event: String, payload: Value, except: Option<String>| {
                let payload = body_of(&ctx, &payload);
                bridge(&ctx).effects.borrow_mut().emits.push(Emit {
                    event,
                    payload,
                    to: Audience::All { except },
                });
            },
        )?,
    )?;
    native.set(
        "push",
        Function::new(
            ctx.clone(),
            |ctx: Ctx, conn_id: String, event: String, payload: Value| {
                let payload = body_of(&ctx, &payload);
                bridge(&ctx).effects.borrow_mut().emits.push(Emit {
                    event,
                    payload,
                    to: Audience::Conn(conn_id),
                });
            },
        )?,
    )?;
    native.set(
        "nextTimer",
        Function::new(ctx.clone(), |ctx: Ctx, name: Option<String>, at: f64| {
            let bridge = bridge(&ctx);
            *bridge.next_timer.borrow_mut() = name.map(|name| NextTimer {
                name,
                at: at as i64,
            });
            bridge.timers_changed.set(true);
        })?,
    )?;
    native.set(
        "kick",
        Function::new(ctx.clone(), |ctx: Ctx, conn_id: String, reason: String| {
            bridge(&ctx)
                .effects
                .borrow_mut()
                .kicks
                .push(Kick { conn_id, reason });
        })?,
    )?;
    native.set(
        "send",
        Function::new(
            ctx.clone(),
            |ctx: Ctx, topic: String, event: String, payload: String| -> String {
                let bridge = bridge(&ctx);
                let parsed = match Topic::parse(&topic) {
                    Ok(parsed) => parsed,
                    Err(e) => return e.to_string(),
                };
                if let Some(exists) = &*bridge.kinds.borrow()
                    && !exists(parsed.kind())
                {
                    return format!("unknown room kind {:?}", parsed.kind());
                }
                let mut effects = bridge.effects.borrow_mut();
                if effects.sends.len() >= MAX_SENDS_PER_EVENT {
                    return format!("at most {MAX_SENDS_PER_EVENT} messages per event");
                }
                effects.sends.push(RoomSend {
                    topic: parsed,
                    event,
                    payload,
                });
                String::new()
            },
        )?,
    )?;
    native.set(
        "log",
        Function::new(ctx.clone(), |ctx: Ctx, level: String, text: String| {
            let bridge = bridge(&ctx);
            if bridge.replaying.get() {
                return;
            }
            let level = match level.as_str() {
                "error" => LogLevel::Error,
                "warn" => LogLevel::Warn,
                "info" => LogLevel::Info,
                _ => LogLevel::Log,
            };
            if let Some(console) = &bridge.console {
                console(level, truncate(&text, 8 << 10));
            }
        })?,
    )?;
    ctx.globals().set("__roomhost_native", native)
}

/// A payload the prelude passed on: its JSON text, or the bytes of a
/// `Uint8Array` / `ArrayBuffer`. The prelude only passes those two kinds.
fn body_of(ctx: &Ctx, value: &Value) -> Body {
    if let Some(json) = value.as_string().and_then(|s| s.to_string().ok()) {
        return Body::Json(json);
    }
    match bytes_of(ctx, value) {
        Some(bytes) => Body::Binary(bytes.into()),
        None => Body::Json("{}".into()),
    }
}

/// A copy of the bytes of a `Uint8Array` (its view only) or an
/// `ArrayBuffer`; `None` for anything else. Without typed arrays added no
/// value can be one, so rooms that never touch bytes never pay for them.
pub(super) fn bytes_of(ctx: &Ctx, value: &Value) -> Option<Vec<u8>> {
    if bridge(ctx).builtins.get() & Builtins::TypedArrays as u8 == 0 || !value.is_object() {
        return None;
    }
    // SAFETY (both): the slice is copied out at once; no JS runs while it lives.
    if let Ok(array) = TypedArray::<u8>::from_value(value.clone()) {
        return unsafe { array.as_bytes() }.map(<[u8]>::to_vec);
    }
    let buffer = ArrayBuffer::from_value(value.clone())?;
    unsafe { buffer.as_bytes() }.map(<[u8]>::to_vec)
}

/// A new `Uint8Array` holding a copy of `bytes` (typed arrays are added to
/// the context first if it has none yet).
pub(super) fn new_bytes<'js>(ctx: &Ctx<'js>, bytes: &[u8]) -> rquickjs::Result<Value<'js>> {
    add_builtins(ctx, Builtins::TypedArrays)?;
    Ok(TypedArray::<u8>::new_copy(ctx.clone(), bytes)?.into_value())
}

/// Built-ins most rooms never use, though they are a sixth of the work of
/// building a context and 19 KiB of its heap: they are added the first time
/// a script reads or assigns one of their globals.
#[derive(Clone, Copy)]
enum Builtins {
    TypedArrays = 1,
    Base64 = 2,
}

const LAZY_BUILTINS: &[(Builtins, &[&str])] = &[
    (
        Builtins::TypedArrays,
        &[
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
        ],
    ),
    (Builtins::Base64, &["atob", "btoa", "DOMException"]),
];

/// Defines each lazy global as a configurable accessor. Adding the group
/// defines its real globals over these accessors, so afterwards a script
/// sees exactly what `Context::full` would have given it.
pub(super) fn install_lazy_builtins<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<()> {
    use rquickjs::qjs;
    let raw = ctx.as_raw().as_ptr();
    let globals = ctx.globals();
    for &(group, names) in LAZY_BUILTINS {
        for &name in names {
            // One function is both the getter (called with no argument) and
            // the setter: a context builds half as many.
            let access = Function::new(
                ctx.clone(),
                move |ctx: Ctx<'js>, value: Opt<Value<'js>>| -> rquickjs::Result<Value<'js>> {
                    add_builtins(&ctx, group)?;
                    let globals = ctx.globals();
                    match value.0 {
                        None => globals.get(name),
                        Some(value) => globals
                            .set(name, value)
                            .map(|()| Value::new_undefined(ctx.clone())),
                    }
                },
            )?;
            // SAFETY: `raw` is this live, locked context. The define takes
            // ownership of one reference each for the getter and the
            // setter, which the two dups give it; the atom is freed here.
            let defined = unsafe {
                let atom = qjs::JS_NewAtomLen(raw, name.as_ptr().cast(), name.len() as _);
                if atom == qjs::JS_ATOM_NULL {
                    return Err(rquickjs::Error::Allocation);
                }
                let defined = qjs::JS_DefinePropertyGetSet(
                    raw,
                    globals.as_raw(),
                    atom,
                    qjs::JS_DupValue(raw, access.as_raw()),
                    qjs::JS_DupValue(raw, access.as_raw()),
                    qjs::JS_PROP_CONFIGURABLE as _,
                );
                qjs::JS_FreeAtom(raw, atom);
                defined
            };
            if defined < 0 {
                return Err(rquickjs::Error::Allocation);
            }
        }
    }
    Ok(())
}

fn add_builtins(ctx: &Ctx, group: Builtins) -> rquickjs::Result<()> {
    let bit = group as u8;
    if bridge(ctx).builtins.get() & bit != 0 {
        return Ok(());
    }
    // QuickJS aborts the process if a group's global already exists, so the
    // accessors go first; a script that made one of them permanent gets an
    // exception instead.
    let globals = ctx.globals();
    let names = LAZY_BUILTINS
        .iter()
        .filter(|(g, _)| *g as u8 == bit)
        .flat_map(|(_, names)| names.iter());
    for &name in names {
        if globals.remove(name).is_err() || globals.contains_key(name)? {
            return Err(rquickjs::Exception::throw_type(
                ctx,
                &format!("globalThis.{name} was redefined as permanent before its first use"),
            ));
        }
    }
    {
        let bridge = bridge(ctx);
        bridge.builtins.set(bridge.builtins.get() | bit);
    }
    let ptr = ctx.as_raw().as_ptr();
    // SAFETY: `ctx` is live and locked (we are inside one of its calls), and
    // none of the group's globals exists, as QuickJS requires.
    let added = unsafe {
        match group {
            Builtins::TypedArrays => rquickjs::qjs::JS_AddIntrinsicTypedArrays(ptr),
            Builtins::Base64 => rquickjs::qjs::JS_AddIntrinsicAToB(ptr),
        }
    };
    if added < 0 {
        return Err(rquickjs::Error::Allocation);
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
