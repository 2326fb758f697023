//! Scraping `wharfd --metrics-address` and reading the scrape.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};

use crate::system::{skip_or_fail, wharf_binary};

/// A loopback address with a port free now, for a daemon's `--metrics-address`.
pub fn free_address() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    probe.local_addr().expect("the probe's address")
}

/// The daemon's scrape, through `wharf metrics`.
pub async fn scrape(address: SocketAddr) -> String {
    let output = tokio::process::Command::new(wharf_binary("wharf"))
        .args(["metrics", "--metrics-address", &address.to_string()])
        .output()
        .await
        .expect("running wharf metrics");
    assert!(
        output.status.success(),
        "wharf metrics failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the scrape is UTF-8")
}

/// The value of `series` (a name with its labels, as printed) in `scrape`.
pub fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Asserts `promtool check metrics` finds no problem in `scrape`. Skips (fails in CI) where
/// promtool is missing.
pub fn assert_promtool_passes(test: &str, scrape: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => {
            skip_or_fail(
                test,
                &format!(
                    "promtool cannot run ({err}); cargo xtask setup installs Debian's prometheus"
                ),
            );
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(scrape.as_bytes())
        .expect("writing the scrape to promtool");
    let output = child.wait_with_output().expect("waiting for promtool");
    assert!(
        output.status.success(),
        "promtool check metrics found problems:\n{}{}\nin:\n{scrape}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Sends a raw HTTP/1.0 request to `address`; returns the status line.
pub fn http_status(address: SocketAddr, method: &str, path: &str) -> String {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect(address).expect("connecting to the metrics address");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\n\r\n"
    )
    .expect("sending a request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("reading the answer");
    answer.lines().next().unwrap_or_default().to_owned()
}
