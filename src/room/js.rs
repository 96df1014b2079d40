//! The QuickJS side of one room: its own runtime and context, the host
//! functions scripts call, and the hook calls the room task makes.
//!
//! Everything crosses the boundary as strings and numbers: payloads arrive as
//! JSON text and are `JSON.parse`d in JS, results and broadcasts leave as JSON
//! text. This is faster than converting value trees and keeps the Rust side
//! free of JS types. Host functions never panic (a panic inside a host
//! function poisons the runtime): they only push into [`Bridge`].
//!
//! Every entry into JS is bounded by the CPU budget (interrupt handler), the
//! memory limit and the stack limit. Exceeding CPU or memory is a [`Fatal`]
//! error: the room must be rebuilt, because its heap may be half-updated.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rquickjs::prelude::Opt;
use rquickjs::{
    CatchResultExt, CaughtError, Context, Ctx, Function, JsLifetime, Module, Object, Runtime,
    Value, WriteOptions,
};

use super::now_ms;
use crate::config::ScriptLimits;
use crate::conn::Conn;
use crate::scripts::{ModuleSource, ScriptError, ScriptLoader, ScriptResolver};

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

/// An output a hook asked for; the room task releases it after the event is
/// durable (or drops it if the hook fails or the event is a replay).
#[derive(Debug, PartialEq)]
pub enum JsEffect {
    Broadcast {
        event: String,
        payload: String,
        except: Option<String>,
    },
    Push {
        conn_id: String,
        event: String,
        payload: String,
    },
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
    Leave {
        reason: &'a str,
    },
    /// A leave whose `onLeave` failed earlier: only the membership changes.
    Drop,
}

/// A hook call that returned.
#[derive(Debug)]
pub struct Called {
    /// The hook's return value as JSON (`{}` for `undefined`).
    pub response: String,
    pub effects: Vec<JsEffect>,
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

/// Per-call CPU deadline, checked by the interrupt handler. Measured in CPU
/// time of the thread running the JS, so a busy machine (or a descheduled
/// worker) never makes a well-behaved hook look like a runaway one.
///
/// Reading the thread's CPU clock is a system call (no vDSO for it), ~1 µs
/// on a VM, and every hook arms and checks the budget: 4–5% of the server's
/// CPU under `maxtp`. So neither reads it on the common path:
/// - `arm` takes the thread's last reading plus the wall time since, which
///   is never less than the CPU time now (a thread cannot run longer than
///   the wall clock), so a call is never charged for more than it used; it
///   reads the clock afresh when the last reading is over [`REREAD`] old, so
///   a runaway call gets at most that much extra.
/// - `expired` cannot be true while the wall time since `arm` is within the
///   allowance, and only reads the clock after that.
struct Budget {
    /// CPU nanoseconds the armed call may use; `u64::MAX` while idle.
    allowance: AtomicU64,
    /// Wall clock at `arm` (nanoseconds since `origin`).
    armed_at: AtomicU64,
    /// Thread CPU time at `arm`, or slightly more (see above).
    cpu_at_arm: AtomicU64,
    origin: std::time::Instant,
    /// Set when the handler interrupted JS, so the error can be told apart
    /// from an ordinary exception.
    fired: AtomicBool,
}

/// How old a thread's CPU clock reading may be for [`Budget::arm`] to build
/// on it instead of reading the clock.
const REREAD: Duration = Duration::from_millis(1);

thread_local! {
    /// This thread's last CPU clock reading and the wall clock then.
    static LAST_CPU_READ: Cell<Option<(u64, std::time::Instant)>> = const { Cell::new(None) };
}

impl Budget {
    fn new() -> Budget {
        Budget {
            allowance: AtomicU64::new(u64::MAX),
            armed_at: AtomicU64::new(0),
            cpu_at_arm: AtomicU64::new(0),
            origin: std::time::Instant::now(),
            fired: AtomicBool::new(false),
        }
    }

    fn wall(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn arm(&self, allowance: Duration) {
        self.fired.store(false, Ordering::Relaxed);
        let now = std::time::Instant::now();
        let cpu = match LAST_CPU_READ.get() {
            Some((cpu, at)) if now.duration_since(at) <= REREAD => {
                cpu + now.duration_since(at).as_nanos() as u64
            }
            _ => read_thread_cpu(),
        };
        self.cpu_at_arm.store(cpu, Ordering::Relaxed);
        let armed_at = now.saturating_duration_since(self.origin).as_nanos() as u64;
        self.armed_at.store(armed_at, Ordering::Relaxed);
        self.allowance
            .store(allowance.as_nanos() as u64, Ordering::Relaxed);
    }

    fn expired(&self) -> bool {
        let allowance = self.allowance.load(Ordering::Relaxed);
        let wall = self
            .wall()
            .saturating_sub(self.armed_at.load(Ordering::Relaxed));
        if wall <= allowance {
            return false; // the thread cannot have run longer than this
        }
        let used = read_thread_cpu().saturating_sub(self.cpu_at_arm.load(Ordering::Relaxed));
        let expired = used > allowance;
        if expired {
            self.fired.store(true, Ordering::Relaxed);
        }
        expired
    }

    fn disarm(&self) -> bool {
        self.allowance.store(u64::MAX, Ordering::Relaxed);
        self.fired.load(Ordering::Relaxed)
    }
}

/// A runtime and context with the host functions and the prelude loaded
/// but no room yet: built ahead by [`super::warm::WarmPool`], or on demand.
/// [`RoomJs::load_into`] gives it a room's limits, identity and code.
pub struct Blank {
    // Field order matters: the context must drop before its runtime.
    ctx: Context,
    rt: Runtime,
}

impl Blank {
    pub fn new() -> Result<Blank, ScriptError> {
        let fail = |message: String| ScriptError::from_js(PRELUDE_NAME, &message, None);
        let rt = Runtime::new().map_err(|e| fail(e.to_string()))?;
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

/// Host state reachable from host functions (runtime userdata). Only touched
/// while the runtime lock is held, inside `ctx.with`.
struct Bridge {
    effects: RefCell<Vec<JsEffect>>,
    /// During replay, console output is suppressed (effects are dropped by
    /// the room task).
    replaying: Cell<bool>,
    generation: Cell<u64>,
    /// The [`Builtins`] groups added so far (one bit each).
    builtins: Cell<u8>,
    identity: String,
    presence: RefCell<String>,
    console: Option<ConsoleSink>,
}

impl Bridge {
    fn new(identity: String, console: Option<ConsoleSink>) -> Bridge {
        Bridge {
            effects: RefCell::new(Vec::new()),
            replaying: Cell::new(false),
            generation: Cell::new(0),
            builtins: Cell::new(0),
            identity,
            presence: RefCell::new("{}".into()),
            console,
        }
    }
}

// SAFETY: `Bridge` holds no JS values, so it is the same type for every 'js.
unsafe impl<'js> JsLifetime<'js> for Bridge {
    type Changed<'to> = Bridge;
}

/// One room's JavaScript: runtime, context and the loaded kind.
pub struct RoomJs {
    // Field order matters: the context must drop before its runtime.
    ctx: Context,
    rt: Runtime,
    budget: Arc<Budget>,
    cpu: Duration,
    has_snapshot: bool,
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

    /// [`RoomJs::load`] into a context built beforehand (see [`super::warm`]).
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
        let loaded = ctx.with(|ctx| -> Result<bool, ScriptError> {
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
            bind.call::<_, bool>((namespace,))
                .map_err(|e| caught(&ctx, e))
        });
        let fired = budget.disarm();
        let has_snapshot = match loaded {
            Ok(has) => has,
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
            has_snapshot,
        })
    }

    pub fn has_snapshot(&self) -> bool {
        self.has_snapshot
    }

    /// Runs one hook for one event. `at` (ms since the epoch) and `seed` make
    /// `Date` and `Math.random` deterministic for replay.
    pub fn call(&self, conn: &Conn, hook: Hook, at: i64, seed: u64) -> Result<Called, CallError> {
        let (name, arg1, arg2) = match hook {
            Hook::Join { params } => ("join", params, ""),
            Hook::Message { event, payload } => ("message", event, payload),
            Hook::Leave { reason } => ("leave", reason, ""),
            Hook::Drop => ("drop", "", ""),
        };
        self.enter(|ctx, api| {
            let at_fn: Function = api.get("at")?;
            at_fn.call::<_, ()>((at as f64, (seed >> 32) as u32, seed as u32))?;
            let call: Function = api.get("call")?;
            let result: Value =
                call.call((name, &*conn.id, &*conn.user, conn.meta.get(), arg1, arg2))?;
            drain_jobs(ctx, &self.budget);
            let result = if result.is_undefined() {
                let settle: Function = api.get("settle")?;
                settle.call::<_, Value>(())?
            } else {
                result
            };
            let response = result
                .as_string()
                .map(|s| s.to_string())
                .transpose()?
                .unwrap_or_else(|| "{}".into());
            let effects = std::mem::take(&mut *bridge(ctx).effects.borrow_mut());
            Ok(Called { response, effects })
        })
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

    /// What `room.presence()` returns (JSON), kept current by the room task.
    pub fn set_presence(&self, json: String) {
        self.ctx
            .with(|ctx| *bridge(&ctx).presence.borrow_mut() = json);
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
                    bridge(&ctx).effects.borrow_mut().clear();
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

/// CPU time consumed by the calling thread, remembered for [`Budget::arm`].
fn read_thread_cpu() -> u64 {
    let cpu = thread_cpu_nanos();
    LAST_CPU_READ.set(Some((cpu, std::time::Instant::now())));
    cpu
}

/// CPU time consumed by the calling thread.
fn thread_cpu_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // every Linux kernel supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn bridge<'a>(ctx: &'a Ctx<'_>) -> rquickjs::runtime::UserDataGuard<'a, Bridge> {
    ctx.userdata::<Bridge>()
        .expect("the bridge is stored before any JS runs")
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

/// The host functions behind `room.*` and `console.*`. Each only records
/// into the bridge and returns; none can panic.
fn install_natives(ctx: &Ctx) -> rquickjs::Result<()> {
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
            bridge(&ctx).presence.borrow().clone()
        })?,
    )?;
    native.set(
        "broadcast",
        Function::new(
            ctx.clone(),
            |ctx: Ctx, event: String, payload: String, except: Option<String>| {
                bridge(&ctx).effects.borrow_mut().push(JsEffect::Broadcast {
                    event,
                    payload,
                    except,
                });
            },
        )?,
    )?;
    native.set(
        "push",
        Function::new(
            ctx.clone(),
            |ctx: Ctx, conn_id: String, event: String, payload: String| {
                bridge(&ctx).effects.borrow_mut().push(JsEffect::Push {
                    conn_id,
                    event,
                    payload,
                });
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
fn install_lazy_builtins<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
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
            serde_json::from_str(&message(&js, "{}").unwrap().response).unwrap();
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
        assert_eq!(called.response, r#"{"n":2,"topic":"t:x"}"#);
        assert_eq!(called.effects.len(), 1);
        assert!(
            matches!(&called.effects[0], JsEffect::Broadcast { event, payload, except: Some(_) }
            if event == "count" && payload == r#"{"n":2,"user":"alice"}"#)
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
        let ra = message(&a, "{}").unwrap().response;
        let rb = message(&b, "{}").unwrap().response;
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
        assert_ne!(other.response, ra, "another seed draws other numbers");
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
        let js =
            load("export function onMessage() { const f = (n) => f(n + 1) + 1; return f(0); }")
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
        assert_eq!(joined.response, r#"{"n":1}"#);
        message(&a, r#"{"v":1}"#).unwrap();
        let snap = a.snapshot().unwrap();
        let b = load(src).unwrap();
        b.restore(&snap, 5).unwrap();
        assert_eq!(b.snapshot().unwrap(), snap);
        assert!(snap.contains(r#""state":{"items":[1]}"#), "{snap}");
        let bob = Conn::new("bob", empty_object());
        let joined = b.call(&bob, Hook::Join { params: "{}" }, 1, 1).unwrap();
        assert_eq!(joined.response, r#"{"n":2}"#, "restored members count");
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
        assert_eq!(called.response, r#"{"ok":true}"#);
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
            serde_json::from_str(&called.unwrap().response).unwrap()
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
        assert_eq!(message(&js, "{}").unwrap().response, r#"{"b":"aGk="}"#);
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
            message(&js, "{}").unwrap().response,
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
            message(&js, "{}").unwrap().response,
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
        assert!(called.response.contains("threw"), "{}", called.response);
        assert!(message(&js, "{}").is_ok(), "the runtime is still usable");
    }
}
