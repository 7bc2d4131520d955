//! Benchmarks of `chatcore` (criterion micro-benchmarks and load generators against local
//! services); the benchmarks live in `benches/`.
//!
//! Run them with `cargo bench -p chatcore-benches`; see `BENCHMARKS.md` at the workspace root
//! for the figures of the last recorded run.
