//! Seconds per image of the sd pipeline, after creating its sessions once: the
//! engine's half of the GPU benchmark (bench/sd_gpu/README.md). Not a test.
//!
//!     cargo run --release --example bench_sd -- --library DIR --concept NAME --image SCENE --selection MASK
//!         [--device cuda] [--steps 50] [--guidance 7.5] [--strength 1] [--scheduler ddim|dpm++2m]
//!         [--runs 5] [--cuda-graph] [--json]
//!
//! One call makes `runs + 1` images from one set of sessions; the first is the
//! warm-up (CUDA's kernels and memory pools), the median of the rest is the
//! figure. With --json it prints one JSON line that bench/sd_gpu/report.py reads.

use std::process::exit;
use std::time::{Duration, Instant};

use pie::{AddRequest, Device, Library, NoProgress};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn parsed<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match arg(args, name) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("bench_sd: {name} {v:?} is not valid");
            exit(2)
        }),
    }
}

fn required(args: &[String], name: &str) -> String {
    arg(args, name).unwrap_or_else(|| {
        eprintln!("bench_sd: {name} is required (see the top of onnx/examples/bench_sd.rs)");
        exit(2)
    })
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("bench_sd: {what}: {e}");
    exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = parsed(&args, "--runs", 5);
    let device: Device = parsed(&args, "--device", Device::Cuda);
    let scheduler = match arg(&args, "--scheduler").as_deref() {
        None | Some("ddim") => pie::schedule::Scheduler::Ddim,
        Some("dpm++2m") => pie::schedule::Scheduler::DpmSolver2M,
        Some(other) => fail("--scheduler", format!("{other:?} is neither ddim nor dpm++2m")),
    };
    let lib = Library::open(arg(&args, "--library").map(Into::into)).unwrap_or_else(|e| fail("library", e));
    let concept = required(&args, "--concept");
    let bundle = lib.load(&concept).unwrap_or_else(|e| fail("concept", e));
    let scene = image::open(required(&args, "--image")).unwrap_or_else(|e| fail("--image", e));
    let selection =
        image::open(required(&args, "--selection")).unwrap_or_else(|e| fail("--selection", e)).to_luma8();
    let (steps, guidance, strength) = (
        parsed(&args, "--steps", 50),
        parsed(&args, "--guidance", pie::sd::DEFAULT_GUIDANCE),
        parsed(&args, "--strength", 1.0),
    );
    let cuda_graph = args.iter().any(|a| a == "--cuda-graph");
    let request = AddRequest {
        steps: Some(steps),
        guidance: Some(guidance),
        strength: Some(strength),
        variants: runs + 1,
        device,
        scheduler: Some(scheduler),
        // Both rows asked for explicitly: the default would capture a graph wherever it can.
        cuda_graph: Some(cuda_graph),
        ..Default::default()
    };

    let started = Instant::now();
    let mut marks: Vec<Instant> = Vec::new();
    let mut session = Duration::ZERO;
    let mut ran_on = device;
    let mut work = (0, 0);
    pie::add_each(&bundle, &scene, &selection, &request, &mut NoProgress, &mut |out| {
        marks.push(Instant::now());
        session = out.stats.session;
        ran_on = out.device;
        work = (out.stats.work_w, out.stats.work_h);
        Ok(())
    })
    .unwrap_or_else(|e| fail("add", e));

    // Image k's time: from the previous image (or, for the first, from the end of session creation).
    let mut per: Vec<f64> = Vec::new();
    let mut prev = started + session;
    for m in &marks {
        per.push(m.duration_since(prev).as_secs_f64());
        prev = *m;
    }
    let first = per.first().copied().unwrap_or(f64::NAN);
    let mut timed: Vec<f64> = per.iter().skip(1).copied().collect();
    timed.sort_by(|a, b| a.total_cmp(b));
    let median = if timed.is_empty() { first } else { timed[timed.len() / 2] };
    let (precision, fused) = match &bundle.manifest.model {
        pie::manifest::Model::Sd(m) => (m.precision, m.optimized.is_some()),
        _ => (pie::Precision::Float32, false),
    };
    if args.iter().any(|a| a == "--json") {
        let variant = match (fused, cuda_graph) {
            (false, false) => "pie",
            (false, true) => "pie-cuda-graph",
            (true, false) => "pie-fused",
            (true, true) => "pie-fused-cuda-graph",
        };
        let line = serde_json::json!({
            "variant": variant, "graphs": if fused { "fused" } else { "plain" },
            "s_per_image": median, "runs": &per[1.min(per.len())..], "first_image_s": first,
            "session_s": session.as_secs_f64(), "device": ran_on.to_string(), "dtype": precision,
            "size": work.0.max(work.1), "work": [work.0, work.1], "steps": steps, "guidance": guidance,
            "strength": strength,
        });
        println!("{line}");
    } else {
        println!(
            "{concept} on {ran_on} ({precision}), working size {}x{}, {} steps, guidance {}: sessions {:.2} s, first image {:.3} s, median of {} {:.3} s per image",
            work.0, work.1, steps, guidance, session.as_secs_f64(), first, timed.len(), median
        );
    }
}
