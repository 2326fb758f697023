//! The bundle libcontainer is given: a *shadow bundle* in the executor's own state, a copy
//! of the caller's `config.json` that libcontainer reads at create and again at every exec.
//! So the container does not depend on the caller's bundle after create (runc keeps the
//! spec in its state too), a bundle with no `linux.cgroupsPath` gets an explicit one under
//! wharf's parent instead of libcontainer's default (`:youki:<id>`), and paths are made
//! absolute. A `bundle` symlink points back at the original, so that [`origin`] can report
//! the bundle the caller gave.

use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Spec};
use wharf_executor::{ContainerId, Error};

/// The symlink in a shadow bundle that points at the caller's bundle.
const ORIGIN_LINK: &str = "bundle";

/// A shadow bundle, ready for libcontainer.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The directory to give libcontainer.
    pub(crate) dir: PathBuf,
    /// Whether the container gets a network namespace of its own (whose loopback is down).
    pub(crate) own_network: bool,
}

/// Validates `bundle` and writes its shadow to `shadow_dir`.
pub(crate) fn prepare(
    bundle: &Path,
    id: &ContainerId,
    cgroup_parent: &Path,
    shadow_dir: &Path,
) -> Result<Prepared, Error> {
    // Every error of `load_spec` is an InvalidArgument naming the file; add the container.
    let mut spec = wharf_executor::support::load_spec(bundle)
        .map_err(|err| Error::invalid_argument(format!("container {id}: {err}")))?;
    make_self_contained(&mut spec, bundle, id, cgroup_parent);
    let own_network = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().as_ref())
        .is_some_and(|namespaces| {
            namespaces
                .iter()
                .any(|ns| ns.typ() == LinuxNamespaceType::Network && ns.path().is_none())
        });
    std::fs::create_dir_all(shadow_dir)
        .map_err(|err| Error::io(format!("creating {}", shadow_dir.display()), err))?;
    spec.save(shadow_dir.join("config.json")).map_err(|err| {
        Error::io(
            format!("writing {}/config.json", shadow_dir.display()),
            std::io::Error::other(err.to_string()),
        )
    })?;
    std::os::unix::fs::symlink(bundle, shadow_dir.join(ORIGIN_LINK)).map_err(|err| {
        Error::io(
            format!("linking {} to its bundle", shadow_dir.display()),
            err,
        )
    })?;
    Ok(Prepared {
        dir: shadow_dir.to_path_buf(),
        own_network,
    })
}

/// Gives `spec` an explicit cgroup path (`<cgroup_parent>/<id>`) if it has none, and makes
/// it independent of the directory it is read from: an absolute root and absolute bind-mount
/// sources.
fn make_self_contained(spec: &mut Spec, bundle: &Path, id: &ContainerId, cgroup_parent: &Path) {
    let mut linux = spec.linux().clone().unwrap_or_default();
    if linux.cgroups_path().is_none() {
        linux.set_cgroups_path(Some(cgroup_parent.join(id.as_str())));
        spec.set_linux(Some(linux));
    }
    if let Some(mut root) = spec.root().clone()
        && root.path().is_relative()
    {
        root.set_path(bundle.join(root.path()));
        spec.set_root(Some(root));
    }
    if let Some(mut mounts) = spec.mounts().clone() {
        for mount in &mut mounts {
            let is_bind = mount
                .options()
                .as_ref()
                .is_some_and(|options| options.iter().any(|o| o == "bind" || o == "rbind"));
            if let Some(source) = mount.source().clone()
                && is_bind
                && source.is_relative()
            {
                mount.set_source(Some(bundle.join(source)));
            }
        }
        spec.set_mounts(Some(mounts));
    }
}

/// The bundle the caller gave, for a bundle [`prepare`] returned.
pub(crate) fn origin(libcontainer_bundle: &Path) -> PathBuf {
    std::fs::read_link(libcontainer_bundle.join(ORIGIN_LINK))
        .unwrap_or_else(|_| libcontainer_bundle.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::{LinuxBuilder, MountBuilder, RootBuilder, SpecBuilder};

    fn id() -> ContainerId {
        ContainerId::new("web").unwrap()
    }

    #[test]
    fn a_spec_without_a_cgroup_path_gets_one_under_the_parent_and_absolute_paths() {
        let mut spec = SpecBuilder::default()
            .root(RootBuilder::default().path("rootfs").build().unwrap())
            .mounts(vec![
                MountBuilder::default()
                    .destination("/data")
                    .source("data")
                    .options(vec!["rbind".to_owned()])
                    .build()
                    .unwrap(),
                MountBuilder::default()
                    .destination("/proc")
                    .source("proc")
                    .typ("proc")
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        make_self_contained(&mut spec, Path::new("/b"), &id(), Path::new("/wharf"));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/wharf/web"))
        );
        assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("/b/rootfs"));
        let mounts = spec.mounts().as_ref().unwrap();
        assert_eq!(mounts[0].source().as_deref(), Some(Path::new("/b/data")));
        // Not a bind mount: its source is not a path.
        assert_eq!(mounts[1].source().as_deref(), Some(Path::new("proc")));
    }

    #[test]
    fn a_cgroup_path_given_is_kept() {
        let mut spec = SpecBuilder::default()
            .root(RootBuilder::default().path("/abs/rootfs").build().unwrap())
            .linux(
                LinuxBuilder::default()
                    .cgroups_path("/mine/web")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let before = spec.clone();
        make_self_contained(&mut spec, Path::new("/b"), &id(), Path::new("/wharf"));
        assert_eq!(spec, before);
    }

    #[test]
    fn a_shadow_bundle_points_back_at_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        SpecBuilder::default()
            .root(RootBuilder::default().path("rootfs").build().unwrap())
            .build()
            .unwrap()
            .save(bundle.join("config.json"))
            .unwrap();
        let shadow = dir.path().join("shadow");
        let used = prepare(&bundle, &id(), Path::new("/wharf"), &shadow).unwrap();
        assert_eq!(used.dir, shadow);
        assert_eq!(origin(&used.dir), bundle);
        let written = Spec::load(shadow.join("config.json")).unwrap();
        assert_eq!(
            written.root().as_ref().unwrap().path(),
            &bundle.join("rootfs")
        );
    }

    #[test]
    fn bad_bundles_are_invalid_arguments_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let shadow = dir.path().join("shadow");
        let relative = prepare(Path::new("b"), &id(), Path::new("/wharf"), &shadow).unwrap_err();
        assert_eq!(relative.kind(), wharf_executor::ErrorKind::InvalidArgument);
        let empty = prepare(dir.path(), &id(), Path::new("/wharf"), &shadow).unwrap_err();
        assert!(empty.to_string().contains("has no config.json"), "{empty}");
        std::fs::write(dir.path().join("config.json"), "{").unwrap();
        let garbled = prepare(dir.path(), &id(), Path::new("/wharf"), &shadow).unwrap_err();
        assert_eq!(garbled.kind(), wharf_executor::ErrorKind::InvalidArgument);
        assert!(garbled.to_string().contains("container web"), "{garbled}");
        assert!(!shadow.exists());
    }
}
