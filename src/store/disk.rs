//! The on-disk store of one room: `journal-<first seq>.log` segments and
//! `snapshot-<seq>.snap` files in the room's directory.
//!
//! Appends are positional `write`s done by the room task; fdatasync and
//! snapshot files run as blocking [`Job`]s. A segment is zero-filled ahead
//! of its records (see `Segment`), so most fdatasyncs write data only. A segment is rotated at every
//! snapshot, and the two newest snapshots are kept together with the journal
//! since the older one, so a corrupt newest snapshot falls back to the
//! previous one and a longer replay.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::paths::{self, FileKind};
use super::{Event, Job, Recovered, Snapshot, frame};

/// Space written with zeros ahead of the records: a record that lands there
/// changes neither the file's size nor its block map, so its fdatasync
/// writes the data and flushes, without the inode (on ext4 without a
/// journal an extra write, with one a journal commit). Ahead of a segment's
/// end lies up to three times what it holds, at least to the next 4 KiB and
/// at most [`MAX_AHEAD`]: a small room's segment stays one block, and a busy
/// one grows its file a few times per segment instead of at every fsync.
/// Readers stop at a zeroed header (see [`frame::decode_all`]).
const MAX_AHEAD: u64 = 1 << 20;
/// The file naming when a stopped room must run again, if it must.
const WAKEUP: &str = "wakeup";
const BLOCK: u64 = 4096;
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// The segment appends go to.
struct Segment {
    file: Arc<File>,
    /// Where the next record goes: the end of the records.
    end: u64,
    /// The file's size: `end` plus the zeroed space after it.
    size: u64,
}

impl Segment {
    /// Opens (or creates) a segment whose records end at `end` (a new
    /// segment at its size: 0, or after whatever a file of that name holds).
    fn open(path: &Path, end: Option<u64>) -> io::Result<Segment> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(Segment {
            file: Arc::new(file),
            end: end.unwrap_or(size).min(size),
            size,
        })
    }

    /// Writes `framed` at the end; returns the bytes the file grew by.
    fn append(&mut self, framed: &[u8]) -> io::Result<u64> {
        self.file.write_all_at(framed, self.end)?;
        self.end += framed.len() as u64;
        if self.end <= self.size {
            return Ok(0);
        }
        let target = (self.end * 4)
            .min(self.end + MAX_AHEAD)
            .next_multiple_of(BLOCK);
        let mut at = self.end;
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64);
            if let Err(e) = self.file.write_all_at(&ZEROS[..n as usize], at) {
                // The zeroes only spare later fsyncs an inode update; the
                // record is written. On a nearly full disk, fill less.
                tracing::debug!(error = %e, "zero-filling a journal segment ahead stopped short");
                break;
            }
            at += n;
        }
        let grown = at.saturating_sub(self.size);
        self.size = self.size.max(at);
        Ok(grown)
    }
}

pub struct DiskJournal {
    dir: PathBuf,
    /// `None` until the first append after open or rotation.
    current: Option<Segment>,
    /// Files written since their last fdatasync.
    dirty: Vec<Arc<File>>,
    /// A new segment's entry in the room directory is not yet synced.
    dir_dirty: bool,
    /// The room directory's own entry in the kind directory (and the
    /// kind's in `rooms`) is not known to be synced: the directory is new,
    /// or this journal was just opened (an earlier generation may have
    /// created it and crashed before its sync), so the next directory sync
    /// covers the parents too.
    parents_dirty: bool,
    bytes: u64,
    /// Inspecting a room another process may be serving: report damage,
    /// repair nothing.
    read_only: bool,
    /// The `wakeup` file was written since the last sync.
    wakeup_dirty: bool,
}

impl DiskJournal {
    pub fn new(dir: PathBuf) -> DiskJournal {
        DiskJournal {
            dir,
            current: None,
            dirty: Vec::new(),
            dir_dirty: false,
            parents_dirty: true,
            bytes: 0,
            read_only: false,
            wakeup_dirty: false,
        }
    }

    /// A journal that is only read (`roomhost inspect`).
    pub fn read_only(dir: PathBuf) -> DiskJournal {
        DiskJournal {
            read_only: true,
            ..DiskJournal::new(dir)
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn append(&mut self, framed: &[u8], first_seq: u64) -> io::Result<()> {
        let segment = match &mut self.current {
            Some(segment) => segment,
            None => {
                self.parents_dirty |= ensure_dir(&self.dir)?;
                let path = self.dir.join(paths::segment_name(first_seq));
                self.dir_dirty = true;
                self.current.insert(Segment::open(&path, None)?)
            }
        };
        self.bytes += segment.append(framed)?;
        let file = &segment.file;
        if !self.dirty.iter().any(|f| Arc::ptr_eq(f, file)) {
            self.dirty.push(file.clone());
        }
        Ok(())
    }

    pub fn sync_job(&mut self) -> Option<Job> {
        if self.dirty.is_empty() && !self.dir_dirty {
            return None;
        }
        let files = std::mem::take(&mut self.dirty);
        let wakeup = std::mem::take(&mut self.wakeup_dirty).then(|| self.dir.join(WAKEUP));
        let dir = std::mem::take(&mut self.dir_dirty)
            .then(|| (self.dir.clone(), std::mem::take(&mut self.parents_dirty)));
        Some(Box::new(move || {
            for file in files {
                file.sync_data()?;
            }
            if let Some(wakeup) = wakeup {
                match File::open(&wakeup) {
                    Ok(file) => file.sync_data()?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some((dir, parents)) = dir {
                sync_dir(&dir, parents)?;
            }
            Ok(())
        }))
    }

    pub fn rotate(&mut self) {
        self.current = None;
    }

    /// Records when the room must run again although nobody joins it
    /// (`None`: it need not). Written now, made durable by the next sync.
    pub fn set_wakeup(&mut self, at: Option<i64>) -> io::Result<()> {
        let path = self.dir.join(WAKEUP);
        match at {
            Some(at) => {
                self.parents_dirty |= ensure_dir(&self.dir)?;
                let tmp = self.dir.join(".wakeup.tmp");
                fs::write(&tmp, at.to_string())?;
                fs::rename(&tmp, &path)?;
                self.wakeup_dirty = true;
                self.dir_dirty = true;
            }
            None => match fs::remove_file(&path) {
                Ok(()) => self.dir_dirty = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            },
        }
        Ok(())
    }

    /// A job that writes 4 KiB to a temporary file in the room's directory
    /// (created if needed), fdatasyncs it and removes it: the storage takes
    /// writes again.
    pub fn probe_job(&mut self) -> Job {
        let dir = self.dir.clone();
        Box::new(move || {
            ensure_dir(&dir)?;
            let mut probe = tempfile::Builder::new()
                .prefix(".probe")
                .tempfile_in(&dir)?;
            probe.write_all(&ZEROS[..BLOCK as usize])?;
            probe.as_file().sync_data()?;
            Ok(())
        })
    }

    pub fn snapshot_job(&mut self, seq: u64, snapshot: Vec<u8>) -> Job {
        let dir = self.dir.clone();
        let mut framed = Vec::with_capacity(snapshot.len() + frame::HEADER);
        frame::encode(&snapshot, &mut framed);
        self.bytes += framed.len() as u64;
        Box::new(move || {
            let created = ensure_dir(&dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
            tmp.write_all(&framed)?;
            tmp.as_file().sync_all()?;
            tmp.persist(dir.join(paths::snapshot_name(seq)))
                .map_err(|e| e.error)?;
            sync_dir(&dir, created)?;
            remove_obsolete(&dir)
        })
    }

    /// Reads the newest good snapshot and the events after it, truncating a
    /// damaged tail and moving corrupt snapshots aside. Only I/O errors fail.
    pub fn recover(&mut self, keep_upto: Option<u64>) -> io::Result<Recovered> {
        let mut out = Recovered::default();
        let Some(listing) = list(&self.dir)? else {
            return Ok(out);
        };
        let base = self.newest_snapshot(&listing, &mut out)?;
        if keep_upto.is_some_and(|limit| limit < base) {
            // Cannot happen: a snapshot is written only once its events were
            // released. Keep the snapshot; there is nothing older to go back to.
            out.repairs.push(format!(
                "snapshot {base} is newer than the last acknowledged event"
            ));
        }
        let read = self.read_segments(&listing.segments, base, keep_upto, &mut out)?;
        if let Some(first_unusable) = read.cut_before {
            self.drop_segments(&listing.segments[first_unusable..], &mut out)?;
        }
        // Keep appending to the newest surviving segment. The generation
        // that created it may have died before syncing its entry (and the
        // room directory's), so this generation's first sync covers them.
        let kept = read.cut_before.unwrap_or(listing.segments.len());
        if let Some(&start) = listing.segments[..kept].last().filter(|_| !self.read_only) {
            let path = self.dir.join(paths::segment_name(start));
            self.current = Some(Segment::open(&path, Some(read.end as u64))?);
            self.dir_dirty = true;
        }
        self.bytes = dir_bytes(&self.dir);
        Ok(out)
    }

    /// Puts the newest readable snapshot in `out` and returns its seq (0 if
    /// none); corrupt newer ones are moved aside.
    fn newest_snapshot(&self, listing: &Listing, out: &mut Recovered) -> io::Result<u64> {
        for &seq in listing.snapshots.iter().rev() {
            let path = self.dir.join(paths::snapshot_name(seq));
            match read_snapshot(&path, seq) {
                Ok(payload) => {
                    out.snapshot = Some(payload);
                    return Ok(seq);
                }
                Err(why) => {
                    out.repairs.push(format!(
                        "snapshot {seq} is corrupt ({why}); using the previous one"
                    ));
                    if !self.read_only {
                        fs::rename(&path, path.with_extension("snap.corrupt"))?;
                    }
                }
            }
        }
        Ok(0)
    }

    /// Reads the events after `base` from the segments into `out`, in order,
    /// and truncates the first segment whose tail is damaged, out of
    /// sequence or (after a crash) unacknowledged.
    fn read_segments(
        &self,
        segments: &[u64],
        base: u64,
        keep_upto: Option<u64>,
        out: &mut Recovered,
    ) -> io::Result<SegmentsRead> {
        let mut last = base;
        let mut read = SegmentsRead {
            end: 0,
            cut_before: None,
        };
        for (i, &start) in segments.iter().enumerate() {
            let next_start = segments.get(i + 1).copied();
            if next_start.is_some_and(|n| n <= base + 1) {
                continue; // wholly covered by the snapshot
            }
            let path = self.dir.join(paths::segment_name(start));
            let data = fs::read(&path)?;
            let (frames, damage) = frame::decode_all(&data);
            read.end = frames
                .last()
                .map_or(0, |(at, p)| at + frame::HEADER + p.len());
            let mut cut: Option<(usize, String)> = damage.map(|d| (d.offset, d.reason.to_string()));
            for (offset, payload) in frames {
                let seq = match Event::decode(payload) {
                    Ok(e) => e.seq,
                    Err(e) => {
                        cut = Some((offset, format!("unreadable record: {e}")));
                        break;
                    }
                };
                if seq <= base {
                    continue;
                }
                if seq != last + 1 {
                    cut = Some((offset, format!("expected seq {}, found {seq}", last + 1)));
                    break;
                }
                if keep_upto.is_some_and(|limit| seq > limit) {
                    cut = Some((
                        offset,
                        "unacknowledged events of a crashed room".to_string(),
                    ));
                    break;
                }
                out.events.push(payload.to_vec());
                last = seq;
            }
            if let Some((offset, why)) = cut {
                read.end = offset;
                let dropped = data.len() - offset;
                out.repairs.push(format!(
                    "{}: dropped {dropped} bytes from offset {offset} ({why})",
                    path.display()
                ));
                if !self.read_only {
                    let file = OpenOptions::new().write(true).open(&path)?;
                    file.set_len(offset as u64)?;
                    file.sync_all()?;
                }
                read.cut_before = Some(i + 1);
                break;
            }
        }
        out.last_seq = last;
        Ok(read)
    }

    /// Removes segments after a cut: they would leave a gap in the sequence.
    fn drop_segments(&self, segments: &[u64], out: &mut Recovered) -> io::Result<()> {
        for &start in segments {
            let path = self.dir.join(paths::segment_name(start));
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            out.repairs.push(format!(
                "{}: dropped {size} bytes after the cut",
                path.display()
            ));
            if !self.read_only {
                fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

/// What [`DiskJournal::read_segments`] found.
struct SegmentsRead {
    /// Where the records of the last segment read end (zeroed space may
    /// follow): where appends continue.
    end: usize,
    /// The index of the first segment after a cut, if there was one.
    cut_before: Option<usize>,
}

struct Listing {
    /// Snapshot seqs, ascending.
    snapshots: Vec<u64>,
    /// Segment first seqs, ascending.
    segments: Vec<u64>,
}

fn list(dir: &Path) -> io::Result<Option<Listing>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut listing = Listing {
        snapshots: Vec::new(),
        segments: Vec::new(),
    };
    for entry in entries {
        let name = entry?.file_name();
        match name.to_str().and_then(paths::parse_name) {
            Some((FileKind::Snapshot, seq)) => listing.snapshots.push(seq),
            Some((FileKind::Segment, seq)) => listing.segments.push(seq),
            None => {}
        }
    }
    listing.snapshots.sort_unstable();
    listing.segments.sort_unstable();
    Ok(Some(listing))
}

fn read_snapshot(path: &Path, seq: u64) -> Result<Vec<u8>, String> {
    let data = fs::read(path).map_err(|e| e.to_string())?;
    let (payload, used) = frame::decode_one(&data).map_err(str::to_string)?;
    if used != data.len() {
        return Err("trailing bytes".into());
    }
    let snapshot = Snapshot::decode(payload).map_err(|e| e.to_string())?;
    if snapshot.seq != seq {
        return Err(format!(
            "holds seq {} under the name of {seq}",
            snapshot.seq
        ));
    }
    Ok(payload.to_vec())
}

/// Keeps the two newest snapshots and the segments after the older of them.
fn remove_obsolete(dir: &Path) -> io::Result<()> {
    let Some(listing) = list(dir)? else {
        return Ok(());
    };
    let n = listing.snapshots.len();
    if n < 2 {
        return Ok(());
    }
    let keep_from = listing.snapshots[n - 2];
    for &seq in &listing.snapshots[..n - 2] {
        fs::remove_file(dir.join(paths::snapshot_name(seq)))?;
    }
    for pair in listing.segments.windows(2) {
        if pair[1] <= keep_from + 1 {
            fs::remove_file(dir.join(paths::segment_name(pair[0])))?;
        }
    }
    Ok(())
}

/// Creates `dir` if needed; returns whether it was created.
fn ensure_dir(dir: &Path) -> io::Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    fs::create_dir_all(dir)?;
    Ok(true)
}

/// fsyncs `dir` (a new file's entry in it) and, with `parents`, its parent
/// and grandparent (the kind and `rooms` directories), so a new room
/// directory survives a power loss too. A directory fsync commits the file
/// system's journal: a rotation costs one, not three.
fn sync_dir(dir: &Path, parents: bool) -> io::Result<()> {
    let mut at = Some(dir);
    for _ in 0..if parents { 3 } else { 1 } {
        let Some(d) = at else { break };
        File::open(d)?.sync_all()?;
        at = d.parent();
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Every room directory under `data_dir`, by topic text, sorted.
fn room_dirs(data_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut rooms = Vec::new();
    let Ok(kinds) = fs::read_dir(data_dir.join("rooms")) else {
        return rooms;
    };
    for kind in kinds.flatten() {
        let Some(kind_name) = kind.file_name().to_str().and_then(paths::unescape) else {
            continue;
        };
        let Ok(names) = fs::read_dir(kind.path()) else {
            continue;
        };
        for name in names.flatten() {
            if let Some(room) = name.file_name().to_str().and_then(paths::unescape) {
                rooms.push((format!("{kind_name}:{room}"), name.path()));
            }
        }
    }
    rooms.sort();
    rooms
}

/// Total bytes of every room directory with durable state, by topic text.
pub fn list_rooms(data_dir: &Path) -> Vec<(String, u64)> {
    room_dirs(data_dir)
        .into_iter()
        .map(|(topic, dir)| (topic, dir_bytes(&dir)))
        .collect()
}

/// The rooms that must run by a time although nobody joins them (a timer,
/// messages to other rooms), by topic text, with that time (ms since the
/// epoch): what their `wakeup` files say.
pub fn list_wakeups(data_dir: &Path) -> Vec<(String, i64)> {
    room_dirs(data_dir)
        .into_iter()
        .filter_map(|(topic, dir)| {
            let text = fs::read_to_string(dir.join(WAKEUP)).ok()?;
            Some((topic, text.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::{ConnRecord, EventKind};
    use serde_json::value::RawValue;

    /// A framed message event numbered `seq`.
    pub(crate) fn event_bytes(seq: u64) -> Vec<u8> {
        let meta = RawValue::from_string("{}".into()).unwrap();
        let data = RawValue::from_string(format!("{{\"n\":{seq}}}")).unwrap();
        let e = Event {
            seq,
            kind: EventKind::Message,
            at: 1,
            seed: 2,
            conn: ConnRecord {
                id: "c".into(),
                user: "u".into(),
                meta: &meta,
            },
            event: Some("e".into()),
            data: &data,
            origin: None,
        };
        let mut out = Vec::new();
        e.encode_into(&mut out);
        out
    }

    /// A snapshot as of `seq`.
    pub(crate) fn snapshot_bytes(seq: u64) -> Vec<u8> {
        let room = RawValue::from_string(format!("{{\"members\":[],\"state\":{seq}}}")).unwrap();
        Snapshot {
            seq,
            at: 0,
            version: "v".into(),
            room: &room,
            host: None,
        }
        .encode()
    }

    fn seqs(r: &Recovered) -> Vec<u64> {
        r.events
            .iter()
            .map(|e| Event::decode(e).unwrap().seq)
            .collect()
    }

    fn append(j: &mut DiskJournal, seqs: std::ops::RangeInclusive<u64>) {
        let first = *seqs.start();
        let mut buf = Vec::new();
        for s in seqs {
            buf.extend(event_bytes(s));
        }
        j.append(&buf, first).unwrap();
        if let Some(job) = j.sync_job() {
            job().unwrap();
        }
    }

    #[test]
    fn appends_recover_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let room = dir.path().join("rooms/chat/x");
        let mut j = DiskJournal::new(room.clone());
        assert_eq!(j.recover(None).unwrap().events.len(), 0);
        append(&mut j, 1..=3);
        append(&mut j, 4..=5);
        let mut j = DiskJournal::new(room);
        let r = j.recover(None).unwrap();
        assert_eq!(seqs(&r), [1, 2, 3, 4, 5]);
        assert_eq!(r.last_seq, 5);
        append(&mut j, 6..=6);
        assert_eq!(seqs(&j.recover(None).unwrap()), [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn a_rotation_syncs_the_room_directory_and_a_new_journal_its_parents_too() {
        let dir = tempfile::tempdir().unwrap();
        let room = dir.path().join("rooms/chat/x");
        let mut j = DiskJournal::new(room.clone());
        j.append(&event_bytes(1), 1).unwrap();
        assert!(j.dir_dirty && j.parents_dirty, "a new room directory");
        j.sync_job().unwrap()().unwrap();
        assert!(!j.dir_dirty && !j.parents_dirty);
        j.append(&event_bytes(2), 2).unwrap();
        assert!(!j.dir_dirty, "the same segment");
        j.sync_job().unwrap()().unwrap();
        j.rotate();
        j.append(&event_bytes(3), 3).unwrap();
        assert!(
            j.dir_dirty && !j.parents_dirty,
            "a new segment in an old room"
        );
        j.sync_job().unwrap()().unwrap();
        assert_eq!(seqs(&j.recover(None).unwrap()), [1, 2, 3]);
        // A journal reopened on its segment (a restart) syncs the directory
        // and its parents once: the generation that created them may have
        // died before its sync.
        let mut j = DiskJournal::new(room);
        let r = j.recover(None).unwrap();
        j.append(&event_bytes(r.last_seq + 1), r.last_seq + 1)
            .unwrap();
        assert!(j.dir_dirty && j.parents_dirty, "a journal just opened");
        j.sync_job().unwrap()().unwrap();
        assert!(!j.dir_dirty && !j.parents_dirty);
    }

    /// Where a segment's records end: its zeroed space follows.
    fn records_end(path: &Path) -> usize {
        let data = fs::read(path).unwrap();
        data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
    }

    #[test]
    fn segments_are_zero_filled_ahead_and_reopen_at_their_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let room = dir.path().join("r");
        let mut j = DiskJournal::new(room.clone());
        append(&mut j, 1..=2);
        let seg = room.join(paths::segment_name(1));
        let written = records_end(&seg);
        assert_eq!(fs::metadata(&seg).unwrap().len(), 4096, "one block");
        assert_eq!(j.bytes(), 4096);
        // A busy segment grows ahead by up to three times what it holds.
        let big = vec![b'x'; 10_000];
        let mut framed = Vec::new();
        frame::encode(&big, &mut framed);
        let mut grow = DiskJournal::new(dir.path().join("g"));
        grow.append(&framed, 1).unwrap();
        let size = grow.current.as_ref().unwrap().size;
        assert_eq!(size, (4 * framed.len() as u64).next_multiple_of(4096));
        grow.append(&framed, 2).unwrap();
        assert_eq!(grow.current.as_ref().unwrap().size, size, "no growth");

        let mut j = DiskJournal::new(room.clone());
        let r = j.recover(None).unwrap();
        assert_eq!(seqs(&r), [1, 2]);
        assert!(
            r.repairs.is_empty(),
            "zeroes are no damage: {:?}",
            r.repairs
        );
        append(&mut j, 3..=3);
        assert!(records_end(&seg) > written, "appended after the records");
        assert_eq!(fs::metadata(&seg).unwrap().len(), 4096);
        assert_eq!(
            seqs(&DiskJournal::new(room).recover(None).unwrap()),
            [1, 2, 3]
        );
    }

    #[test]
    fn torn_and_flipped_tails_are_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let room = dir.path().join("r");
        let mut j = DiskJournal::new(room.clone());
        append(&mut j, 1..=4);
        let seg = room.join(paths::segment_name(1));
        let len = records_end(&seg);
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len as u64 - 5)
            .unwrap();
        let r = DiskJournal::new(room.clone()).recover(None).unwrap();
        assert_eq!(seqs(&r), [1, 2, 3]);
        assert!(r.repairs[0].contains("dropped"), "{:?}", r.repairs);
        // The file was repaired: appending continues cleanly.
        let mut j = DiskJournal::new(room.clone());
        j.recover(None).unwrap();
        append(&mut j, 4..=4);
        let mut data = fs::read(&seg).unwrap();
        let at = records_end(&seg) - 3;
        data[at] ^= 1;
        fs::write(&seg, data).unwrap();
        let r = DiskJournal::new(room.clone()).recover(None).unwrap();
        assert_eq!(seqs(&r), [1, 2, 3]);
        // A lost write: zeroes where a record was, with records after it.
        let mut j = DiskJournal::new(room.clone());
        j.recover(None).unwrap();
        append(&mut j, 4..=5);
        let r = DiskJournal::new(room.clone()).recover(None).unwrap();
        assert_eq!(seqs(&r), [1, 2, 3, 4, 5]);
        let mut data = fs::read(&seg).unwrap();
        let fourth = r.events[..3]
            .iter()
            .map(|e| e.len() + frame::HEADER)
            .sum::<usize>();
        data[fourth..fourth + 20].fill(0);
        fs::write(&seg, data).unwrap();
        let r = DiskJournal::new(room).recover(None).unwrap();
        assert_eq!(seqs(&r), [1, 2, 3]);
        assert!(r.repairs[0].contains("zeroes before"), "{:?}", r.repairs);
    }

    #[test]
    fn snapshots_compact_and_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        let room = dir.path().join("r");
        let mut j = DiskJournal::new(room.clone());
        append(&mut j, 1..=3);
        j.rotate();
        j.snapshot_job(3, snapshot_bytes(3))().unwrap();
        append(&mut j, 4..=6);
        j.rotate();
        j.snapshot_job(6, snapshot_bytes(6))().unwrap();
        append(&mut j, 7..=8);
        j.rotate();
        j.snapshot_job(8, snapshot_bytes(8))().unwrap();
        append(&mut j, 9..=9);
        let mut names: Vec<String> = fs::read_dir(&room)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                paths::segment_name(7),
                paths::segment_name(9),
                paths::snapshot_name(6),
                paths::snapshot_name(8)
            ]
        );
        let r = DiskJournal::new(room.clone()).recover(None).unwrap();
        assert_eq!(
            Snapshot::decode(r.snapshot.as_ref().unwrap()).unwrap().seq,
            8
        );
        assert_eq!(seqs(&r), [9]);
        // Corrupt the newest snapshot: fall back to 6 and replay 7..9.
        let snap = room.join(paths::snapshot_name(8));
        let mut data = fs::read(&snap).unwrap();
        data[12] ^= 0xff;
        fs::write(&snap, data).unwrap();
        let r = DiskJournal::new(room.clone()).recover(None).unwrap();
        assert_eq!(
            Snapshot::decode(r.snapshot.as_ref().unwrap()).unwrap().seq,
            6
        );
        assert_eq!(seqs(&r), [7, 8, 9]);
        assert!(r.repairs[0].contains("corrupt"));
        assert!(
            room.join("snapshot-00000000000000000008.snap.corrupt")
                .exists()
        );
    }

    #[test]
    fn a_read_only_recovery_reports_damage_and_changes_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let room = dir.path().join("r");
        let mut j = DiskJournal::new(room.clone());
        append(&mut j, 1..=3);
        j.rotate();
        append(&mut j, 4..=5);
        let first = room.join(paths::segment_name(1));
        let mut data = fs::read(&first).unwrap();
        let at = records_end(&first) - 3;
        data[at] ^= 1;
        fs::write(&first, &data).unwrap();
        let before: Vec<(String, Vec<u8>)> = {
            let mut files: Vec<_> = fs::read_dir(&room)
                .unwrap()
                .map(|e| e.unwrap().path())
                .map(|p| (p.display().to_string(), fs::read(&p).unwrap()))
                .collect();
            files.sort();
            files
        };
        let r = DiskJournal::read_only(room.clone()).recover(None).unwrap();
        assert_eq!(seqs(&r), [1, 2]);
        assert!(
            r.repairs.iter().any(|d| d.contains("after the cut")),
            "{:?}",
            r.repairs
        );
        let mut after: Vec<(String, Vec<u8>)> = fs::read_dir(&room)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.display().to_string(), fs::read(&p).unwrap()))
            .collect();
        after.sort();
        assert!(before == after, "a read-only recovery changed the files");
    }

    #[test]
    fn keep_upto_drops_unacknowledged_events() {
        let dir = tempfile::tempdir().unwrap();
        let room = dir.path().join("r");
        let mut j = DiskJournal::new(room.clone());
        append(&mut j, 1..=5);
        let r = DiskJournal::new(room.clone()).recover(Some(3)).unwrap();
        assert_eq!(seqs(&r), [1, 2, 3]);
        assert_eq!(
            seqs(&DiskJournal::new(room).recover(None).unwrap()),
            [1, 2, 3]
        );
    }

    #[test]
    fn lists_rooms_by_topic() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = DiskJournal::new(paths::room_dir(dir.path(), "chat", "Lobby.1"));
        append(&mut j, 1..=1);
        let rooms = list_rooms(dir.path());
        assert_eq!(rooms.len(), 1);
        assert_eq!(rooms[0].0, "chat:Lobby.1");
        assert!(rooms[0].1 > 0);
    }
}
