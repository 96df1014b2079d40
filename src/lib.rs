//! roomhost: one small JavaScript runtime per chat room, behind a Phoenix
//! Channels WebSocket hub. See README.md for the tour.
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
