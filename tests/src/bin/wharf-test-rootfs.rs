//! Builds the busybox rootfs the tests, benchmarks and demo share (if missing) and prints
//! its path. Run by `cargo xtask setup`.
#![allow(clippy::print_stdout)]

fn main() {
    if let Some(reason) = wharf_tests::system::missing_busybox() {
        eprintln!("cannot build the rootfs: {reason}");
        std::process::exit(1);
    }
    println!("{}", wharf_tests::bundle::rootfs().display());
}
