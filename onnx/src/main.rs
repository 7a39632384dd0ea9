//! `pie`: the command line face of the pie engine.
//!
//! Exit codes: 0 ok, 2 bad input, 3 cancelled, 4 unavailable (ONNX Runtime,
//! CUDA or the trainer missing), 1 internal error.

mod cli;

fn main() {
    // Rust ignores SIGPIPE, so `pie concepts | head -1` would panic on the
    // closed pipe; like any Unix tool, pie should just stop quietly. Output
    // files are never half-written by this: they are written to temporary
    // files only after all printing of progress, and renamed whole.
    // SAFETY: setting a signal's disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(cli::main());
}
