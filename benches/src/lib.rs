//! Benchmarks for ringcast: criterion micro-benchmarks live in `benches/`; the side-by-side harness against
//! tokio-based peers lives in `benches/peers/`; [`floor`] measures what the kernel alone charges for one small
//! delivery over loopback TCP, the lower bound every fan-out figure on this machine is compared with.

pub mod floor;
