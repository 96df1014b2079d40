//! Who is behind an event: the identity a room script sees as `conn`.

use std::sync::Arc;

use serde_json::value::RawValue;

/// A connection's identity as room scripts see it: `{id, user, meta}`.
/// Cheap to clone; shared by every channel of one connection.
#[derive(Clone, Debug)]
pub struct Conn {
    /// Unique per connection (per browser tab), stable across its rejoins.
    pub id: Arc<str>,
    /// Who the user is: the `user` connect param or a signed token's subject.
    pub user: Arc<str>,
    /// JSON object with transport facts (e.g. `{"transport":"websocket"}`).
    pub meta: Arc<RawValue>,
}

impl Conn {
    /// A connection identity with a fresh random id.
    pub fn new(user: impl Into<Arc<str>>, meta: Box<RawValue>) -> Conn {
        Conn {
            id: new_id().into(),
            user: user.into(),
            meta: meta.into(),
        }
    }

    /// The host itself (library calls, HTTP posts without a user).
    pub fn system() -> Conn {
        Conn {
            id: "system".into(),
            user: "system".into(),
            meta: RawValue::from_string(r#"{"transport":"system"}"#.into())
                .expect("valid JSON")
                .into(),
        }
    }
}

/// A random 64-bit identifier in hex.
pub fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A random, readable handle for users who did not pick one.
pub fn random_handle() -> String {
    const ADJECTIVES: [&str; 16] = [
        "swift", "calm", "brave", "quiet", "lucky", "bright", "eager", "gentle", "jolly", "keen",
        "merry", "noble", "proud", "sunny", "witty", "zesty",
    ];
    const ANIMALS: [&str; 16] = [
        "otter", "falcon", "lynx", "panda", "heron", "koala", "badger", "gecko", "puffin",
        "marten", "ibis", "walrus", "yak", "quokka", "tapir", "wren",
    ];
    let n: u32 = rand::random();
    format!(
        "{}-{}-{}",
        ADJECTIVES[(n & 15) as usize],
        ANIMALS[((n >> 4) & 15) as usize],
        (n >> 8) % 100
    )
}
