//! `pie`: the command line face of the pie engine.
//!
//! Exit codes: 0 ok, 2 bad input, 3 cancelled, 4 unavailable (ONNX Runtime,
//! CUDA or the trainer missing), 1 internal error.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
