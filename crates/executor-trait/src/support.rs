//! Small helpers every executor needs, so that they check and name things alike.

use std::path::{Path, PathBuf};

use crate::{ContainerId, Error};

/// The `config.json` of `bundle`, which must be an absolute path to a directory holding one.
///
/// # Errors
/// `InvalidArgument` naming the bundle.
pub fn bundle_config(bundle: &Path) -> Result<PathBuf, Error> {
    if !bundle.is_absolute() {
        return Err(Error::invalid_argument(format!(
            "bundle path {} is not absolute",
            bundle.display()
        )));
    }
    let config = bundle.join("config.json");
    if !config.is_file() {
        return Err(Error::invalid_argument(format!(
            "bundle {} has no config.json",
            bundle.display()
        )));
    }
    Ok(config)
}

/// A fresh directory in `parent`, named `<prefix>…`, for one operation's transient files on
/// container `id`; removed when dropped.
///
/// # Errors
/// `Io`, naming the directory and the container.
pub fn scratch_dir(
    parent: &Path,
    prefix: &str,
    id: &ContainerId,
) -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .map_err(|err| {
            Error::io(
                format!(
                    "creating a scratch directory in {} for container {id}",
                    parent.display()
                ),
                err,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_must_be_absolute_and_hold_a_config() {
        let dir = tempfile::tempdir().unwrap();
        let relative = bundle_config(Path::new("b")).unwrap_err();
        assert!(relative.to_string().contains("not absolute"), "{relative}");
        let empty = bundle_config(dir.path()).unwrap_err();
        assert!(empty.to_string().contains("has no config.json"), "{empty}");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        assert_eq!(
            bundle_config(dir.path()).unwrap(),
            dir.path().join("config.json")
        );
    }
}
