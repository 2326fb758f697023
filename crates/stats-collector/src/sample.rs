//! What a sample holds: plain values, in the kernel's units (nanoseconds, bytes).

use std::collections::BTreeMap;
use std::time::SystemTime;

/// One reading of a container's resource use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When it was taken.
    pub taken_at: SystemTime,
    /// CPU time.
    pub cpu: Cpu,
    /// Memory.
    pub memory: Memory,
    /// Block I/O (recursive counters).
    pub blkio: Blkio,
    /// Huge pages, by page size (`2MB`, `1GB`).
    pub hugetlb: BTreeMap<String, Hugetlb>,
    /// Processes.
    pub pids: Pids,
    /// The init's network interfaces, by name order.
    pub networks: Vec<Interface>,
}

/// CPU time used, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cpu {
    /// All of it.
    pub total_ns: u64,
    /// Per CPU.
    pub per_cpu_ns: Vec<u64>,
    /// In user mode.
    pub user_ns: u64,
    /// In kernel mode.
    pub kernel_ns: u64,
    /// CFS throttling.
    pub throttling: Throttling,
}

/// CFS bandwidth throttling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throttling {
    /// Enforcement periods.
    pub periods: u64,
    /// Periods in which the cgroup was throttled.
    pub throttled_periods: u64,
    /// Time throttled, in nanoseconds.
    pub throttled_ns: u64,
}

/// Memory use, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// User memory.
    pub usage: MemoryUsage,
    /// Memory and swap.
    pub swap: MemoryUsage,
    /// Kernel memory.
    pub kernel: MemoryUsage,
    /// Page cache.
    pub cache: u64,
    /// The raw `memory.stat` entries.
    pub stat: BTreeMap<String, u64>,
}

/// One memory counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Now.
    pub usage: u64,
    /// The most ever (v1 only; 0 where the kernel does not keep it).
    pub max_usage: u64,
    /// How often the limit was hit.
    pub failcnt: u64,
    /// The limit (`u64::MAX` or the kernel's maximum when unlimited).
    pub limit: u64,
}

/// Block I/O counters, one entry per device and operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blkio {
    /// Bytes transferred.
    pub service_bytes: Vec<BlkioEntry>,
    /// I/O operations.
    pub serviced: Vec<BlkioEntry>,
    /// Operations queued.
    pub queued: Vec<BlkioEntry>,
    /// Time spent servicing, in nanoseconds.
    pub service_time: Vec<BlkioEntry>,
    /// Time spent waiting, in nanoseconds.
    pub wait_time: Vec<BlkioEntry>,
    /// Operations merged.
    pub merged: Vec<BlkioEntry>,
    /// Device time, in milliseconds.
    pub time: Vec<BlkioEntry>,
    /// Sectors transferred.
    pub sectors: Vec<BlkioEntry>,
}

/// A block device counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkioEntry {
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// The operation (`Read`, `Write`, `Sync`, `Async`, `Total`, ...), if any.
    pub op: String,
    /// The value.
    pub value: u64,
}

/// Huge page use of one page size, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hugetlb {
    /// Now.
    pub usage: u64,
    /// The most ever.
    pub max_usage: u64,
    /// How often the limit was hit.
    pub failcnt: u64,
}

/// Processes in the cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pids {
    /// Now.
    pub current: u64,
    /// The limit (0: none).
    pub limit: u64,
}

/// One network interface's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Sent packets dropped.
    pub tx_dropped: u64,
}

impl From<libcgroups::stats::Stats> for Sample {
    /// A sample from `libcgroups`' reading, without network interfaces, taken now.
    fn from(stats: libcgroups::stats::Stats) -> Self {
        let memory_usage = |data: libcgroups::stats::MemoryData| MemoryUsage {
            usage: data.usage,
            max_usage: data.max_usage,
            failcnt: data.fail_count,
            limit: data.limit,
        };
        let entries = |stats: Vec<libcgroups::stats::BlkioDeviceStat>| {
            stats
                .into_iter()
                .map(|s| BlkioEntry {
                    major: s.major,
                    minor: s.minor,
                    op: s.op_type.unwrap_or_default(),
                    value: s.value,
                })
                .collect()
        };
        let usage = stats.cpu.usage;
        let throttling = stats.cpu.throttling;
        Sample {
            taken_at: SystemTime::now(),
            cpu: Cpu {
                total_ns: usage.usage_total,
                per_cpu_ns: usage.per_core_usage_total,
                user_ns: usage.usage_user,
                kernel_ns: usage.usage_kernel,
                throttling: Throttling {
                    periods: throttling.periods,
                    throttled_periods: throttling.throttled_periods,
                    throttled_ns: throttling.throttled_time,
                },
            },
            memory: Memory {
                usage: memory_usage(stats.memory.memory),
                swap: memory_usage(stats.memory.memswap),
                kernel: memory_usage(stats.memory.kernel),
                cache: stats.memory.cache,
                stat: stats.memory.stats.into_iter().collect(),
            },
            blkio: Blkio {
                service_bytes: entries(stats.blkio.service_bytes),
                serviced: entries(stats.blkio.serviced),
                queued: entries(stats.blkio.queued),
                service_time: entries(stats.blkio.service_time),
                wait_time: entries(stats.blkio.wait_time),
                merged: entries(stats.blkio.merged),
                time: entries(stats.blkio.time),
                sectors: entries(stats.blkio.sectors),
            },
            hugetlb: stats
                .hugetlb
                .into_iter()
                .map(|(size, h)| {
                    (
                        size,
                        Hugetlb {
                            usage: h.usage,
                            max_usage: h.max_usage,
                            failcnt: h.fail_count,
                        },
                    )
                })
                .collect(),
            pids: Pids {
                current: stats.pids.current,
                limit: stats.pids.limit,
            },
            networks: Vec::new(),
        }
    }
}

impl From<&procfs::net::DeviceStatus> for Interface {
    fn from(dev: &procfs::net::DeviceStatus) -> Self {
        Interface {
            name: dev.name.clone(),
            rx_bytes: dev.recv_bytes,
            rx_packets: dev.recv_packets,
            rx_errors: dev.recv_errs,
            rx_dropped: dev.recv_drop,
            tx_bytes: dev.sent_bytes,
            tx_packets: dev.sent_packets,
            tx_errors: dev.sent_errs,
            tx_dropped: dev.sent_drop,
        }
    }
}
