//! Benchmarks for ringcast: criterion micro-benchmarks live in `benches/`; the side-by-side harness against
//! tokio-based peers comes with the load generator.
