//! Fan-out of events to gRPC streams: every open stream gets every event, in order. A
//! stream whose client stops reading is ended with `ResourceExhausted` once its buffer is
//! full, so it never blocks the publisher or the other streams. Optionally, events
//! published while no stream is open are kept (bounded, oldest dropped) for the next one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

/// Events queued per stream before the stream is considered stuck and closed.
pub(crate) const STREAM_BUFFER: usize = 8192;

#[derive(Debug)]
pub(crate) struct EventHub<T> {
    inner: Mutex<Hub<T>>,
    /// How many events to keep while no stream is open (0: none).
    backlog_limit: usize,
}

#[derive(Debug)]
struct Hub<T> {
    subscribers: Vec<Subscriber<T>>,
    backlog: VecDeque<T>,
    closed: bool,
}

#[derive(Debug)]
struct Subscriber<T> {
    tx: mpsc::Sender<T>,
    lagged: Arc<AtomicBool>,
}

impl<T: Clone> EventHub<T> {
    /// A hub keeping up to `backlog_limit` events while no stream is open
    /// (at most [`STREAM_BUFFER`]).
    pub(crate) fn new(backlog_limit: usize) -> Self {
        Self {
            inner: Mutex::new(Hub {
                subscribers: Vec::new(),
                backlog: VecDeque::new(),
                closed: false,
            }),
            backlog_limit: backlog_limit.min(STREAM_BUFFER),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hub<T>> {
        // A panic while holding this lock leaves the hub consistent (plain pushes and pops).
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many streams are open now.
    pub(crate) fn open_streams(&self) -> usize {
        self.lock()
            .subscribers
            .iter()
            .filter(|s| !s.tx.is_closed())
            .count()
    }

    /// Sends `event` to every open stream, or keeps it for the next one.
    pub(crate) fn publish(&self, event: T) {
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
        if !delivered && self.backlog_limit > 0 {
            if hub.backlog.len() == self.backlog_limit {
                tracing::warn!(
                    limit = self.backlog_limit,
                    "no events stream open; dropping the oldest kept event"
                );
                hub.backlog.pop_front();
            }
            hub.backlog.push_back(event);
        }
    }

    /// Opens a stream: first the kept events, then every new one.
    pub(crate) fn subscribe(&self) -> EventStream<T> {
        self.subscribe_with(Vec::new())
    }

    /// Opens a stream that first yields `replay`, then the kept events, then every new one.
    /// The caller makes sure no event is published between taking `replay` and this call
    /// (the journal holds its lock across both).
    pub(crate) fn subscribe_with(&self, replay: Vec<T>) -> EventStream<T> {
        let mut hub = self.lock();
        // Room for the whole replay, and the usual buffer for what follows.
        let (tx, rx) = mpsc::channel(replay.len() + hub.backlog.len() + STREAM_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        for event in replay.into_iter().chain(hub.backlog.drain(..)) {
            // Cannot fail: the buffer holds all of it.
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
pub(crate) struct EventStream<T> {
    rx: mpsc::Receiver<T>,
    lagged: Arc<AtomicBool>,
}

impl<T> Stream for EventStream<T> {
    type Item = Result<T, Status>;

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

    const BACKLOG: usize = 4096;

    async fn collect(stream: EventStream<u32>) -> Vec<u32> {
        stream.map(|e| e.unwrap()).collect().await
    }

    #[tokio::test]
    async fn every_stream_gets_every_event() {
        let hub = EventHub::new(BACKLOG);
        let a = hub.subscribe();
        let b = hub.subscribe();
        hub.publish(1);
        hub.publish(2);
        hub.close();
        assert_eq!(collect(a).await, [1, 2]);
        assert_eq!(collect(b).await, [1, 2]);
    }

    #[tokio::test]
    async fn events_without_a_stream_go_to_the_next_stream_only() {
        let hub = EventHub::new(BACKLOG);
        hub.publish(1);
        let first = hub.subscribe();
        let second = hub.subscribe();
        hub.publish(2);
        hub.close();
        assert_eq!(collect(first).await, [1, 2]);
        assert_eq!(collect(second).await, [2]);
    }

    #[tokio::test]
    async fn without_a_backlog_events_with_no_stream_are_gone() {
        let hub = EventHub::new(0);
        hub.publish(1);
        let stream = hub.subscribe();
        hub.publish(2);
        hub.close();
        assert_eq!(collect(stream).await, [2]);
    }

    #[tokio::test]
    async fn a_closed_stream_does_not_swallow_events() {
        let hub = EventHub::new(BACKLOG);
        drop(hub.subscribe());
        hub.publish(7);
        let next = hub.subscribe();
        hub.close();
        assert_eq!(collect(next).await, [7]);
    }

    #[tokio::test]
    async fn backlog_keeps_the_newest_events() {
        let hub = EventHub::new(BACKLOG);
        for n in 0..(BACKLOG as u32 + 10) {
            hub.publish(n + 1);
        }
        let stream = hub.subscribe();
        hub.close();
        let kept = collect(stream).await;
        assert_eq!(kept.len(), BACKLOG);
        assert_eq!(kept[0], 11);
    }

    #[tokio::test]
    async fn a_stuck_stream_ends_with_resource_exhausted_and_others_go_on() {
        let hub = EventHub::new(0);
        let stuck = hub.subscribe();
        let mut reading = hub.subscribe();
        for n in 0..=(STREAM_BUFFER as u32) {
            hub.publish(n + 1);
            assert_eq!(reading.next().await.unwrap().unwrap(), n + 1);
        }
        let items: Vec<_> = stuck.collect().await;
        assert_eq!(items.len(), STREAM_BUFFER + 1);
        let last = items.last().unwrap().as_ref().unwrap_err();
        assert_eq!(last.code(), tonic::Code::ResourceExhausted);
        hub.publish(0);
        hub.close();
        assert_eq!(reading.next().await.unwrap().unwrap(), 0);
    }
}
