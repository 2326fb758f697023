//! Fan-out of shim events: every open `Events` stream gets every event; events published
//! while no stream is open are kept (bounded, oldest dropped) for the next stream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;
use wharf_shim_proto::Event;

/// Events kept while no stream is open.
pub(crate) const BACKLOG_LIMIT: usize = 4096;
/// Events queued per stream before the stream is considered stuck and closed.
const STREAM_BUFFER: usize = 8192;

#[derive(Debug, Default)]
pub(crate) struct EventHub {
    inner: Mutex<Hub>,
}

#[derive(Debug, Default)]
struct Hub {
    subscribers: Vec<Subscriber>,
    backlog: VecDeque<Event>,
    closed: bool,
}

#[derive(Debug)]
struct Subscriber {
    tx: mpsc::Sender<Event>,
    lagged: Arc<AtomicBool>,
}

impl EventHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Hub> {
        // A panic while holding this lock leaves the hub consistent (plain pushes and pops).
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends `event` to every open stream, or keeps it for the next one.
    pub(crate) fn publish(&self, event: Event) {
        let mut hub = self.lock();
        if hub.closed {
            return;
        }
        let mut delivered = false;
        hub.subscribers
            .retain(|subscriber| match subscriber.tx.try_send(event.clone()) {
                Ok(()) => {
                    delivered = true;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        "an events stream fell {STREAM_BUFFER} events behind; closing it"
                    );
                    subscriber.lagged.store(true, Ordering::Relaxed);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        if !delivered {
            if hub.backlog.len() == BACKLOG_LIMIT {
                tracing::warn!(
                    limit = BACKLOG_LIMIT,
                    "no events stream open; dropping the oldest kept event"
                );
                hub.backlog.pop_front();
            }
            hub.backlog.push_back(event);
        }
    }

    /// Opens a stream: first the kept events, then every new one.
    pub(crate) fn subscribe(&self) -> EventStream {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut hub = self.lock();
        for event in hub.backlog.drain(..) {
            // Cannot fail: the buffer is larger than the backlog.
            let _ = tx.try_send(event);
        }
        if !hub.closed {
            hub.subscribers.push(Subscriber {
                tx,
                lagged: lagged.clone(),
            });
        }
        EventStream { rx, lagged }
    }

    /// Ends every stream (after the events already queued) and refuses new events.
    pub(crate) fn close(&self) {
        let mut hub = self.lock();
        hub.closed = true;
        hub.subscribers.clear();
    }
}

/// One `Events` stream. Ends with OK when the shim closes the hub, or with
/// `ResourceExhausted` if the client stopped reading for too long.
#[derive(Debug)]
pub(crate) struct EventStream {
    rx: mpsc::Receiver<Event>,
    lagged: Arc<AtomicBool>,
}

impl Stream for EventStream {
    type Item = Result<Event, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(Some(Ok(event))),
            Poll::Ready(None) if self.lagged.swap(false, Ordering::Relaxed) => {
                Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                    "events stream fell more than {STREAM_BUFFER} events behind"
                )))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;
    use wharf_shim_proto::EventType;

    fn event(pid: u32) -> Event {
        Event {
            id: "c".into(),
            r#type: EventType::Exit.into(),
            pid,
            exit_status: 0,
        }
    }

    #[tokio::test]
    async fn every_stream_gets_every_event() {
        let hub = EventHub::default();
        let mut a = hub.subscribe();
        let mut b = hub.subscribe();
        hub.publish(event(1));
        hub.publish(event(2));
        hub.close();
        let a: Vec<u32> = (&mut a).map(|e| e.unwrap().pid).collect().await;
        let b: Vec<u32> = (&mut b).map(|e| e.unwrap().pid).collect().await;
        assert_eq!(a, [1, 2]);
        assert_eq!(b, [1, 2]);
    }

    #[tokio::test]
    async fn events_without_a_stream_go_to_the_next_stream_only() {
        let hub = EventHub::default();
        hub.publish(event(1));
        let first = hub.subscribe();
        let second = hub.subscribe();
        hub.publish(event(2));
        hub.close();
        let first: Vec<u32> = first.map(|e| e.unwrap().pid).collect().await;
        let second: Vec<u32> = second.map(|e| e.unwrap().pid).collect().await;
        assert_eq!(first, [1, 2]);
        assert_eq!(second, [2]);
    }

    #[tokio::test]
    async fn a_closed_stream_does_not_swallow_events() {
        let hub = EventHub::default();
        drop(hub.subscribe());
        hub.publish(event(7));
        let next = hub.subscribe();
        hub.close();
        let pids: Vec<u32> = next.map(|e| e.unwrap().pid).collect().await;
        assert_eq!(pids, [7]);
    }

    #[tokio::test]
    async fn backlog_keeps_the_newest_events() {
        let hub = EventHub::default();
        for pid in 0..(BACKLOG_LIMIT as u32 + 10) {
            hub.publish(event(pid + 1));
        }
        let stream = hub.subscribe();
        hub.close();
        let pids: Vec<u32> = stream.map(|e| e.unwrap().pid).collect().await;
        assert_eq!(pids.len(), BACKLOG_LIMIT);
        assert_eq!(pids[0], 11);
    }

    #[tokio::test]
    async fn a_stuck_stream_ends_with_resource_exhausted() {
        let hub = EventHub::default();
        let stream = hub.subscribe();
        for pid in 0..=(STREAM_BUFFER as u32) {
            hub.publish(event(pid + 1));
        }
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items.len(), STREAM_BUFFER + 1);
        let last = items.last().unwrap().as_ref().unwrap_err();
        assert_eq!(last.code(), tonic::Code::ResourceExhausted);
    }
}
