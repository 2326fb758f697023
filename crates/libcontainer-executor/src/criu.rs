//! Checkpoint and restore with CRIU. The dump goes through libcontainer's own
//! `Container::checkpoint`; libcontainer 0.7 has no restore, so the restore drives CRIU
//! through `rust-criu` (the crate libcontainer dumps with) the way runc does: the rootfs
//! bind-mounted as CRIU's root, bind and cgroup mounts given back as external mounts, the
//! caller's stdio inherited in place of the dumped pipes, the restored init made a sibling
//! of CRIU (so a child of the caller), and the init moved into the container's cgroup before
//! its children are restored.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libcgroups::common::{
    AnyCgroupManager, CgroupConfig, CgroupManager, CgroupSetup, ControllerOpt,
};
use libcontainer::config::YoukiConfig;
use libcontainer::container::{CheckpointOptions, Container, ContainerStatus};
use libcontainer::error::LibcontainerError;
use libcontainer::oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Mount, Spec};
use rust_criu::rust_criu_protobuf::rpc::Criu_notify;
use rust_criu::{CgMode, Criu};
use wharf_executor::{
    CheckpointRequest, ContainerId, CriuOptions, Error, ErrorKind, Pid, StdioFds,
};

use crate::error::{chain, from_libcontainer};

/// What libcontainer's dump writes next to the images: the paths of the init's fds 0-2.
const DESCRIPTORS_JSON: &str = "descriptors.json";
/// CRIU's restore log, in the work directory.
pub(crate) const RESTORE_LOG: &str = "restore.log";
/// The controllers libcgroups moves a container into (v1 hierarchies holding any of them
/// show the container's own cgroup; the others show the caller's).
const MANAGED_CONTROLLERS: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// Dumps `container` through libcontainer, which runs the `criu` found in `PATH`.
pub(crate) fn checkpoint(container: &mut Container, req: &CheckpointRequest) -> Result<(), Error> {
    let options = CheckpointOptions {
        ext_unix_sk: req.options.external_unix_sockets,
        file_locks: false,
        image_path: req.image_dir.clone(),
        leave_running: req.options.leave_running,
        shell_job: req.options.shell_job,
        tcp_established: req.options.tcp_established,
        work_path: Some(req.work_dir.clone()),
        manage_cgroups_mode: CgMode::SOFT,
        link_remap: false,
    };
    container
        .checkpoint(&options)
        .map_err(|err| from_libcontainer(&req.id, "checkpoint", err))
}

/// What a restore needs, the shadow bundle prepared.
pub(crate) struct Restore<'a> {
    pub(crate) id: &'a ContainerId,
    pub(crate) criu: &'a Path,
    /// The shadow bundle (absolute root, explicit cgroup path).
    pub(crate) bundle: &'a Path,
    /// libcontainer's state directory for the container, to be written.
    pub(crate) container_dir: &'a Path,
    pub(crate) stdio: StdioFds,
    pub(crate) image_dir: &'a Path,
    pub(crate) work_dir: &'a Path,
    pub(crate) options: CriuOptions,
}

/// Restores the container and records it in libcontainer's state as running; returns its
/// init. On failure the container's cgroup is removed (the caller removes its files).
pub(crate) fn restore(req: Restore<'_>) -> Result<Pid, Error> {
    let id = req.id;
    let spec = Spec::load(req.bundle.join("config.json"))
        .map_err(|err| from_libcontainer(id, "restore", err.into()))?;
    let config = YoukiConfig::from_spec(&spec, id.as_str())
        .map_err(|err| from_libcontainer(id, "restore", err.into()))?;
    let cgroup = cgroup_manager(id, &config.cgroup_path)?;
    let restored = restore_into(&req, &spec, &config);
    match restored {
        Ok(pid) => Ok(pid),
        Err(err) => {
            if let Err(cleanup) = cgroup.remove() {
                tracing::warn!(error = %cleanup, "removing the cgroup of a failed restore");
            }
            Err(err)
        }
    }
}

fn restore_into(req: &Restore<'_>, spec: &Spec, config: &YoukiConfig) -> Result<Pid, Error> {
    let id = req.id;
    let linux = spec.linux().clone().unwrap_or_default();
    if let Some(ns) = linux.namespaces().iter().flatten().find(|ns| {
        ns.path().is_some()
            && matches!(
                ns.typ(),
                LinuxNamespaceType::Network | LinuxNamespaceType::Pid
            )
    }) {
        return Err(Error::Unsupported {
            message: format!(
                "the libcontainer executor cannot restore container {id} into the existing \
                 {:?} namespace its bundle names",
                ns.typ()
            ),
        });
    }
    let rootfs = spec
        .root()
        .as_ref()
        .map(|root| root.path().clone())
        .ok_or_else(|| Error::invalid_argument(format!("bundle of container {id} has no root")))?;
    std::fs::create_dir_all(req.container_dir)
        .map_err(|err| Error::io(format!("creating {}", req.container_dir.display()), err))?;
    config.save(req.container_dir).map_err(|err| {
        from_libcontainer(id, "restore", LibcontainerError::Other(err.to_string()))
    })?;

    let mut criu = Criu::new_with_criu_path(req.criu.display().to_string())
        .map_err(|err| Error::io("preparing CRIU".to_owned(), std::io::Error::other(err)))?;
    let images = File::open(req.image_dir)
        .map_err(|err| Error::io(format!("opening {}", req.image_dir.display()), err))?;
    let work = File::open(req.work_dir)
        .map_err(|err| Error::io(format!("opening {}", req.work_dir.display()), err))?;
    criu.set_images_dir_fd(images.as_raw_fd());
    criu.set_work_dir_fd(work.as_raw_fd());
    criu.set_log_file(RESTORE_LOG.to_owned());
    criu.set_log_level(4);

    let root = RootMount::new(&rootfs, &req.work_dir.join("criu-root"))
        .map_err(|err| Error::io(format!("mounting {} for CRIU", rootfs.display()), err))?;
    criu.set_root(root.path.display().to_string());
    for (key, value) in external_mounts(spec.mounts().iter().flatten(), &config.cgroup_path)
        .map_err(|err| Error::io("listing the host's cgroup mounts".to_owned(), err))?
    {
        criu.set_external_mount(key, value);
    }
    // The dumped init's stdio pipes become the caller's.
    let inherited = inherit_stdio(&mut criu, req.image_dir, &req.stdio)
        .map_err(|err| Error::io(format!("giving container {id} its stdio"), err))?;

    criu.set_rst_sibling(true);
    criu.set_manage_cgroups(true);
    criu.cgroups_mode(CgMode::IGNORE);
    criu.set_tcp_established(req.options.tcp_established);
    criu.set_ext_unix_sk(req.options.external_unix_sockets);
    criu.set_shell_job(req.options.shell_job);
    criu.set_file_locks(false);
    criu.set_notify_scripts(true);
    criu.set_notify_cb(on_notify);

    let resources = linux.resources().clone().unwrap_or_default();
    let slot = NotifySlot::claim(id, &config.cgroup_path, resources)?;
    let result = criu.restore();
    let notified = slot.release();
    drop(inherited);
    drop(root);
    if let Err(err) = result {
        let reason = notified.error.unwrap_or_else(|| err.to_string());
        return Err(Error::Runtime {
            id: id.clone(),
            command: "criu restore".to_owned(),
            message: format!("{reason} (see {RESTORE_LOG})"),
            kind: ErrorKind::Internal,
        });
    }
    let (raw_pid, pid) = notified
        .pid
        .and_then(|raw| Some((raw, Pid::from_raw(raw)?)))
        .ok_or_else(|| Error::Runtime {
            id: id.clone(),
            command: "criu restore".to_owned(),
            message: "CRIU restored without naming the restored init".to_owned(),
            kind: ErrorKind::Internal,
        })?;
    let mut container = Container::new(
        id.as_str(),
        ContainerStatus::Running,
        Some(raw_pid),
        req.bundle,
        req.container_dir,
    )
    .map_err(|err| from_libcontainer(id, "restore", err))?;
    container
        .set_systemd(false)
        .set_creator(rustix::process::geteuid().as_raw())
        .save()
        .map_err(|err| from_libcontainer(id, "restore", err))?;
    Ok(pid)
}

fn cgroup_manager(id: &ContainerId, cgroup_path: &Path) -> Result<AnyCgroupManager, Error> {
    libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: cgroup_path.to_path_buf(),
        systemd_cgroup: false,
        container_name: id.to_string(),
    })
    .map_err(|err| from_libcontainer(id, "restore", LibcontainerError::from(err)))
}

/// Moves `pid` into the cgroup (creating it), then applies the limits (libcgroups writes
/// them only into existing directories), as libcontainer's create does.
fn enter_cgroup(notified: &Notified, pid: i32) -> Result<(), String> {
    let cgroup = libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: notified.cgroup_path.clone(),
        systemd_cgroup: false,
        container_name: notified.container.clone(),
    })
    .map_err(|err| chain(&err))?;
    cgroup
        .add_task(libcgroups_nix::unistd::Pid::from_raw(pid))
        .map_err(|err| chain(&err))?;
    let resources = &notified.resources;
    cgroup
        .apply(&ControllerOpt {
            resources,
            disable_oom_killer: resources
                .memory()
                .as_ref()
                .and_then(|m| m.disable_oom_killer())
                .unwrap_or(false),
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|err| chain(&err))
}

/// CRIU's external mounts: `key` (the mount point the dump recorded) to `value` (what to
/// bind there now). Bind mounts get their source again; on v1 hosts each cgroup hierarchy
/// the container saw gets its directory for the container's cgroup (or, for hierarchies
/// libcgroups does not move containers into, the caller's own).
fn external_mounts<'a>(
    mounts: impl Iterator<Item = &'a Mount>,
    cgroup_path: &Path,
) -> std::io::Result<Vec<(String, String)>> {
    let mut external = Vec::new();
    let mut cgroup_mount = false;
    for mount in mounts {
        if is_bind(mount) {
            if let Some(source) = mount.source() {
                external.push((
                    mount.destination().display().to_string(),
                    source.display().to_string(),
                ));
            }
        } else if mount.typ().as_deref() == Some("cgroup") {
            cgroup_mount = true;
        }
    }
    let v1 = matches!(
        libcgroups::common::get_cgroup_setup(),
        Ok(CgroupSetup::Legacy | CgroupSetup::Hybrid)
    );
    if cgroup_mount && v1 {
        let own = own_v1_cgroups()?;
        let relative = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
        let hierarchies =
            libcgroups::v1::util::list_subsystem_mount_points().map_err(std::io::Error::other)?;
        for mount_point in hierarchies {
            let Some(name) = mount_point.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !mount_point.starts_with("/sys/fs/cgroup") {
                continue;
            }
            let managed = name.split(',').any(|c| MANAGED_CONTROLLERS.contains(&c));
            let dir = if managed {
                let dir = mount_point.join(relative);
                std::fs::create_dir_all(&dir)?;
                dir
            } else {
                let key = if name == "systemd" {
                    "name=systemd".to_owned()
                } else {
                    name.to_owned()
                };
                let mine = own.get(&key).map_or("/", String::as_str);
                mount_point.join(mine.trim_start_matches('/'))
            };
            let key = mount_point.display().to_string();
            external.push((key, dir.display().to_string()));
        }
    }
    Ok(external)
}

fn is_bind(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("bind")
        || mount
            .options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// This process's v1 cgroups: controllers (comma-joined, or `name=...`) to path.
fn own_v1_cgroups() -> std::io::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            (!controllers.is_empty()).then(|| (controllers.to_owned(), path.to_owned()))
        })
        .collect())
}

/// Inherited copies (without close-on-exec, so `criu swrk` gets them) of the caller's
/// stdio, registered under the pipe names the dump recorded; closed on drop.
fn inherit_stdio(
    criu: &mut Criu,
    image_dir: &Path,
    stdio: &StdioFds,
) -> std::io::Result<Vec<OwnedFd>> {
    let path = image_dir.join(DESCRIPTORS_JSON);
    let text = std::fs::read_to_string(&path)?;
    let dumped: Vec<String> = serde_json::from_str(&text).map_err(|err| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {err}", path.display()),
        )
    })?;
    let mut inherited = Vec::new();
    for (dumped, fd) in dumped
        .iter()
        .zip([&stdio.stdin, &stdio.stdout, &stdio.stderr])
    {
        if dumped.starts_with("pipe:") {
            // dup() leaves close-on-exec clear.
            let copy = rustix::io::dup(fd)?;
            criu.add_inherit_fd(copy.as_raw_fd(), dumped.clone())
                .map_err(std::io::Error::other)?;
            inherited.push(copy);
        }
    }
    Ok(inherited)
}

/// The rootfs bind-mounted (recursively) on a directory of its own: CRIU wants its root to
/// be a mount point. Unmounted and removed on drop.
struct RootMount {
    path: PathBuf,
}

impl RootMount {
    fn new(rootfs: &Path, path: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(path)?;
        if let Err(err) = rustix::mount::mount_bind_recursive(rootfs, path) {
            let _ = std::fs::remove_dir(path);
            return Err(err.into());
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for RootMount {
    fn drop(&mut self) {
        if let Err(err) = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!(path = %self.path.display(), error = %err, "unmounting CRIU's root");
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// What CRIU's notifications told the restore: CRIU calls back a plain `fn`, so this is
/// process-wide; one restore at a time (a shim restores one container).
#[derive(Debug, Default)]
struct Notified {
    cgroup_path: PathBuf,
    container: String,
    resources: LinuxResources,
    pid: Option<i32>,
    error: Option<String>,
}

static NOTIFIED: Mutex<Option<Notified>> = Mutex::new(None);

/// The claim on [`NOTIFIED`] for one restore.
struct NotifySlot(());

impl NotifySlot {
    fn claim(
        id: &ContainerId,
        cgroup_path: &Path,
        resources: LinuxResources,
    ) -> Result<Self, Error> {
        let mut slot = NOTIFIED.lock().unwrap_or_else(|poison| poison.into_inner());
        if slot.is_some() {
            return Err(Error::Runtime {
                id: id.clone(),
                command: "criu restore".to_owned(),
                message: "another restore is running in this process".to_owned(),
                kind: ErrorKind::FailedPrecondition,
            });
        }
        *slot = Some(Notified {
            cgroup_path: cgroup_path.to_path_buf(),
            container: id.to_string(),
            resources,
            ..Notified::default()
        });
        Ok(Self(()))
    }

    fn release(self) -> Notified {
        NOTIFIED
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take()
            .unwrap_or_default()
    }
}

/// CRIU's notifications: at `setup-namespaces` the restored init exists and nothing else
/// does yet, so moving it into the container's cgroup (with its limits) puts every process
/// restored after it there too; `post-restore` names it.
fn on_notify(script: &str, notify: &Criu_notify, _fd: Option<std::os::fd::RawFd>) -> i32 {
    let mut slot = NOTIFIED.lock().unwrap_or_else(|poison| poison.into_inner());
    let Some(notified) = slot.as_mut() else {
        return 0;
    };
    match script {
        "setup-namespaces" => match enter_cgroup(notified, notify.pid()) {
            Ok(()) => 0,
            Err(err) => {
                notified.error = Some(format!(
                    "moving the restored init into cgroup {}: {err}",
                    notified.cgroup_path.display()
                ));
                1
            }
        },
        "post-restore" => {
            notified.pid = Some(notify.pid());
            0
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::MountBuilder;

    fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
        MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    #[test]
    fn bind_mounts_are_given_back_their_source_and_the_rest_is_criu_s() {
        let mounts = [
            mount("/data", "none", "/srv/data", &["rbind", "ro"]),
            mount("/etc/hosts", "bind", "/run/hosts", &[]),
            mount("/tmp", "tmpfs", "tmpfs", &["nosuid"]),
            mount("/proc", "proc", "proc", &[]),
        ];
        let external = external_mounts(mounts.iter(), Path::new("/wharf/web")).unwrap();
        assert_eq!(
            external,
            vec![
                ("/data".to_owned(), "/srv/data".to_owned()),
                ("/etc/hosts".to_owned(), "/run/hosts".to_owned()),
            ]
        );
    }
}
