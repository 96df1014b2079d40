//! `roomhost inspect`: a room's durable state, read without touching it.
//!
//! Loads the room's snapshot and journal read-only, replays them in a
//! scratch runtime with the kind's current code, and reports the state
//! `snapshot()` returns and a summary of the journal.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::replay::replay;
use crate::config::ScriptLimits;
use crate::engine::{Identity, ModuleSource, RoomJs};
use crate::scripts::Scripts;
use crate::store::{DiskJournal, Event, Snapshot};
use crate::topic::Topic;

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub topic: String,
    pub dir: String,
    pub snapshot: Option<SnapshotSummary>,
    pub journal: JournalSummary,
    /// Damage a server would repair on start.
    pub damage: Vec<String>,
    /// Members at the end of the journal: `[id, user]`.
    pub members: Vec<(String, String)>,
    /// `{"members": [...], "state": <snapshot()>}`, or `None` when the kind
    /// cannot be loaded.
    pub state: Option<serde_json::Value>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SnapshotSummary {
    pub seq: u64,
    pub at: i64,
    pub version: String,
    pub bytes: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct JournalSummary {
    /// Events after the snapshot.
    pub events: usize,
    pub first_seq: Option<u64>,
    pub last_seq: u64,
    pub last_at: Option<i64>,
    pub by_kind: BTreeMap<String, usize>,
    /// Bytes of every file in the room's directory.
    pub bytes_on_disk: u64,
}

pub fn inspect(scripts_dir: &Path, data_dir: &Path, topic: &Topic) -> std::io::Result<Inspection> {
    let dir = crate::store::paths::room_dir(data_dir, topic.kind(), topic.name());
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{topic} has no durable state in {}", data_dir.display()),
        ));
    }
    let mut journal = DiskJournal::read_only(dir.clone());
    let recovered = journal.recover(None)?;
    let snapshot = recovered
        .snapshot
        .as_ref()
        .and_then(|bytes| Snapshot::decode(bytes).ok().map(|s| (s, bytes.len())))
        .map(|(s, bytes)| SnapshotSummary {
            seq: s.seq,
            at: s.at,
            version: s.version.to_string(),
            bytes,
        });
    let mut summary = JournalSummary {
        events: recovered.events.len(),
        last_seq: recovered.last_seq,
        bytes_on_disk: journal.bytes(),
        ..JournalSummary::default()
    };
    for bytes in &recovered.events {
        if let Ok(event) = Event::decode(bytes) {
            summary.first_seq.get_or_insert(event.seq);
            summary.last_at = Some(event.at);
            let kind = serde_json::to_value(event.kind).ok();
            let kind = kind.as_ref().and_then(|k| k.as_str()).unwrap_or("?");
            *summary.by_kind.entry(kind.to_string()).or_default() += 1;
        }
    }
    summary.bytes_on_disk = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let mut inspection = Inspection {
        topic: topic.to_string(),
        dir: dir.display().to_string(),
        snapshot,
        journal: summary,
        damage: recovered.repairs.clone(),
        members: Vec::new(),
        state: None,
        error: None,
    };
    let loaded = Scripts::new(scripts_dir, ScriptLimits::default())
        .map_err(|e| e.to_string())
        .and_then(|scripts| scripts.kind(topic.kind()).map_err(|e| e.to_string()))
        .and_then(|kind| {
            let identity = Identity::new(topic.kind(), topic.name());
            let js = RoomJs::load(
                &identity,
                ModuleSource::Compiled(kind.modules.clone()),
                &kind.entry,
                &ScriptLimits::default(),
                None,
            )
            .map_err(|e| e.to_string())?;
            let replayed = replay(&js, &recovered, topic).map_err(|e| e.to_string())?;
            let state: String = js.snapshot().map_err(|e| e.to_string())?;
            Ok::<_, String>((replayed, state))
        });
    match loaded {
        Ok((replayed, state)) => {
            inspection.members = replayed
                .members
                .iter()
                .map(|c| (c.id.to_string(), c.user.to_string()))
                .collect();
            inspection.state = serde_json::from_str(&state).ok();
        }
        Err(e) => inspection.error = Some(e),
    }
    Ok(inspection)
}
