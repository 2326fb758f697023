//! Samples a container's resource use: its cgroup (v1, hybrid or v2, read by `libcgroups`'
//! cgroup manager, one per container, kept for its life) and the network interfaces of its
//! init (`/proc/<pid>/net/dev`, read by `procfs`), into plain types ([`Sample`]); and
//! watches a cgroup for out-of-memory kills ([`OomWatch`]).
//!
//! ```no_run
//! use wharf_stats_collector::Sampler;
//!
//! # fn demo() -> Result<(), wharf_stats_collector::Error> {
//! // The cgroup of a running process, as its `/proc/<pid>/cgroup` names it.
//! let cgroup = wharf_stats_collector::cgroup_of(4242)?;
//! let sampler = Sampler::new(&cgroup, Some(4242))?;
//! let sample = sampler.sample()?;
//! println!("cpu {} ns, memory {} bytes", sample.cpu.total_ns, sample.memory.usage.usage);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod oom;
mod sample;
mod sampler;

pub use oom::OomWatch;
pub use sample::{
    Blkio, BlkioEntry, Cpu, Hugetlb, Interface, Memory, MemoryUsage, Pids, Sample, Throttling,
};
pub use sampler::{Error, ErrorKind, Sampler, cgroup_of};
