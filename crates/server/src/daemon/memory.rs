//! Giving memory back once containers go. Each live container costs the daemon about 50 KiB
//! (its shim connection, pump and records); glibc keeps what is freed in its per-thread
//! arenas, so without a trim a daemon that once held a thousand containers would keep their
//! memory for the rest of its life.

use std::time::Duration;

use tokio::sync::watch;

/// How long to let a burst of exits settle before one trim.
const SETTLE: Duration = Duration::from_millis(500);

/// Whenever the number of running pumps (one per live container) goes down, waits for the
/// burst to settle and returns the allocator's free pages to the kernel. Ends with the
/// daemon.
pub(crate) async fn trim_after_containers_go(pumps: watch::Receiver<usize>) {
    after_each_decrease(pumps, trim).await;
}

/// Runs `then` (on a blocking thread) once per burst of decreases of `count`, when the burst
/// has settled.
async fn after_each_decrease(mut count: watch::Receiver<usize>, then: fn()) {
    let mut last = *count.borrow_and_update();
    while count.changed().await.is_ok() {
        let now = *count.borrow_and_update();
        let fewer = now < last;
        last = now;
        if fewer {
            tokio::time::sleep(SETTLE).await;
            last = *count.borrow_and_update();
            let _ = tokio::task::spawn_blocking(then).await;
        }
    }
}

fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: `malloc_trim` takes the allocator's own locks; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn count_call() {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }

    #[tokio::test]
    async fn one_run_per_settled_burst_of_decreases_and_none_for_increases() {
        let (sender, receiver) = watch::channel(0usize);
        let task = tokio::spawn(after_each_decrease(receiver, count_call));
        sender.send_replace(3);
        tokio::time::sleep(SETTLE * 2).await;
        assert_eq!(CALLS.load(Ordering::SeqCst), 0, "containers came: no trim");
        sender.send_replace(2);
        sender.send_replace(1);
        tokio::task::yield_now().await;
        sender.send_replace(0);
        let deadline = tokio::time::Instant::now() + SETTLE * 10;
        while CALLS.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no trim after containers went"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(SETTLE * 2).await;
        assert_eq!(CALLS.load(Ordering::SeqCst), 1, "one trim for the burst");
        drop(sender);
        task.await.unwrap();
    }
}
