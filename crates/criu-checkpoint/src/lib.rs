//! Container checkpoints on disk: `<bundle>/checkpoints/<name>/` holds the CRIU images and
//! a `config.json` recording the checkpoint's name, when it was made, and the flags it was
//! made with (`exit`, `tcp`, `unixSockets`, `shell`), which a restore uses again.
//!
//! A checkpoint appears whole or not at all: the images are dumped into a hidden directory
//! ([`Pending`]), which [`Pending::commit`] renames into place after writing `config.json`;
//! dropped uncommitted, it is removed.
//!
//! ```
//! use wharf_criu_checkpoint::{Flags, Store};
//! # fn demo() -> Result<(), wharf_criu_checkpoint::Error> {
//! # let bundle = tempfile::tempdir().unwrap();
//! let store = Store::new(bundle.path());
//! let pending = store.begin("before-upgrade", Flags { exit: true, ..Flags::default() })?;
//! // ... dump with CRIU into pending.image_dir() ...
//! let checkpoint = pending.commit()?;
//! assert_eq!(store.list()?, vec![checkpoint]);
//! # Ok(()) }
//! # demo().unwrap();
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The record of a checkpoint's directory.
const RECORD: &str = "config.json";

/// Coarse class of an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bad checkpoint name.
    InvalidArgument,
    /// No checkpoint of that name.
    NotFound,
    /// A checkpoint of that name exists.
    AlreadyExists,
    /// The file system failed.
    Internal,
}

/// A checkpoint store's failure; messages name the checkpoint and the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name cannot be a checkpoint's.
    #[error("invalid checkpoint name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// No such checkpoint.
    #[error("checkpoint {name} not found in {}", dir.display())]
    NotFound {
        /// The name asked for.
        name: String,
        /// The checkpoints directory looked in.
        dir: PathBuf,
    },
    /// The checkpoint exists already.
    #[error("checkpoint {name} already exists in {}", dir.display())]
    AlreadyExists {
        /// The name asked for.
        name: String,
        /// The checkpoints directory.
        dir: PathBuf,
    },
    /// A file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidName { .. } => ErrorKind::InvalidArgument,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Io { .. } => ErrorKind::Internal,
        }
    }

    fn io(context: String, source: std::io::Error) -> Self {
        Error::Io { context, source }
    }
}

/// How a checkpoint was made, as `types.Checkpoint` says it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flags {
    /// The container was stopped after the dump.
    pub exit: bool,
    /// Established TCP connections were allowed.
    pub tcp: bool,
    /// External unix sockets were allowed.
    pub unix_sockets: bool,
    /// Shell jobs were allowed.
    pub shell: bool,
}

/// A complete checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Its name: the directory's.
    pub name: String,
    /// When it was made, in seconds since the Unix epoch.
    pub created: u64,
    /// How it was made.
    #[serde(flatten)]
    pub flags: Flags,
    /// What dumped it (for wharf, the executor's name), when recorded: images are not
    /// always restorable by another runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dumped_by: Option<String>,
}

/// Checks that `name` can name a checkpoint directory: not empty, no `/`, not `.` or `..`,
/// no NUL, not hidden, at most 255 bytes.
///
/// # Errors
/// [`Error::InvalidName`] saying why.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.contains('/') {
        Some("it contains `/`")
    } else if name.contains("..") {
        Some("it contains `..`")
    } else if name.starts_with('.') {
        Some("it starts with `.`")
    } else if name.contains('\0') {
        Some("it contains NUL")
    } else if name.len() > 255 {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The checkpoints of one bundle: `<bundle>/checkpoints/`.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store of the bundle at `bundle` (created on the first checkpoint).
    pub fn new(bundle: &Path) -> Self {
        Self {
            dir: bundle.join("checkpoints"),
        }
    }

    /// The directory holding the checkpoints.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts checkpoint `name`: a hidden directory for its images.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad name, `AlreadyExists`, or `Internal`.
    pub fn begin(&self, name: &str, flags: Flags) -> Result<Pending, Error> {
        validate_name(name)?;
        if self.dir.join(name).exists() {
            return Err(self.already_exists(name));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|err| Error::io(format!("creating {}", self.dir.display()), err))?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let staging = self.dir.join(format!(
            ".{name}.partial-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&staging)
            .map_err(|err| Error::io(format!("creating {}", staging.display()), err))?;
        Ok(Pending {
            store: self.clone(),
            staging,
            name: name.to_owned(),
            flags,
            dumped_by: None,
            committed: false,
        })
    }

    /// Checkpoint `name`.
    ///
    /// # Errors
    /// `InvalidArgument`, `NotFound`, or `Internal` for an unreadable record.
    pub fn get(&self, name: &str) -> Result<Checkpoint, Error> {
        validate_name(name)?;
        let record = self.dir.join(name).join(RECORD);
        let text = std::fs::read(&record).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => self.not_found(name),
            _ => Error::io(format!("reading {}", record.display()), err),
        })?;
        serde_json::from_slice(&text).map_err(|err| {
            Error::io(
                format!("reading {}", record.display()),
                std::io::Error::new(std::io::ErrorKind::InvalidData, err),
            )
        })
    }

    /// Where checkpoint `name`'s images are.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub fn images(&self, name: &str) -> Result<PathBuf, Error> {
        self.get(name)?;
        Ok(self.dir.join(name))
    }

    /// Every complete checkpoint, by name. A bundle without checkpoints has none.
    ///
    /// # Errors
    /// `Internal` when the directory or a record cannot be read.
    pub fn list(&self) -> Result<Vec<Checkpoint>, Error> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(Error::io(format!("reading {}", self.dir.display()), err)),
        };
        let mut checkpoints = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|err| Error::io(format!("reading {}", self.dir.display()), err))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // Hidden entries are checkpoints being made; anything else without a record is
            // not ours.
            if validate_name(&name).is_err() || !entry.path().join(RECORD).is_file() {
                continue;
            }
            checkpoints.push(self.get(&name)?);
        }
        checkpoints.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(checkpoints)
    }

    /// Removes checkpoint `name`.
    ///
    /// # Errors
    /// `InvalidArgument`, `NotFound`, or `Internal`.
    pub fn delete(&self, name: &str) -> Result<(), Error> {
        self.get(name)?;
        let dir = self.dir.join(name);
        std::fs::remove_dir_all(&dir)
            .map_err(|err| Error::io(format!("removing {}", dir.display()), err))
    }

    fn not_found(&self, name: &str) -> Error {
        Error::NotFound {
            name: name.to_owned(),
            dir: self.dir.clone(),
        }
    }

    fn already_exists(&self, name: &str) -> Error {
        Error::AlreadyExists {
            name: name.to_owned(),
            dir: self.dir.clone(),
        }
    }
}

/// A checkpoint being made: its images go to [`Pending::image_dir`]. Dropped without
/// [`Pending::commit`], its directory is removed.
#[derive(Debug)]
pub struct Pending {
    store: Store,
    staging: PathBuf,
    name: String,
    flags: Flags,
    dumped_by: Option<String>,
    committed: bool,
}

impl Pending {
    /// Records what dumps it (see [`Checkpoint::dumped_by`]).
    #[must_use]
    pub fn dumped_by(mut self, dumper: impl Into<String>) -> Self {
        self.dumped_by = Some(dumper.into());
        self
    }

    /// The (hidden) directory CRIU dumps into.
    pub fn image_dir(&self) -> &Path {
        &self.staging
    }

    /// Records the checkpoint and moves it into place.
    ///
    /// # Errors
    /// `AlreadyExists` if another checkpoint of the name appeared meanwhile, or `Internal`.
    pub fn commit(mut self) -> Result<Checkpoint, Error> {
        let checkpoint = Checkpoint {
            name: self.name.clone(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            flags: self.flags,
            dumped_by: self.dumped_by.clone(),
        };
        let record = self.staging.join(RECORD);
        let json = serde_json::to_vec_pretty(&checkpoint)
            .map_err(|err| Error::io(format!("encoding {}", record.display()), err.into()))?;
        std::fs::write(&record, json)
            .map_err(|err| Error::io(format!("writing {}", record.display()), err))?;
        let target = self.store.dir.join(&self.name);
        // rename(2) onto an existing non-empty directory fails: no checkpoint is replaced.
        match std::fs::rename(&self.staging, &target) {
            Ok(()) => {
                self.committed = true;
                Ok(checkpoint)
            }
            Err(_) if target.exists() => Err(self.store.already_exists(&self.name)),
            Err(err) => Err(Error::io(
                format!("moving {} to {}", self.staging.display(), target.display()),
                err,
            )),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// The error lines of a CRIU log (`dump.log`, `restore.log`), without their timestamps: what
/// a failed dump or restore says went wrong. At most `max` lines, the last ones.
pub fn criu_error_lines(log: &Path, max: usize) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(log) else {
        return Vec::new();
    };
    let errors: Vec<String> = text
        .lines()
        .filter(|line| line.contains("Error (") && !line.contains("RLIMIT_NOFILE"))
        .map(|line| {
            // "(00.089371) Error (criu/files-reg.c:1790): Can't lookup ..."
            line.split_once(") ")
                .map_or(line, |(_, rest)| rest)
                .trim()
                .to_owned()
        })
        .collect();
    let skip = errors.len().saturating_sub(max);
    errors.into_iter().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        for bad in ["", "a/b", "..", "../x", ".hidden", "a\0b"] {
            let err = validate_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
        assert_eq!(
            validate_name(&"x".repeat(256)).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        validate_name("before-upgrade.1").unwrap();
    }

    #[test]
    fn a_checkpoint_appears_whole_with_its_flags() {
        let bundle = tempfile::tempdir().unwrap();
        let store = Store::new(bundle.path());
        assert!(store.list().unwrap().is_empty());
        let flags = Flags {
            exit: true,
            tcp: true,
            unix_sockets: false,
            shell: true,
        };
        let pending = store.begin("one", flags).unwrap().dumped_by("runc");
        std::fs::write(pending.image_dir().join("core-1.img"), b"image").unwrap();
        assert!(store.list().unwrap().is_empty(), "not listed before commit");
        let made = pending.commit().unwrap();
        assert_eq!(made.flags, flags);
        assert_eq!(made.dumped_by.as_deref(), Some("runc"));
        assert_eq!(store.list().unwrap(), vec![made.clone()]);
        assert_eq!(store.get("one").unwrap(), made);
        assert!(store.images("one").unwrap().join("core-1.img").is_file());
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(bundle.path().join("checkpoints/one/config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(record["unixSockets"], false);
        assert_eq!(record["exit"], true);
        assert_eq!(record["name"], "one");
    }

    #[test]
    fn a_dropped_checkpoint_leaves_nothing_and_names_are_unique() {
        let bundle = tempfile::tempdir().unwrap();
        let store = Store::new(bundle.path());
        drop(store.begin("gone", Flags::default()).unwrap());
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 0);
        store
            .begin("x", Flags::default())
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(
            store.begin("x", Flags::default()).unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        let racing = store.begin("y", Flags::default()).unwrap();
        store
            .begin("y", Flags::default())
            .unwrap()
            .commit()
            .unwrap();
        std::fs::write(racing.image_dir().join("a.img"), b"a").unwrap();
        assert_eq!(
            racing.commit().unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        assert_eq!(store.list().unwrap().len(), 2);
        assert_eq!(
            std::fs::read_dir(store.dir()).unwrap().count(),
            2,
            "no staging left"
        );
    }

    #[test]
    fn deleting_a_missing_checkpoint_is_not_found() {
        let bundle = tempfile::tempdir().unwrap();
        let store = Store::new(bundle.path());
        assert_eq!(
            store.delete("nope").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        store
            .begin("x", Flags::default())
            .unwrap()
            .commit()
            .unwrap();
        store.delete("x").unwrap();
        assert_eq!(store.get("x").unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn criu_error_lines_are_the_errors_without_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dump.log");
        std::fs::write(
            &log,
            "(00.067073) Warn  (criu/kerndat.c:1285): Can't keep kdat cache on non-tempfs\n\
             (00.067216) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n\
             (00.089371) Error (criu/files-reg.c:1790): Can't lookup mount=27 for fd=1 path=/tmp/cr/out\n\
             (00.185937) Error (criu/cr-dump.c:2111): Dumping FAILED.\n",
        )
        .unwrap();
        assert_eq!(
            criu_error_lines(&log, 5),
            vec![
                "Error (criu/files-reg.c:1790): Can't lookup mount=27 for fd=1 path=/tmp/cr/out",
                "Error (criu/cr-dump.c:2111): Dumping FAILED."
            ]
        );
        assert_eq!(criu_error_lines(&log, 1).len(), 1);
        assert!(criu_error_lines(&dir.path().join("missing.log"), 5).is_empty());
    }
}
