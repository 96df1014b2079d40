//! Room kinds on disk: `rooms-js/<kind>.js` and the modules it imports.
//!
//! [`Scripts`] compiles each kind once (see [`compile`]) and keeps its last
//! good version. [`Scripts::refresh`] re-reads the sources of every known
//! kind and reports what changed: a new version (rooms switch to it), a
//! script error (rooms keep the old version), or a deleted kind (live rooms
//! keep running, new rooms are refused). The file watcher that calls it, and
//! moves the rooms to new code, belongs to the rooms (`room::reload`).
//!
//! Sits on the engine (which evaluates the code) and below the rooms.

pub mod compile;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use crate::engine::ScriptError;
pub use compile::{CompiledKind, KindError, compile_file};

use crate::config::ScriptLimits;
use crate::topic::is_valid_kind;

/// What [`Scripts::refresh`] found for one kind.
#[derive(Debug, Clone)]
pub enum KindChange {
    /// A new version compiled and passed its checks.
    Reloaded(Arc<CompiledKind>),
    /// The new version failed; the previous one keeps serving.
    Failed { kind: String, error: ScriptError },
    /// The kind's file is gone.
    Removed { kind: String },
}

/// One kind as the API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KindStatus {
    pub kind: String,
    /// Version serving (the last good compile), if any.
    pub version: Option<String>,
    /// The newest compile error, while it is unfixed.
    pub script_error: Option<ScriptError>,
    pub removed: bool,
    pub has_snapshot: Option<bool>,
}

/// The scripts directory and the compiled kinds, shared by every room.
#[derive(Clone)]
pub struct Scripts {
    inner: Arc<ScriptsInner>,
}

struct ScriptsInner {
    /// Canonical path of the scripts directory.
    root: PathBuf,
    limits: ScriptLimits,
    /// Per-kind overrides of `limits` (`--kind-limits`).
    kind_limits: BTreeMap<String, ScriptLimits>,
    /// A std mutex, never held across a compile: compiles happen outside it,
    /// and the result is stored if no newer one arrived meanwhile.
    kinds: Mutex<HashMap<String, KindEntry>>,
}

#[derive(Default)]
struct KindEntry {
    /// The last good version.
    compiled: Option<Arc<CompiledKind>>,
    /// Compile error newer than `compiled`.
    error: Option<ScriptError>,
    /// CRC32C of the sources that produced `error`, so an unchanged broken
    /// file is not compiled again at every refresh.
    error_sources: BTreeMap<String, u32>,
    removed: bool,
}

impl Scripts {
    pub fn new(dir: &Path, limits: ScriptLimits) -> std::io::Result<Scripts> {
        Scripts::with_kind_limits(dir, limits, BTreeMap::new())
    }

    /// Like [`Scripts::new`], with per-kind limits overriding `limits`.
    pub fn with_kind_limits(
        dir: &Path,
        limits: ScriptLimits,
        kind_limits: BTreeMap<String, ScriptLimits>,
    ) -> std::io::Result<Scripts> {
        let root = dir.canonicalize().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("scripts directory {}: {e}", dir.display()),
            )
        })?;
        Ok(Scripts {
            inner: Arc::new(ScriptsInner {
                root,
                limits,
                kind_limits,
                kinds: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The limits rooms of `kind` run under.
    pub fn limits(&self, kind: &str) -> &ScriptLimits {
        self.inner
            .kind_limits
            .get(kind)
            .unwrap_or(&self.inner.limits)
    }

    fn kinds(&self) -> std::sync::MutexGuard<'_, HashMap<String, KindEntry>> {
        self.inner.kinds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kind's serving version, compiling it on first use. Used by rooms
    /// that (re)start: a removed or broken kind still has its last good code.
    pub fn kind(&self, kind: &str) -> Result<Arc<CompiledKind>, KindError> {
        if let Some(compiled) = self.kinds().get(kind).and_then(|e| e.compiled.clone()) {
            return Ok(compiled);
        }
        match self.compile(kind) {
            Ok(compiled) => {
                let compiled = Arc::new(compiled);
                let mut kinds = self.kinds();
                let entry = kinds.entry(kind.to_string()).or_default();
                // Another room may have compiled it meanwhile: keep one.
                let serving = entry.compiled.get_or_insert(compiled).clone();
                entry.error = None;
                entry.removed = false;
                Ok(serving)
            }
            Err(KindError::Script(error)) => {
                let mut kinds = self.kinds();
                let entry = kinds.entry(kind.to_string()).or_default();
                entry.error = Some(error.clone());
                Err(KindError::Script(error))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `kind` names a kind rooms can start: a valid name whose file
    /// exists (or whose code is cached and not removed).
    pub fn exists(&self, kind: &str) -> bool {
        if let Some(entry) = self.kinds().get(kind) {
            return !entry.removed;
        }
        is_valid_kind(kind) && self.inner.root.join(format!("{kind}.js")).is_file()
    }

    /// The kind for a room that starts for the first time: refused once the
    /// kind's file was deleted.
    pub fn kind_for_new_room(&self, kind: &str) -> Result<Arc<CompiledKind>, KindError> {
        if self.kinds().get(kind).is_some_and(|e| e.removed) {
            return Err(KindError::Removed);
        }
        self.kind(kind)
    }

    /// Compiles `<kind>.js` from disk without caching it.
    pub fn compile(&self, kind: &str) -> Result<CompiledKind, KindError> {
        if !is_valid_kind(kind) || !self.inner.root.join(format!("{kind}.js")).is_file() {
            return Err(KindError::Unknown);
        }
        compile_file(
            &self.inner.root,
            &format!("{kind}.js"),
            kind,
            self.limits(kind),
        )
        .map_err(KindError::Script)
    }

    /// Re-reads the sources of every known kind; recompiles what changed.
    pub fn refresh(&self) -> Vec<KindChange> {
        let known: Vec<(String, BTreeMap<String, u32>, bool)> = self
            .kinds()
            .iter()
            .map(|(kind, entry)| {
                let sources = match (&entry.error, &entry.compiled) {
                    (Some(_), _) => entry.error_sources.clone(),
                    (None, Some(c)) => c.sources.clone(),
                    (None, None) => BTreeMap::new(),
                };
                (kind.clone(), sources, entry.removed)
            })
            .collect();
        let mut changes = Vec::new();
        for (kind, sources, removed) in known {
            let entry_file = self.inner.root.join(format!("{kind}.js"));
            if !entry_file.is_file() {
                if !removed {
                    self.kinds().entry(kind.clone()).or_default().removed = true;
                    changes.push(KindChange::Removed { kind });
                }
                continue;
            }
            let current = self.checksums(&kind, &sources);
            if !removed && !sources.is_empty() && current == sources {
                continue;
            }
            match self.compile(&kind) {
                Ok(compiled) => {
                    let compiled = Arc::new(compiled);
                    let mut kinds = self.kinds();
                    let entry = kinds.entry(kind.clone()).or_default();
                    let same = entry
                        .compiled
                        .as_ref()
                        .is_some_and(|c| c.version == compiled.version);
                    entry.error = None;
                    entry.removed = false;
                    if !same || removed {
                        entry.compiled = Some(compiled.clone());
                        changes.push(KindChange::Reloaded(compiled));
                    }
                }
                Err(KindError::Script(error)) => {
                    let mut kinds = self.kinds();
                    let entry = kinds.entry(kind.clone()).or_default();
                    entry.error = Some(error.clone());
                    entry.error_sources = self.checksums(&kind, &current);
                    entry.removed = false;
                    changes.push(KindChange::Failed { kind, error });
                }
                Err(_) => {}
            }
        }
        changes
    }

    /// CRC32C of the kind's entry file and of every module in `known`
    /// (absent files count as 0).
    fn checksums(&self, kind: &str, known: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        let mut names: Vec<String> = known.keys().cloned().collect();
        names.push(format!("{kind}.js"));
        names
            .into_iter()
            .map(|name| {
                let crc = std::fs::read(self.inner.root.join(&name))
                    .map(|bytes| crc32c::crc32c(&bytes))
                    .unwrap_or(0);
                (name, crc)
            })
            .collect()
    }

    /// Every kind: the top-level `*.js` files and those compiled before.
    pub fn list(&self) -> Vec<KindStatus> {
        let mut names: Vec<String> = std::fs::read_dir(&self.inner.root)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter_map(|name| name.strip_suffix(".js").map(str::to_string))
                    .filter(|kind| is_valid_kind(kind))
                    .collect()
            })
            .unwrap_or_default();
        let kinds = self.kinds();
        names.extend(kinds.keys().cloned());
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|kind| {
                let entry = kinds.get(&kind);
                let compiled = entry.and_then(|e| e.compiled.as_ref());
                KindStatus {
                    version: compiled.map(|c| c.version.clone()),
                    has_snapshot: compiled.map(|c| c.has_snapshot),
                    script_error: entry.and_then(|e| e.error.clone()),
                    removed: entry.is_some_and(|e| e.removed),
                    kind,
                }
            })
            .collect()
    }

    /// The newest unfixed compile error of a kind.
    pub fn error(&self, kind: &str) -> Option<ScriptError> {
        self.kinds().get(kind).and_then(|e| e.error.clone())
    }
}
