//! The stop/start scenario (the ksqlDB article's memory-growth test): weir next to a
//! thread-per-query, glibc baseline. See `weir_benches::stop_start`.
//!
//! `cargo run --release -p weir-benches --bin stop_start -- [iterations=6] [keys=1000000] [records=1000000] [value_bytes=5000] [many=100] [many_secs=60] [limit_mib=1024]`

weir::use_jemalloc!();

fn main() -> std::process::ExitCode {
    weir_benches::stop_start::main()
}
