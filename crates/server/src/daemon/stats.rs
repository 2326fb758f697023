//! `GetStats`: one sampler per container, however many streams read it.
//!
//! The first stream of a container starts its sampler: a task that reads the container's
//! cgroup and its init's interfaces once per interval (`wharf-stats-collector`) and puts
//! the latest sample in a `watch` channel, whose only sender it holds. Every stream sends
//! each sample it sees: one that reads slowly skips samples and never holds the sampler up.
//! The sampler stops when the container is gone (its streams then end with OK) or when no
//! stream is left.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use wharf_api as api;
use wharf_stats_collector::{BlkioEntry, ErrorKind, Sample, Sampler};

use super::metrics::Usage;

/// The latest sample of a container, `None` before the first.
type Latest = Option<Arc<api::Stats>>;

/// A container's stats: a receiver of its sampler's channel (a template the streams clone),
/// and the end of the container.
#[derive(Debug, Default)]
pub(crate) struct StatsFeed {
    sampler: Mutex<Option<watch::Receiver<Latest>>>,
    ended: CancellationToken,
    /// The metrics scrape's sampler (no network), made at the first scrape and kept.
    usage: Mutex<Option<Sampler>>,
}

impl StatsFeed {
    /// What the container whose init is `init` uses now, for its metrics; `None` once it
    /// is gone or when its cgroup cannot be read (logged).
    pub(crate) fn usage(&self, container: &str, init: u32) -> Option<Usage> {
        if self.ended.is_cancelled() {
            return None;
        }
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let sampler = match usage.as_mut() {
            Some(sampler) => sampler,
            None => {
                let made = wharf_stats_collector::cgroup_of(init)
                    .and_then(|cgroup| Sampler::new(&cgroup, None));
                match made {
                    Ok(sampler) => usage.insert(sampler),
                    Err(err) => {
                        tracing::debug!(container_id = %container, error = %err, "no usage metrics");
                        return None;
                    }
                }
            }
        };
        match sampler.sample() {
            Ok(sample) => Some(Usage {
                cpu_ns: sample.cpu.total_ns,
                memory_bytes: sample.memory.usage.usage,
                pids: sample.pids.current,
            }),
            Err(err) => {
                tracing::debug!(container_id = %container, error = %err, "no usage metrics");
                None
            }
        }
    }

    /// The container is gone: its sampler stops and its streams end.
    pub(crate) fn end(&self) {
        self.ended.cancel();
    }

    /// A stream of samples of the container whose init is `init`, every `interval`; it
    /// starts the sampler unless one runs.
    pub(crate) fn subscribe(
        &self,
        container: &str,
        init: u32,
        interval: Duration,
    ) -> Pin<Box<dyn Stream<Item = Result<api::Stats, Status>> + Send>> {
        let samples = {
            let mut sampler = self.sampler.lock().unwrap_or_else(|p| p.into_inner());
            match sampler.as_ref() {
                // A clone sees the current sample, if there is one, as new.
                Some(running) if running.has_changed().is_ok() => running.clone(),
                _ => {
                    let (sender, receiver) = watch::channel(None);
                    tokio::spawn(sample_loop(
                        container.to_owned(),
                        init,
                        interval,
                        sender,
                        self.ended.clone(),
                    ));
                    *sampler = Some(receiver.clone());
                    receiver
                }
            }
        };
        // The sampler task holds the only sender: when it stops (the container is gone),
        // every stream ends, with OK.
        Box::pin(
            WatchStream::new(samples).filter_map(|latest| latest.map(|stats| Ok((*stats).clone()))),
        )
    }
}

/// Samples every `interval` until the container ends, its cgroup is gone, or no stream is
/// left (the feed's template is the last receiver).
async fn sample_loop(
    container: String,
    init: u32,
    interval: Duration,
    latest: watch::Sender<Latest>,
    ended: CancellationToken,
) {
    let sampler = match wharf_stats_collector::cgroup_of(init)
        .and_then(|cgroup| Sampler::new(&cgroup, Some(init)))
    {
        Ok(sampler) => sampler,
        Err(err) => {
            tracing::warn!(container_id = %container, error = %err, "cannot sample the container");
            return;
        }
    };
    tracing::debug!(container_id = %container, cgroup = %sampler.cgroup_path().display(), "sampling");
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = ended.cancelled() => return,
        }
        if latest.receiver_count() <= 1 {
            tracing::debug!(container_id = %container, "no stats stream left; sampler stops");
            return;
        }
        match sampler.sample() {
            Ok(sample) => {
                latest.send_replace(Some(Arc::new(to_api(&sample))));
            }
            Err(err) if err.kind() == ErrorKind::Gone => {
                tracing::debug!(container_id = %container, error = %err, "container gone; sampler stops");
                return;
            }
            Err(err) => {
                tracing::warn!(container_id = %container, error = %err, "sampling the container");
            }
        }
    }
}

/// A sample as `types.Stats`: `timestamp` in Unix seconds, CPU times in nanoseconds, memory
/// in bytes.
pub(crate) fn to_api(sample: &Sample) -> api::Stats {
    let memory = |usage: &wharf_stats_collector::MemoryUsage| api::MemoryData {
        usage: usage.usage,
        max_usage: usage.max_usage,
        failcnt: usage.failcnt,
    };
    let entries = |entries: &[BlkioEntry]| -> Vec<api::BlkioStatsEntry> {
        entries
            .iter()
            .map(|e| api::BlkioStatsEntry {
                major: e.major,
                minor: e.minor,
                op: e.op.clone(),
                value: e.value,
            })
            .collect()
    };
    let cpu = &sample.cpu;
    api::Stats {
        network_stats: sample
            .networks
            .iter()
            .map(|n| api::NetworkStats {
                name: n.name.clone(),
                rx_bytes: n.rx_bytes,
                rx_packets: n.rx_packets,
                rx_errors: n.rx_errors,
                rx_dropped: n.rx_dropped,
                tx_bytes: n.tx_bytes,
                tx_packets: n.tx_packets,
                tx_errors: n.tx_errors,
                tx_dropped: n.tx_dropped,
            })
            .collect(),
        cgroup_stats: Some(api::CgroupStats {
            cpu_stats: Some(api::CpuStats {
                cpu_usage: Some(api::CpuUsage {
                    total_usage: cpu.total_ns,
                    percpu_usage: cpu.per_cpu_ns.clone(),
                    usage_in_kernelmode: cpu.kernel_ns,
                    usage_in_usermode: cpu.user_ns,
                }),
                throttling_data: Some(api::ThrottlingData {
                    periods: cpu.throttling.periods,
                    throttled_periods: cpu.throttling.throttled_periods,
                    throttled_time: cpu.throttling.throttled_ns,
                }),
            }),
            memory_stats: Some(api::MemoryStats {
                cache: sample.memory.cache,
                usage: Some(memory(&sample.memory.usage)),
                swap_usage: Some(memory(&sample.memory.swap)),
                kernel_usage: Some(memory(&sample.memory.kernel)),
                stats: sample
                    .memory
                    .stat
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            }),
            blkio_stats: Some(api::BlkioStats {
                io_service_bytes_recursive: entries(&sample.blkio.service_bytes),
                io_serviced_recursive: entries(&sample.blkio.serviced),
                io_queued_recursive: entries(&sample.blkio.queued),
                io_service_time_recursive: entries(&sample.blkio.service_time),
                io_wait_time_recursive: entries(&sample.blkio.wait_time),
                io_merged_recursive: entries(&sample.blkio.merged),
                io_time_recursive: entries(&sample.blkio.time),
                sectors_recursive: entries(&sample.blkio.sectors),
            }),
            hugetlb_stats: sample
                .hugetlb
                .iter()
                .map(|(size, h)| {
                    (
                        size.clone(),
                        api::HugetlbStats {
                            usage: h.usage,
                            max_usage: h.max_usage,
                            failcnt: h.failcnt,
                        },
                    )
                })
                .collect(),
        }),
        timestamp: sample
            .taken_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::SystemTime;
    use wharf_stats_collector::{Blkio, Cpu, Hugetlb, Interface, Memory, MemoryUsage, Pids};

    /// A cgroup v1 sample as this host's kernel gave it for a busy container.
    fn captured_v1() -> Sample {
        Sample {
            taken_at: UNIX_EPOCH + Duration::from_secs(1_795_420_000),
            cpu: Cpu {
                total_ns: 2_013_433_021,
                per_cpu_ns: vec![1_006_000_000, 1_007_433_021],
                user_ns: 1_990_000_000,
                kernel_ns: 20_000_000,
                ..Cpu::default()
            },
            memory: Memory {
                usage: MemoryUsage {
                    usage: 68_157_440,
                    max_usage: 68_300_800,
                    failcnt: 0,
                    limit: 9_223_372_036_854_771_712,
                },
                cache: 67_108_864,
                stat: BTreeMap::from([("shmem".to_owned(), 67_108_864)]),
                ..Memory::default()
            },
            blkio: Blkio {
                service_bytes: vec![BlkioEntry {
                    major: 254,
                    minor: 0,
                    op: "Read".to_owned(),
                    value: 4096,
                }],
                ..Blkio::default()
            },
            hugetlb: BTreeMap::from([("2MB".to_owned(), Hugetlb::default())]),
            pids: Pids {
                current: 2,
                limit: 0,
            },
            networks: vec![Interface {
                name: "lo".to_owned(),
                rx_bytes: 420,
                rx_packets: 5,
                tx_bytes: 420,
                tx_packets: 5,
                ..Interface::default()
            }],
        }
    }

    #[test]
    fn a_v1_sample_fills_every_field_types_stats_has() {
        let stats = to_api(&captured_v1());
        assert_eq!(stats.timestamp, 1_795_420_000);
        let cgroup = stats.cgroup_stats.unwrap();
        let cpu = cgroup.cpu_stats.unwrap().cpu_usage.unwrap();
        assert_eq!(cpu.total_usage, 2_013_433_021);
        assert_eq!(cpu.percpu_usage, vec![1_006_000_000, 1_007_433_021]);
        assert_eq!(
            (cpu.usage_in_usermode, cpu.usage_in_kernelmode),
            (1_990_000_000, 20_000_000)
        );
        let memory = cgroup.memory_stats.unwrap();
        assert_eq!(memory.usage.unwrap().usage, 68_157_440);
        assert_eq!(memory.cache, 67_108_864);
        assert_eq!(memory.stats.get("shmem"), Some(&67_108_864));
        let read = &cgroup.blkio_stats.unwrap().io_service_bytes_recursive[0];
        assert_eq!(
            (read.major, read.minor, read.op.as_str(), read.value),
            (254, 0, "Read", 4096)
        );
        assert!(cgroup.hugetlb_stats.contains_key("2MB"));
        assert_eq!(stats.network_stats[0].name, "lo");
        assert_eq!(stats.network_stats[0].rx_packets, 5);
    }

    #[test]
    fn a_v2_sample_without_per_cpu_or_max_usage_maps_to_zeros() {
        let sample = Sample {
            taken_at: SystemTime::now(),
            cpu: Cpu {
                total_ns: 2_500_000_000,
                ..Cpu::default()
            },
            ..captured_v1()
        };
        let cpu = to_api(&sample)
            .cgroup_stats
            .unwrap()
            .cpu_stats
            .unwrap()
            .cpu_usage
            .unwrap();
        assert_eq!(cpu.total_usage, 2_500_000_000);
        assert!(cpu.percpu_usage.is_empty());
    }
}
