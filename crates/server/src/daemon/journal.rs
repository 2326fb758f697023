//! The event journal: every event the daemon publishes gets a sequence number and a time,
//! is appended to `<state-dir>/events.journal` (one JSON object per line), and goes to every
//! subscriber: `types.API` Events streams (live, plus exits recovered after a restart for
//! the streams opened within the replay window) and `wharf.v1.Events` streams (replay after a
//! sequence number, then live).
//!
//! The file is append-only; a crash can only tear its last line, which the next start skips
//! with a warning (and truncates away) instead of failing. It holds at most about twice
//! `retention` events: past that, the newest `retention` are rewritten to a new file that
//! atomically replaces the old one. Sequence numbers continue across restarts.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use wharf_api as api;
use wharf_api::v1::JournaledEvent;

use crate::events::{EventHub, EventStream};

/// File name of the journal in the state directory.
pub(crate) const JOURNAL_FILE: &str = "events.journal";

#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    retention: usize,
    inner: Mutex<Inner>,
    /// `types.API` Events streams.
    api: EventHub<api::Event>,
    /// `wharf.v1.Events` streams.
    journaled: EventHub<JournaledEvent>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    /// The newest events, at most `retention`.
    kept: Kept,
    next_seq: u64,
    /// Lines in the file, for compaction.
    lines: usize,
    /// Exits found while re-attaching, for `types.API` streams opened before `replay_until`.
    recovered: Vec<api::Event>,
    replay_until: Option<Instant>,
}

/// The newest events, at most `retention`, with an index of which (type, container,
/// process) they are about, so that "was this published already" costs one lookup.
#[derive(Debug)]
struct Kept {
    events: VecDeque<JournaledEvent>,
    index: HashMap<EventKey, usize>,
    retention: usize,
}

/// (type, container id, pid) of an event.
type EventKey = (String, String, u32);

fn key_of(journaled: &JournaledEvent) -> Option<EventKey> {
    journaled
        .event
        .as_ref()
        .map(|e| (e.r#type.clone(), e.id.clone(), e.pid))
}

impl Kept {
    fn new(retention: usize) -> Self {
        Self {
            events: VecDeque::new(),
            index: HashMap::new(),
            retention,
        }
    }

    /// Keeps `journaled`, forgetting the oldest past the retention.
    fn push(&mut self, journaled: JournaledEvent) {
        if let Some(key) = key_of(&journaled) {
            *self.index.entry(key).or_default() += 1;
        }
        self.events.push_back(journaled);
        if self.events.len() > self.retention
            && let Some(oldest) = self.events.pop_front()
            && let Some(key) = key_of(&oldest)
            && let Some(count) = self.index.get_mut(&key)
        {
            *count -= 1;
            if *count == 0 {
                self.index.remove(&key);
            }
        }
    }

    fn contains(&self, kind: &str, id: &str, pid: u32) -> bool {
        self.index
            .contains_key(&(kind.to_owned(), id.to_owned(), pid))
    }

    fn iter(&self) -> impl Iterator<Item = &JournaledEvent> {
        self.events.iter()
    }

    fn len(&self) -> usize {
        self.events.len()
    }
}

/// What loading found wrong with the file (reported, never fatal).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LoadReport {
    pub(crate) torn_tail: bool,
    pub(crate) corrupt_lines: usize,
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn encode(event: &JournaledEvent) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

impl Journal {
    /// Opens (or creates) the journal in `state_dir`, keeping the newest `retention` events.
    ///
    /// # Errors
    /// The file cannot be read, repaired or opened for appending. Its content never makes
    /// this fail: torn or corrupt lines are skipped and reported.
    pub(crate) fn open(state_dir: &Path, retention: usize) -> io::Result<(Self, LoadReport)> {
        let path = state_dir.join(JOURNAL_FILE);
        let retention = retention.max(1);
        let mut report = LoadReport::default();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(err),
        };
        // A crash can leave a last line without its newline: cut it off, so the next
        // append starts a line of its own.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            report.torn_tail = true;
            tracing::warn!(path = %path.display(), bytes = bytes.len() - complete, "skipping a torn last line of the event journal");
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(complete as u64)?;
        }
        let mut kept = Kept::new(retention);
        let mut lines = 0;
        let mut next_seq = 1;
        for (number, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            lines += 1;
            match serde_json::from_slice::<JournaledEvent>(line) {
                Ok(event) => {
                    next_seq = next_seq.max(event.seq + 1);
                    kept.push(event);
                }
                Err(err) => {
                    report.corrupt_lines += 1;
                    tracing::warn!(path = %path.display(), line = number + 1, error = %err, "skipping a corrupt line of the event journal");
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let journal = Self {
            path,
            retention,
            inner: Mutex::new(Inner {
                file,
                kept,
                next_seq,
                lines,
                recovered: Vec::new(),
                replay_until: None,
            }),
            api: EventHub::new(0),
            journaled: EventHub::new(0),
        };
        Ok((journal, report))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers, journals and sends `event` to every subscriber.
    pub(crate) fn publish(&self, event: api::Event) {
        let mut inner = self.lock();
        self.append(&mut inner, event);
    }

    /// Like [`Journal::publish`], for an exit found while re-attaching: `types.API` streams
    /// opened until the replay window closes get it too.
    pub(crate) fn publish_recovered(&self, event: api::Event) {
        let mut inner = self.lock();
        inner.recovered.push(event.clone());
        self.append(&mut inner, event);
    }

    /// Opens the replay window: `types.API` streams opened during `window` from now get the
    /// recovered exits published so far (and those published later, live).
    pub(crate) fn open_replay_window(&self, window: Duration) {
        self.lock().replay_until = Some(Instant::now() + window);
    }

    fn append(&self, inner: &mut Inner, event: api::Event) {
        let journaled = JournaledEvent {
            seq: inner.next_seq,
            unix_nanos: now_nanos(),
            event: Some(event.clone()),
        };
        inner.next_seq += 1;
        match encode(&journaled).and_then(|line| inner.file.write_all(&line)) {
            Ok(()) => inner.lines += 1,
            Err(err) => {
                tracing::error!(path = %self.path.display(), seq = journaled.seq, error = %err, "appending to the event journal")
            }
        }
        inner.kept.push(journaled.clone());
        if inner.lines > 2 * self.retention
            && let Err(err) = self.compact(inner)
        {
            tracing::error!(path = %self.path.display(), error = %err, "compacting the event journal");
        }
        self.api.publish(event);
        self.journaled.publish(journaled);
    }

    /// Rewrites the file with the kept events only, atomically.
    fn compact(&self, inner: &mut Inner) -> io::Result<()> {
        let staging = self.path.with_extension("journal.new");
        let mut file = File::create(&staging)?;
        for event in inner.kept.iter() {
            file.write_all(&encode(event)?)?;
        }
        file.sync_data()?;
        std::fs::rename(&staging, &self.path)?;
        inner.file = OpenOptions::new().append(true).open(&self.path)?;
        inner.lines = inner.kept.len();
        Ok(())
    }

    /// A `types.API` Events stream: live events, after the recovered exits if the replay
    /// window is open.
    pub(crate) fn subscribe_api(&self) -> EventStream<api::Event> {
        let inner = self.lock();
        let replay = match inner.replay_until {
            Some(until) if Instant::now() < until => inner.recovered.clone(),
            _ => Vec::new(),
        };
        // Under the journal lock: nothing is published between the replay and the live part.
        self.api.subscribe_with(replay)
    }

    /// A `wharf.v1.Events` stream: the kept events after `after_seq`, then live ones.
    pub(crate) fn subscribe_after(&self, after_seq: u64) -> EventStream<JournaledEvent> {
        let inner = self.lock();
        let replay = inner
            .kept
            .iter()
            .filter(|e| e.seq > after_seq)
            .cloned()
            .collect();
        self.journaled.subscribe_with(replay)
    }

    /// Whether an `exit` of process `pid` of container `id` is among the kept events.
    pub(crate) fn has_exit(&self, id: &str, pid: u32) -> bool {
        self.has_event("exit", id, pid)
    }

    /// Whether an event of type `kind` about process `pid` of container `id` is among the
    /// kept events.
    pub(crate) fn has_event(&self, kind: &str, id: &str, pid: u32) -> bool {
        self.lock().kept.contains(kind, id, pid)
    }

    /// Open Events streams, of `types.API` and `wharf.v1` together.
    pub(crate) fn open_streams(&self) -> usize {
        self.api.open_streams() + self.journaled.open_streams()
    }

    /// Ends every stream: the daemon is stopping.
    pub(crate) fn close(&self) {
        self.api.close();
        self.journaled.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn event(kind: &str, id: &str, pid: u32) -> api::Event {
        api::Event {
            r#type: kind.into(),
            id: id.into(),
            pid,
            ..api::Event::default()
        }
    }

    async fn seqs(stream: EventStream<JournaledEvent>) -> Vec<u64> {
        stream.map(|e| e.unwrap().seq).collect().await
    }

    #[test]
    fn the_index_of_kept_events_forgets_what_retention_drops() {
        let mut kept = Kept::new(2);
        let journaled = |seq, kind: &str, pid| JournaledEvent {
            seq,
            unix_nanos: 0,
            event: Some(event(kind, "c", pid)),
        };
        kept.push(journaled(1, "exit", 7));
        kept.push(journaled(2, "exit", 7));
        kept.push(journaled(3, "start-container", 1));
        // One of the two exits of 7 is still kept.
        assert!(kept.contains("exit", "c", 7));
        kept.push(journaled(4, "start-container", 2));
        assert!(!kept.contains("exit", "c", 7));
        assert!(kept.contains("start-container", "c", 1));
        assert!(!kept.contains("start-container", "d", 1));
        assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(kept.index.len(), 2);
    }

    #[tokio::test]
    async fn sequence_numbers_survive_reopening_and_replay_after_a_seq() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (journal, report) = Journal::open(dir.path(), 100).unwrap();
            assert_eq!(report, LoadReport::default());
            for pid in 1..=3 {
                journal.publish(event("exit", "a", pid));
            }
        }
        let (journal, _) = Journal::open(dir.path(), 100).unwrap();
        journal.publish(event("exit", "a", 4));
        let replay = journal.subscribe_after(2);
        journal.publish(event("exit", "a", 5));
        journal.close();
        assert_eq!(seqs(replay).await, [3, 4, 5]);
        assert!(journal.has_exit("a", 4));
        assert!(!journal.has_exit("b", 4));
    }

    #[tokio::test]
    async fn a_torn_last_line_is_skipped_and_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (journal, _) = Journal::open(dir.path(), 100).unwrap();
            journal.publish(event("exit", "a", 1));
            journal.publish(event("exit", "a", 2));
        }
        let path = dir.path().join(JOURNAL_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"seq":3,"unixNanos":1,"event":{"type":"ex"#)
            .unwrap();
        drop(file);
        let (journal, report) = Journal::open(dir.path(), 100).unwrap();
        assert!(report.torn_tail);
        journal.publish(event("exit", "a", 3));
        drop(journal);
        let (journal, report) = Journal::open(dir.path(), 100).unwrap();
        assert_eq!(
            report,
            LoadReport::default(),
            "the appended line starts clean"
        );
        let replay = journal.subscribe_after(0);
        journal.close();
        assert_eq!(seqs(replay).await, [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_corrupt_line_in_the_middle_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(JOURNAL_FILE),
            concat!(
                r#"{"seq":1,"unixNanos":1,"event":{"type":"exit","id":"a","pid":1}}"#,
                "\nnot json at all\n",
                r#"{"seq":2,"unixNanos":2,"event":{"type":"exit","id":"a","pid":2}}"#,
                "\n"
            ),
        )
        .unwrap();
        let (journal, report) = Journal::open(dir.path(), 100).unwrap();
        assert_eq!(report.corrupt_lines, 1);
        let replay = journal.subscribe_after(0);
        journal.close();
        assert_eq!(seqs(replay).await, [1, 2]);
    }

    #[tokio::test]
    async fn the_file_stays_bounded_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), 10).unwrap();
        for pid in 1..=95 {
            journal.publish(event("exit", "a", pid));
        }
        let lines = std::fs::read_to_string(dir.path().join(JOURNAL_FILE))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 20, "{lines} lines");
        drop(journal);
        let (journal, _) = Journal::open(dir.path(), 10).unwrap();
        let replay = journal.subscribe_after(0);
        journal.close();
        assert_eq!(seqs(replay).await, (86..=95).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn recovered_exits_reach_api_streams_opened_in_the_window_once() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), 10).unwrap();
        journal.open_replay_window(Duration::from_secs(60));
        let early = journal.subscribe_api();
        journal.publish_recovered(event("exit", "a", 1));
        let late = journal.subscribe_api();
        journal.publish(event("start-container", "b", 2));
        journal.close();
        let kinds = |s: EventStream<api::Event>| async move {
            s.map(|e| e.unwrap().pid).collect::<Vec<_>>().await
        };
        assert_eq!(kinds(early).await, [1, 2], "live, once");
        assert_eq!(kinds(late).await, [1, 2], "replayed, once");

        let (journal, _) = Journal::open(dir.path(), 10).unwrap();
        journal.open_replay_window(Duration::ZERO);
        journal.publish_recovered(event("exit", "a", 3));
        let after_window = journal.subscribe_api();
        journal.close();
        assert_eq!(kinds(after_window).await, Vec::<u32>::new());
    }
}
