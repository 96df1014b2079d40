//! Compiling a kind: evaluating `<kind>.js` and the modules it imports in a
//! scratch runtime with the same limits as a room, so syntax errors,
//! top-level exceptions and bad exports are found before any room runs the
//! code, and keeping the bytecode of its module graph for rooms to load.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::config::ScriptLimits;
use crate::engine::{Bytecode, Identity, ModuleSource, RoomJs, ScriptError};

/// Why a kind cannot be used.
#[derive(Clone, Debug, thiserror::Error)]
pub enum KindError {
    #[error("unknown room kind")]
    Unknown,
    /// The kind's file was deleted: live rooms keep their code, new rooms
    /// cannot start.
    #[error("room kind removed")]
    Removed,
    #[error("script error: {0}")]
    Script(ScriptError),
}

/// One kind compiled: bytecode of its module graph and a version id.
#[derive(Debug)]
pub struct CompiledKind {
    pub kind: String,
    /// Short content hash of every module in the graph; changes with any edit.
    pub version: String,
    /// Module name of the kind itself (`<kind>.js`).
    pub entry: String,
    /// Bytecode of every module in the graph, shared by the rooms of the kind.
    pub modules: Arc<Bytecode>,
    /// CRC32C of each module's source, to notice edits.
    pub sources: BTreeMap<String, u32>,
    /// Whether the kind exports `snapshot`/`restore`.
    pub has_snapshot: bool,
    /// Whether the kind exports `readOnlyJoins = true`.
    pub read_only_joins: bool,
    /// Whether the kind exports `onRequest(req)`.
    pub on_request: bool,
}

/// Compiles and evaluates `entry` (relative to `root`) in a scratch runtime.
pub fn compile_file(
    root: &Path,
    entry: &str,
    kind: &str,
    limits: &ScriptLimits,
) -> Result<CompiledKind, ScriptError> {
    let compiled = Arc::new(Mutex::new(BTreeMap::new()));
    let source = ModuleSource::Disk {
        root: root.to_path_buf(),
        compiled: compiled.clone(),
    };
    let identity = Identity::new(kind, "__check__");
    let js = RoomJs::load(&identity, source, entry, limits, None)?;
    let exports = js.exports();
    drop(js);
    let modules = std::mem::take(&mut *compiled.lock().unwrap_or_else(|p| p.into_inner()));
    let mut digest = 0u32;
    for (name, (_, hash)) in &modules {
        digest = crc32c::crc32c_append(digest, name.as_bytes());
        digest = crc32c::crc32c_append(digest, &hash.to_le_bytes());
    }
    Ok(CompiledKind {
        kind: kind.to_string(),
        version: format!("{digest:08x}"),
        entry: entry.to_string(),
        sources: modules
            .iter()
            .map(|(k, (_, crc))| (k.clone(), *crc))
            .collect(),
        modules: Arc::new(
            modules
                .into_iter()
                .map(|(k, (bytes, _))| (k, bytes))
                .collect(),
        ),
        has_snapshot: exports.snapshot,
        read_only_joins: exports.read_only_joins,
        on_request: exports.on_request,
    })
}
