//! Templates for teams embedding chatcore: see the `examples` targets.
