//! CRIU 4.x for checkpoint/restore. Debian 12's `criu` 3.17 fails on recent kernels
//! ("Unexpected rt vDSO area bounds"), and trixie's binary needs a newer glibc, so setup
//! builds trixie's upstream tarball: fetched through a `deb-src`-only trixie line (no trixie
//! binary can be installed by accident), verified against apt's signed index, built with
//! `make criu` and installed as [`CRIU_PATH`], where wharf looks by default (`criu-path`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run;

/// Where setup installs CRIU; wharf's default `criu-path`.
pub(crate) const CRIU_PATH: &str = "/usr/local/sbin/criu";
const VERSION: &str = "4.1.1";
const TARBALL: &str = "criu_4.1.1.orig.tar.xz";
const SOURCES_FILE: &str = "/etc/apt/sources.list.d/wharf-trixie-src.sources";

/// What `make criu` needs (CRIU's Makefile.packages: required, plus the optional libraries
/// it probes for with pkg-config), and `iptables`, which `runc checkpoint` runs.
pub(crate) const BUILD_PACKAGES: &[&str] = &[
    "build-essential",
    "python3",
    "libprotobuf-dev",
    "libprotobuf-c-dev",
    "protobuf-c-compiler",
    "protobuf-compiler",
    "python3-protobuf",
    "libnl-3-dev",
    "libcap-dev",
    "uuid-dev",
    "libnet1-dev",
    "libbsd-dev",
    "libgnutls28-dev",
    "libnftables-dev",
    "iptables",
];

/// Whether the CRIU at `path` is a 4.x.
fn is_criu_4(path: &str) -> bool {
    Command::new(path)
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("Version: 4."))
}

pub(crate) fn install(root: &Path) -> Result<()> {
    if is_criu_4(CRIU_PATH) {
        eprintln!("setup: CRIU 4 present at {CRIU_PATH}");
        return Ok(());
    }
    eprintln!("setup: building CRIU {VERSION} from Debian trixie's source tarball");
    add_trixie_sources()?;
    let work = root.join("target/criu-build");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let tarball = work.join(TARBALL);
    if !tarball.is_file() {
        // Exits 100: the .dsc and .debian.tar.xz are not on the mirror; the tarball is.
        let status = Command::new("apt-get")
            .args(["source", "--download-only", "criu/trixie"])
            .current_dir(&work)
            .status()
            .context("running apt-get source")?;
        if !tarball.is_file() {
            bail!("apt-get source criu/trixie ({status}) did not fetch {TARBALL}");
        }
    }
    verify_sha256(&tarball)?;
    let source = work.join(format!("criu-{VERSION}"));
    if !source.is_dir() {
        run(Command::new("tar")
            .arg("xf")
            .arg(&tarball)
            .current_dir(&work))?;
    }
    run(Command::new("make")
        .args(["-j2", "criu"])
        .current_dir(&source))?;
    run(Command::new("install")
        .args(["-D", "-m", "0755"])
        .arg(source.join("criu/criu"))
        .arg(CRIU_PATH))?;
    if !is_criu_4(CRIU_PATH) {
        bail!("{CRIU_PATH} was installed but does not report version 4");
    }
    let _ = std::fs::remove_dir_all(&source);
    eprintln!("setup: installed CRIU {VERSION} at {CRIU_PATH}");
    Ok(())
}

/// A `deb-src`-only line for trixie on the mirror bookworm uses.
fn add_trixie_sources() -> Result<()> {
    if Path::new(SOURCES_FILE).exists() {
        return Ok(());
    }
    let mirror = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("URIs:").map(|u| u.trim().to_owned()))
                .filter(|uri| !uri.contains("security"))
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_owned());
    std::fs::write(
        SOURCES_FILE,
        format!(
            "# Added by wharf's `cargo xtask setup`: trixie *sources* only, to build CRIU 4.\n\
             Types: deb-src\nURIs: {mirror}\nSuites: trixie\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    )
    .with_context(|| format!("writing {SOURCES_FILE}"))?;
    run(Command::new("apt-get").args(["update", "-q"]))
}

/// Checks the tarball against the sha256 apt's signed trixie index gives for it.
fn verify_sha256(tarball: &Path) -> Result<()> {
    let index = Command::new("apt-cache")
        .args(["showsrc", "criu"])
        .output()
        .context("running apt-cache showsrc criu")?;
    let index = String::from_utf8_lossy(&index.stdout);
    let expected: Vec<&str> = index
        .lines()
        .filter(|l| l.trim_end().ends_with(TARBALL))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            // Checksums-Sha256 lines: "<sha256> <size> <file>".
            (fields.len() == 3 && fields[0].len() == 64).then_some(fields[0])
        })
        .collect();
    if expected.is_empty() {
        bail!("apt's index has no sha256 for {TARBALL}");
    }
    let actual = Command::new("sha256sum")
        .arg(tarball)
        .output()
        .context("running sha256sum")?;
    let actual = String::from_utf8_lossy(&actual.stdout);
    let actual = actual.split_whitespace().next().unwrap_or_default();
    if !expected.contains(&actual) {
        bail!(
            "{} has sha256 {actual}, apt's signed index says {}: refusing to build it",
            tarball.display(),
            expected.join(" or ")
        );
    }
    eprintln!("setup: {TARBALL} sha256 {actual} matches apt's index");
    Ok(())
}
