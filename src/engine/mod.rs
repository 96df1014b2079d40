//! The JavaScript engine: one QuickJS runtime and context per room, the host
//! functions scripts call, and the hook calls the room task makes.
//!
//! - [`RoomJs`]: a room's runtime with its kind loaded; [`RoomJs::call`] runs
//!   one hook for one event.
//! - [`loader`]: where modules come from (the scripts directory, or a kind's
//!   compiled [`Bytecode`]), with imports kept inside the scripts directory.
//! - [`warm`]: runtimes built ahead of need, so a cold start only loads code.
//! - `budget` and `bridge`: the CPU budget of a call, and the host functions.
//!
//! Everything crosses the boundary as strings and numbers: payloads arrive as
//! JSON text and are `JSON.parse`d in JS, results and broadcasts leave as JSON
//! text. This is faster than converting value trees and keeps the Rust side
//! free of JS types. Binary payloads are the one exception: they arrive as a
//! `Uint8Array` (copied in), and a hook's `Uint8Array` result or payload is
//! copied out as bytes ([`Body::Binary`]). Host functions never panic (a panic inside a host
//! function poisons the runtime): they only push into the bridge.
//!
//! Every entry into JS is bounded by the CPU budget (interrupt handler), the
//! memory limit and the stack limit. Exceeding CPU or memory is a [`Fatal`]
//! error: the room must be rebuilt, because its heap may be half-updated.
//!
//! The engine knows nothing of rooms' durability or channels: it runs what
//! it is given and returns what the script asked to send ([`Emit`]).

#[cfg(unix)]
mod arena;
mod bridge;
mod budget;
pub mod loader;
pub mod warm;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rquickjs::{
    CatchResultExt, CaughtError, Context, Ctx, Function, Module, Object, Runtime, Value,
    WriteOptions,
};

use self::bridge::{Bridge, bridge, install_lazy_builtins, install_natives};
use self::budget::Budget;
use crate::clock::now_ms;
use crate::config::ScriptLimits;
use crate::conn::Conn;
pub use crate::hub::{Body, Emit};
pub use loader::{
    Bytecode, ModuleSource, ScriptError, ScriptLoader, ScriptResolver, resolve_import,
};
pub use warm::WarmPool;

const PRELUDE: &str = include_str!("prelude.js");
const PRELUDE_NAME: &str = "roomhost:prelude";

/// Which room a runtime belongs to, as the script sees it in `room.*`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Identity {
    pub topic: String,
    pub kind: String,
    pub name: String,
}

impl Identity {
    pub fn new(kind: &str, name: &str) -> Identity {
        Identity {
            topic: format!("{kind}:{name}"),
            kind: kind.to_string(),
            name: name.to_string(),
        }
    }
}

/// Severity of a `console.*` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Log,
    Info,
    Warn,
    Error,
}

/// Receives `console.*` lines of a room (not called during replay).
pub type ConsoleSink = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

/// A connection a hook closed (`room.kick`): it leaves after the event.
#[derive(Debug, PartialEq, Eq)]
pub struct Kick {
    pub conn_id: String,
    pub reason: String,
}

/// A message a hook sent to another room (`room.send`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomSend {
    pub topic: crate::topic::Topic,
    pub event: String,
    /// JSON text.
    pub payload: String,
}

/// The next timer due in a room: its name and when (ms since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextTimer {
    pub name: String,
    pub at: i64,
}

/// Whether a room kind exists, for `room.send` to refuse unknown ones.
pub type KindExists = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What one hook call asked for besides its result.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub(crate) emits: Vec<Emit>,
    pub(crate) kicks: Vec<Kick>,
    pub(crate) sends: Vec<RoomSend>,
}

/// The hook to run, with its arguments.
#[derive(Clone, Copy, Debug)]
pub enum Hook<'a> {
    Join {
        params: &'a str,
    },
    Message {
        event: &'a str,
        payload: &'a str,
    },
    /// `onMessage` with a binary payload: the hook gets a `Uint8Array`.
    Binary {
        event: &'a str,
        payload: &'a [u8],
    },
    Leave {
        reason: &'a str,
    },
    /// A leave whose `onLeave` failed earlier: only the membership changes.
    Drop,
    /// Timer `name` fires; `info` is `{"late_ms": n}`.
    Timer {
        name: &'a str,
        info: &'a str,
    },
    /// A firing whose `onTimer` failed earlier: only the timer goes.
    TimerDrop {
        name: &'a str,
    },
    /// `onRequest(req)`: an HTTP request (`req` is its JSON description).
    Request {
        req: &'a str,
    },
}

/// A hook call that returned.
#[derive(Debug)]
pub struct Called {
    /// The hook's return value as JSON (`{}` for `undefined`), or bytes
    /// when it returned a `Uint8Array`.
    pub response: Body,
    /// What the hook asked to send, in order; released by the room once the
    /// event is durable (dropped if the hook fails or the event is a replay).
    pub effects: Vec<Emit>,
    /// Connections the hook closed (`room.kick`), in order.
    pub kicks: Vec<Kick>,
    /// Messages the hook sent to other rooms (`room.send`), in order.
    pub sends: Vec<RoomSend>,
    /// The next timer due, if the hook set or cleared timers (`Some(None)`:
    /// none is left).
    pub next_timer: Option<Option<NextTimer>>,
}

/// A fatal error: the context can no longer be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fatal {
    #[error("CPU budget exceeded")]
    CpuBudget,
    #[error("out of memory")]
    OutOfMemory,
}

/// How a hook call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The script threw: this call fails, the room goes on (after rollback).
    #[error("{message}")]
    Script {
        message: String,
        stack: Option<String>,
    },
    #[error(transparent)]
    Fatal(#[from] Fatal),
}

/// A runtime and context with the host functions and the prelude loaded
/// but no room yet: built ahead by [`WarmPool`], or on demand.
/// [`RoomJs::load_into`] gives it a room's limits, identity and code.
pub struct Blank {
    // Field order matters: the context must drop before its runtime.
    ctx: Context,
    rt: Runtime,
}

impl Blank {
    pub fn new() -> Result<Blank, ScriptError> {
        let fail = |message: String| ScriptError::from_js(PRELUDE_NAME, &message, None);
        // A heap of its own, unmapped whole when the runtime drops (see
        // `arena`).
        #[cfg(unix)]
        let rt = Runtime::new_with_alloc(arena::RuntimeHeap::default());
        #[cfg(not(unix))]
        let rt = Runtime::new();
        let rt = rt.map_err(|e| fail(e.to_string()))?;
        // Everything `Context::full` adds but `performance` (rooms do not
        // get a real clock, see the prelude) and typed arrays and base64,
        // which are added on first use (`install_lazy_builtins`).
        use rquickjs::context::intrinsic as i;
        let ctx = Context::custom::<(
            i::Date,
            i::Eval,
            i::RegExpCompiler,
            i::RegExp,
            i::Json,
            i::Proxy,
            i::MapSet,
            i::Promise,
            i::WeakRef,
        )>(&rt)
        .map_err(|e| fail(e.to_string()))?;
        ctx.with(|ctx| -> Result<(), ScriptError> {
            let caught = |ctx: &Ctx, e: rquickjs::Error| {
                located(PRELUDE_NAME, CaughtError::from_error(ctx, e))
            };
            if ctx.store_userdata(Bridge::new("{}".into(), None)).is_err() {
                return Err(fail("runtime userdata unavailable".into()));
            }
            install_natives(&ctx).map_err(|e| caught(&ctx, e))?;
            install_lazy_builtins(&ctx).map_err(|e| caught(&ctx, e))?;
            let prelude = load_prelude(&ctx).map_err(|e| caught(&ctx, e))?;
            prelude
                .eval()
                .and_then(|(_, p)| p.finish::<()>())
                .map_err(|e| caught(&ctx, e))
        })?;
        Ok(Blank { ctx, rt })
    }
}

/// One room's JavaScript: runtime, context and the loaded kind.
pub struct RoomJs {
    // Field order matters: the context must drop before its runtime.
    ctx: Context,
    rt: Runtime,
    budget: Arc<Budget>,
    cpu: Duration,
    exports: Exports,
}

/// What a kind's module exports besides its hooks, as the host needs to
/// know it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exports {
    /// `snapshot()` and `restore(state)`: the journal is compacted.
    pub snapshot: bool,
    /// `readOnlyJoins = true`: `onJoin` only reads, so while the room's
    /// storage refuses writes a join may run without being journaled.
    pub read_only_joins: bool,
    /// `onRequest(req)`: the room answers HTTP requests.
    pub on_request: bool,
}

impl Exports {
    fn from_bits(bits: u32) -> Exports {
        Exports {
            snapshot: bits & 1 != 0,
            read_only_joins: bits & 2 != 0,
            on_request: bits & 4 != 0,
        }
    }
}

impl RoomJs {
    /// Creates the runtime, evaluates the prelude and the kind's module
    /// `entry`, and binds its hooks. Errors carry the script location.
    pub fn load(
        identity: &Identity,
        source: ModuleSource,
        entry: &str,
        limits: &ScriptLimits,
        console: Option<ConsoleSink>,
    ) -> Result<RoomJs, ScriptError> {
        RoomJs::load_into(Blank::new()?, identity, source, entry, limits, console)
    }

    /// [`RoomJs::load`] into a context built beforehand (see [`warm`]).
    pub fn load_into(
        blank: Blank,
        identity: &Identity,
        source: ModuleSource,
        entry: &str,
        limits: &ScriptLimits,
        console: Option<ConsoleSink>,
    ) -> Result<RoomJs, ScriptError> {
        let fail = |message: String| ScriptError::from_js(entry, &message, None);
        let Blank { ctx, rt } = blank;
        rt.set_memory_limit(limits.memory);
        rt.set_max_stack_size(limits.stack);
        let budget = Arc::new(Budget::new());
        let handler_budget = budget.clone();
        rt.set_interrupt_handler(Some(Box::new(move || handler_budget.expired())));
        rt.set_loader(ScriptResolver, ScriptLoader(source.clone()));
        let bridge = Bridge::new(
            serde_json::to_string(identity).unwrap_or_else(|_| "{}".into()),
            console,
        );
        budget.arm(limits.cpu_per_call);
        let loaded = ctx.with(|ctx| -> Result<u32, ScriptError> {
            let caught =
                |ctx: &Ctx, e: rquickjs::Error| located(entry, CaughtError::from_error(ctx, e));
            let rebound = match ctx.remove_userdata::<Bridge>() {
                Ok(old) => {
                    if let Some(old) = old {
                        bridge.builtins.set(old.builtins.get());
                    }
                    ctx.store_userdata(bridge).is_ok()
                }
                Err(_) => false,
            };
            if !rebound {
                return Err(fail("runtime userdata unavailable".into()));
            }
            let api: Object = ctx
                .globals()
                .get("__roomhost")
                .map_err(|e| caught(&ctx, e))?;
            // The module's top level sees the time of the load (a warm
            // context's prelude ran earlier) and a fresh random seed.
            let at: Function = api.get("at").map_err(|e| caught(&ctx, e))?;
            at.call::<_, ()>((
                now_ms() as f64,
                rand::random::<u32>(),
                rand::random::<u32>(),
            ))
            .map_err(|e| caught(&ctx, e))?;
            let module = source.declare(&ctx, entry).map_err(|e| caught(&ctx, e))?;
            let (module, promise) = module.eval().map_err(|e| caught(&ctx, e))?;
            promise.finish::<()>().map_err(|e| caught(&ctx, e))?;
            let namespace = module.namespace().map_err(|e| caught(&ctx, e))?;
            let bind: Function = api.get("bind").map_err(|e| caught(&ctx, e))?;
            bind.call::<_, u32>((namespace,))
                .map_err(|e| caught(&ctx, e))
        });
        let fired = budget.disarm();
        let exports = match loaded {
            Ok(bits) => Exports::from_bits(bits),
            Err(_) if fired => {
                return Err(fail(format!(
                    "top-level evaluation exceeded the CPU budget of {:?}",
                    limits.cpu_per_call
                )));
            }
            Err(e) => return Err(e),
        };
        Ok(RoomJs {
            ctx,
            rt,
            budget,
            cpu: limits.cpu_per_call,
            exports,
        })
    }

    pub fn has_snapshot(&self) -> bool {
        self.exports.snapshot
    }

    pub fn exports(&self) -> Exports {
        self.exports
    }

    /// The next timer due, as the script's timers stand now.
    pub fn next_timer(&self) -> Option<NextTimer> {
        self.ctx
            .with(|ctx| bridge(&ctx).next_timer.borrow().clone())
    }

    /// Lets `room.send` refuse kinds for which `exists` is false.
    pub fn set_kinds(&self, exists: KindExists) {
        self.ctx
            .with(|ctx| *bridge(&ctx).kinds.borrow_mut() = Some(exists));
    }

    /// Runs one hook for one event. `at` (ms since the epoch) and `seed` make
    /// `Date` and `Math.random` deterministic for replay.
    pub fn call(&self, conn: &Conn, hook: Hook, at: i64, seed: u64) -> Result<Called, CallError> {
        let mut bytes = None;
        let (name, arg1, arg2) = match hook {
            Hook::Join { params } => ("join", params, ""),
            Hook::Message { event, payload } => ("message", event, payload),
            Hook::Binary { event, payload } => {
                bytes = Some(payload);
                ("binary", event, "")
            }
            Hook::Leave { reason } => ("leave", reason, ""),
            Hook::Drop => ("drop", "", ""),
            Hook::Timer { name, info } => ("timer", name, info),
            Hook::TimerDrop { name } => ("timer_drop", name, ""),
            Hook::Request { req } => ("request", req, ""),
        };
        let called = self.enter(|ctx, api| {
            let at_fn: Function = api.get("at")?;
            at_fn.call::<_, ()>((at as f64, (seed >> 32) as u32, seed as u32))?;
            let call: Function = api.get("call")?;
            let arg2 = match bytes {
                Some(bytes) => bridge::new_bytes(ctx, bytes)?,
                None => rquickjs::String::from_str(ctx.clone(), arg2)?.into_value(),
            };
            let result: Value =
                call.call((name, &*conn.id, &*conn.user, conn.meta.get(), arg1, arg2))?;
            drain_jobs(ctx, &self.budget);
            let result = if result.is_undefined() {
                let settle: Function = api.get("settle")?;
                settle.call::<_, Value>(())?
            } else {
                result
            };
            let response = match result.as_string() {
                Some(json) => Body::Json(json.to_string()?),
                None => match bridge::bytes_of(ctx, &result) {
                    Some(bytes) => Body::Binary(bytes.into()),
                    None => Body::Json("{}".into()),
                },
            };
            let bridge = bridge(ctx);
            let effects = std::mem::take(&mut *bridge.effects.borrow_mut());
            let next_timer = bridge
                .timers_changed
                .replace(false)
                .then(|| bridge.next_timer.borrow().clone());
            Ok(Called {
                response,
                effects: effects.emits,
                kicks: effects.kicks,
                sends: effects.sends,
                next_timer,
            })
        })?;
        // Only `onMessage` answers a push, which may be binary; every other
        // hook's result is JSON (Phoenix's join replies are maps). Refused
        // as a throw, so the room rolls the call back.
        if matches!(called.response, Body::Binary(_))
            && !matches!(hook, Hook::Message { .. } | Hook::Binary { .. })
        {
            return Err(CallError::Script {
                message: format!("the {name} hook must return JSON, not binary"),
                stack: None,
            });
        }
        Ok(called)
    }

    /// The room's durable state: `{"members": [...], "state": <snapshot()>}`.
    pub fn snapshot(&self) -> Result<String, CallError> {
        self.enter(|_, api| {
            let snapshot: Function = api.get("snapshot")?;
            snapshot.call::<_, String>(())
        })
    }

    /// Restores what [`RoomJs::snapshot`] returned, as of time `at`.
    pub fn restore(&self, json: &str, at: i64) -> Result<(), CallError> {
        self.enter(|_, api| {
            let at_fn: Function = api.get("at")?;
            at_fn.call::<_, ()>((at as f64, 0u32, 0u32))?;
            let restore: Function = api.get("restore")?;
            restore.call::<_, ()>((json,))
        })
    }

    pub fn set_replaying(&self, replaying: bool) {
        self.ctx.with(|ctx| bridge(&ctx).replaying.set(replaying));
    }

    pub fn set_generation(&self, generation: u64) {
        self.ctx.with(|ctx| bridge(&ctx).generation.set(generation));
    }

    /// The presence `room.presence()` reads, set by the room task.
    pub fn set_presence(&self, presence: crate::presence::Shared) {
        self.ctx
            .with(|ctx| *bridge(&ctx).presence.borrow_mut() = Some(presence));
    }

    /// Bytes of the JS heap in use.
    pub fn memory_used(&self) -> u64 {
        self.rt.memory_usage().memory_used_size.max(0) as u64
    }

    /// Runs `f` with the budget armed and classifies failures.
    fn enter<T>(
        &self,
        f: impl for<'js> FnOnce(&Ctx<'js>, &Object<'js>) -> rquickjs::Result<T>,
    ) -> Result<T, CallError> {
        self.budget.arm(self.cpu);
        let result = self.ctx.with(|ctx| {
            let outcome = ctx
                .globals()
                .get::<_, Object>("__roomhost")
                .and_then(|api| f(&ctx, &api))
                .catch(&ctx);
            match outcome {
                Ok(v) => Ok(v),
                Err(caught) => {
                    *bridge(&ctx).effects.borrow_mut() = Effects::default();
                    Err(classify(caught))
                }
            }
        });
        if self.budget.disarm() {
            return Err(Fatal::CpuBudget.into());
        }
        result
    }
}

/// Runs queued promise jobs, bounded by the budget even when each job is tiny.
fn drain_jobs(ctx: &Ctx, budget: &Budget) {
    while !budget.expired() && ctx.execute_pending_job() {}
}

fn classify(caught: CaughtError) -> CallError {
    match caught {
        CaughtError::Exception(e) => {
            let message = e.message().unwrap_or_default();
            if message.contains("out of memory") {
                return Fatal::OutOfMemory.into();
            }
            let name: Option<String> = e.get("name").ok();
            let message = match name {
                Some(n) if n != "Error" && !n.is_empty() => format!("{n}: {message}"),
                _ => message,
            };
            CallError::Script {
                message,
                stack: e.stack(),
            }
        }
        // QuickJS throws a bare `null` when an allocation fails.
        CaughtError::Value(v) if v.is_null() => Fatal::OutOfMemory.into(),
        CaughtError::Value(v) => CallError::Script {
            message: describe(&v),
            stack: None,
        },
        CaughtError::Error(e) => CallError::Script {
            message: e.to_string(),
            stack: None,
        },
    }
}

/// A thrown non-Error value as text: strings as-is, objects with a `reason`
/// or `message` by that field, anything else as JSON.
fn describe(v: &Value) -> String {
    if let Some(s) = v.as_string().and_then(|s| s.to_string().ok()) {
        return s;
    }
    if let Some(obj) = v.as_object() {
        for field in ["reason", "message"] {
            if let Ok(Some(s)) = obj.get::<_, Option<String>>(field) {
                return s;
            }
        }
    }
    v.ctx()
        .json_stringify(v.clone())
        .ok()
        .flatten()
        .and_then(|s| s.to_string().ok())
        .unwrap_or_else(|| "script threw a value".into())
}

fn located(entry: &str, caught: CaughtError) -> ScriptError {
    match classify(caught) {
        CallError::Script { message, stack } => {
            ScriptError::from_js(entry, &message, stack.as_deref())
        }
        CallError::Fatal(f) => ScriptError::from_js(entry, &f.to_string(), None),
    }
}

/// Bytecode of the prelude, compiled once per process.
fn load_prelude<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<Module<'js, rquickjs::module::Declared>> {
    static BYTECODE: OnceLock<Vec<u8>> = OnceLock::new();
    if let Some(bytes) = BYTECODE.get() {
        // SAFETY: written by `Module::write` below, in this process.
        return unsafe { Module::load(ctx.clone(), bytes) };
    }
    let module = Module::declare(ctx.clone(), PRELUDE_NAME, PRELUDE)?;
    // Every room loads the prelude: without its source and debug info it
    // costs each room less memory (its frames in stack traces have no line).
    let _ = BYTECODE.set(module.write(WriteOptions {
        strip_source: true,
        strip_debug: true,
        ..WriteOptions::default()
    })?);
    Ok(module)
}

#[cfg(test)]
mod tests;
