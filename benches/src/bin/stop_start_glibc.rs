//! The stop/start scenario's baseline on glibc's malloc: `stop_start` builds this binary
//! with `--no-default-features` and runs it; it refuses to run when built with jemalloc.
//! See `weir_benches::stop_start`.

fn main() -> std::process::ExitCode {
    weir_benches::stop_start::main()
}
