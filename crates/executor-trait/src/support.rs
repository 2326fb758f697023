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

/// The OCI spec of `bundle`, loaded from its `config.json`.
///
/// # Errors
/// `InvalidArgument` naming the file and why it could not be read or parsed (the OS error,
/// or the JSON error with its line and column).
pub fn load_spec(bundle: &Path) -> Result<oci_spec::runtime::Spec, Error> {
    let config = bundle_config(bundle)?;
    oci_spec::runtime::Spec::load(&config).map_err(|err| {
        let mut why = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            why = format!("{why}: {cause}");
            source = cause.source();
        }
        Error::invalid_argument(format!("bundle config {}: {why}", config.display()))
    })
}

/// Checks what a process to start is made of before a runtime sees it: `args` with a
/// non-empty program, `env` entries of the form `KEY=value` with a non-empty key, and no NUL
/// byte anywhere (the kernel takes C strings).
///
/// # Errors
/// `InvalidArgument` naming the offending argument or variable.
pub fn check_process(args: &[String], env: &[String], cwd: &str) -> Result<(), Error> {
    match args.first() {
        None => return Err(Error::invalid_argument("args must not be empty")),
        Some(program) if program.is_empty() => {
            return Err(Error::invalid_argument(
                "args[0], the program, must not be empty",
            ));
        }
        Some(_) => {}
    }
    if let Some(arg) = args.iter().find(|arg| arg.contains('\0')) {
        return Err(Error::invalid_argument(format!(
            "argument {arg:?} contains a NUL byte"
        )));
    }
    for var in env {
        let key = var.split_once('=').map(|(key, _)| key);
        if key.is_none_or(str::is_empty) || var.contains('\0') {
            return Err(Error::invalid_argument(format!(
                "environment variable {var:?} is not KEY=value"
            )));
        }
    }
    if cwd.contains('\0') {
        return Err(Error::invalid_argument(format!(
            "cwd {cwd:?} contains a NUL byte"
        )));
    }
    Ok(())
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

    #[test]
    fn a_config_that_does_not_parse_is_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{\"ociVersion\": 7}").unwrap();
        let err = load_spec(dir.path()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        let message = err.to_string();
        assert!(message.contains("config.json"), "{message}");
        assert!(message.contains("line 1 column"), "{message}");
    }

    #[test]
    fn processes_need_a_program_proper_variables_and_no_nul() {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let ok = check_process(&strings(&["sleep", "1"]), &strings(&["A=1", "B="]), "/");
        assert!(ok.is_ok(), "{ok:?}");
        for (args, env, cwd, says) in [
            (&[][..], &[][..], "", "must not be empty"),
            (&[""][..], &[][..], "", "the program"),
            (&["sh", "a\0b"][..], &[][..], "", "NUL"),
            (&["sh"][..], &["NOEQUALS"][..], "", "KEY=value"),
            (&["sh"][..], &["=1"][..], "", "KEY=value"),
            (&["sh"][..], &["A=\0"][..], "", "KEY=value"),
            (&["sh"][..], &[][..], "/tmp\0", "NUL"),
        ] {
            let err = check_process(&strings(args), &strings(env), cwd).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
