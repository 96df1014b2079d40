//! roomhost: one small JavaScript runtime per chat room, behind a Phoenix
//! Channels WebSocket hub. See README.md for the tour and `docs/` for the
//! reference.
//!
//! # Layout
//!
//! Modules import only the layers below them (no cycle among top-level
//! modules); each layer gets what it uses as a small struct of its own.
//! Bottom to top:
//!
//! | layer | modules | what it owns |
//! |---|---|---|
//! | leaves | [`protocol`], [`topic`], [`conn`], [`auth`], [`config`], [`clock`], [`store`], [`presence`], [`feed`], [`hub`], [`metrics`], [`heap`] | the wire codec; names; identity; tokens; settings; the durable store behind the [`store::Store`] seam; presence; SSE feeds; the fan-out behind the [`hub::FanOut`] seam (the only place frames are built); every counter |
//! | engine | [`engine`] | QuickJS: one runtime per room, the host functions, the CPU budget, the module loader, warm contexts |
//! | scripts | [`scripts`] | `rooms-js/` kinds: compile, cache, refresh |
//! | rooms | [`room`] | the room task and its parts (journal, snapshots, members, gate), the registry and supervisor, hot reload, inspection; why a task ended is a [`Crash`] |
//! | web | `web` | axum: WebSocket, long-poll, SSE, HTTP post, admin API, UI assets, with its own `WebState` |
//! | cluster | [`cluster`] | cluster mode on NATS JetStream: room leases and the fenced journal behind the [`store::Backend`] seam, forwarding and the per-room backplane behind [`room::remote::Remote`] (beside `web`; nothing below imports it) |
//! | host | [`Host`] | wires the parts together; owns the JS runtime and the watcher |
//!
//! `main.rs` is the CLI over [`Host`]. One message's path: a transport
//! decodes a frame (`protocol`) and sends a [`room`] command to the room's
//! mailbox; the room task runs the hook in its [`engine::RoomJs`], journals
//! the event (`store`), holds what the hook asked to send in its gate until
//! the event is durable, then hands each [`hub::Output`] to the hub, which
//! encodes it once and queues it on every channel's connection.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let host = roomhost::Host::builder()
//!     .scripts_dir("rooms-js")
//!     .data_dir("data")
//!     .build()
//!     .await?;
//! let app = axum::Router::new().merge(host.router());
//! let reply = host
//!     .room("chat:general")?
//!     .message(roomhost::Conn::system(), "new_msg", serde_json::json!({"text": "hi"}))
//!     .await?;
//! # let _ = (app, reply); Ok(()) }
//! ```

pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod engine;
pub mod feed;
#[doc(hidden)]
pub mod fuzzing;
pub mod heap;
mod host;
pub mod hub;
pub mod metrics;
pub mod presence;
mod priority;
pub mod protocol;
pub mod room;
pub mod scripts;
pub mod store;
pub mod topic;
mod web;

pub use config::{Config, Durability, ScriptLimits};
pub use conn::Conn;
pub use host::{BuildError, Host, HostBuilder};
pub use room::{Crash, RoomError, RoomHandle, RoomInfo, RoomState};
