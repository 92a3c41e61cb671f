//! Criterion benches and side-by-side comparison scripts for BAAS
