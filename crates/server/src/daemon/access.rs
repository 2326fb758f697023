//! Who may call the daemon: the socket's mode keeps everyone but the daemon's own user out by
//! default; with `allowed-uids`/`allowed-gids` the socket is opened to every local user and
//! each request is checked against the caller's peer credentials (`SO_PEERCRED`, taken when
//! the connection was accepted) instead.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use tonic::transport::server::UdsConnectInfo;

/// The callers the daemon serves: its own user always, plus the configured users and
/// groups. An empty policy admits only the daemon's own user (the socket's mode already
/// keeps others out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AccessPolicy {
    own_uid: u32,
    uids: Vec<u32>,
    gids: Vec<u32>,
}

/// The credentials of a connected caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl AccessPolicy {
    pub(crate) fn new(uids: &[u32], gids: &[u32]) -> Self {
        Self {
            own_uid: rustix::process::geteuid().as_raw(),
            uids: uids.to_vec(),
            gids: gids.to_vec(),
        }
    }

    /// Whether anyone besides the daemon's own user may connect: then the socket is made
    /// reachable by every local user, and this policy is what keeps them out.
    pub(crate) fn opens_the_socket(&self) -> bool {
        !self.uids.is_empty() || !self.gids.is_empty()
    }

    /// Whether `caller` is served. A group counts when it is the caller's primary group or,
    /// read from `/proc/<pid>/status` while the caller still runs, a supplementary one.
    pub(crate) fn admits(&self, caller: Caller) -> bool {
        if caller.uid == self.own_uid || self.uids.contains(&caller.uid) {
            return true;
        }
        if self.gids.is_empty() {
            return false;
        }
        if self.gids.contains(&caller.gid) {
            return true;
        }
        caller
            .pid
            .and_then(supplementary_groups)
            .is_some_and(|groups| groups.iter().any(|gid| self.gids.contains(gid)))
    }
}

fn supplementary_groups(pid: i32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    groups_in_status(&status)
}

/// The `Groups:` line of a `/proc/<pid>/status`.
fn groups_in_status(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    Some(
        line.split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    )
}

/// Checks every request against an [`AccessPolicy`]; a caller it does not admit gets
/// `PermissionDenied` naming its uid, before any service sees the request.
#[derive(Debug, Clone)]
pub(crate) struct AccessLayer(pub(crate) std::sync::Arc<AccessPolicy>);

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessCheck<S>;

    fn layer(&self, inner: S) -> AccessCheck<S> {
        AccessCheck {
            inner,
            policy: self.0.clone(),
        }
    }
}

/// See [`AccessLayer`].
#[derive(Debug, Clone)]
pub(crate) struct AccessCheck<S> {
    inner: S,
    policy: std::sync::Arc<AccessPolicy>,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for AccessCheck<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let caller = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .map(|cred| Caller {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid(),
            });
        match caller {
            Some(caller) if self.policy.admits(caller) => Box::pin(self.inner.call(request)),
            refused => {
                let message = match refused {
                    Some(caller) => format!(
                        "uid {} (gid {}) may not call wharfd: not in allowed-uids or allowed-gids",
                        caller.uid, caller.gid
                    ),
                    None => "the caller's credentials are unknown; refused".to_owned(),
                };
                tracing::warn!(path = request.uri().path(), "{message}");
                let response = tonic::Status::permission_denied(message).into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gid: u32) -> Caller {
        Caller {
            uid,
            gid,
            pid: None,
        }
    }

    #[test]
    fn the_daemons_own_user_is_always_admitted_and_nobody_else_by_default() {
        let policy = AccessPolicy::new(&[], &[]);
        assert!(!policy.opens_the_socket());
        assert!(policy.admits(caller(policy.own_uid, 12345)));
        assert!(!policy.admits(caller(policy.own_uid.wrapping_add(1), 0)));
    }

    #[test]
    fn listed_users_and_primary_groups_are_admitted() {
        let policy = AccessPolicy::new(&[1000], &[2000]);
        assert!(policy.opens_the_socket());
        assert!(policy.admits(caller(1000, 1)));
        assert!(policy.admits(caller(4242, 2000)));
        assert!(!policy.admits(caller(4242, 4242)));
    }

    #[test]
    fn supplementary_groups_are_read_from_the_status_file() {
        let status = "Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nGroups:\t24 27 1000 \nNgid:\t0\n";
        assert_eq!(groups_in_status(status), Some(vec![24, 27, 1000]));
        assert_eq!(groups_in_status("Groups:\t\n"), Some(vec![]));
        assert_eq!(groups_in_status("Name:\tsh\n"), None);
        // A caller whose process is gone is judged by its uid and primary group only.
        let policy = AccessPolicy::new(&[], &[27]);
        let gone = Caller {
            uid: 4242,
            gid: 4242,
            pid: Some(i32::MAX),
        };
        assert!(!policy.admits(gone));
    }
}
