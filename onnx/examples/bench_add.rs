//! Where the time of one `add` goes: total, inside ONNX Runtime, and the
//! engine's own share. Not a test; run it on an idle machine:
//!
//!     cargo run --release --example bench_add -- [--library DIR --concept NAME] [--steps 50] [--strength S] [--threads N] [--runs 3]
//!
//! --strength defaults to `pie add`'s own for the concept (0.2 for a pixel-unet
//! subject: 10 of the 50 steps); 1 runs every step.
//!
//! Without --concept it uses a synthetic bundle (an exact denoiser of a few
//! nodes, so ONNX Runtime's part is tiny and the overhead share is a worst case);
//! with the trainer's bundle it measures the real UNet.

use std::time::{Duration, Instant};

use image::DynamicImage;
use pie::testkit::{write_bundle, Synthetic};
use pie::{AddRequest, Device, Library, NoProgress};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = arg(&args, "--steps").unwrap_or(50);
    let runs: usize = arg(&args, "--runs").unwrap_or(3);
    let threads: Option<usize> = arg(&args, "--threads");
    let tmp = tempfile::tempdir().expect("temp dir");
    let (lib, concept) = match (arg::<String>(&args, "--library"), arg::<String>(&args, "--concept")) {
        (lib, Some(c)) => (Library::open(lib.map(Into::into)).expect("library"), c),
        _ => {
            write_bundle(
                tmp.path(),
                &Synthetic { name: "synthetic".into(), scene_short_side: 512, ..Default::default() },
            )
            .expect("bundle");
            (Library::open(Some(tmp.path().to_path_buf())).expect("library"), "synthetic".to_string())
        }
    };
    let bundle = match lib.load(&concept) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bench_add: {e}");
            std::process::exit(2);
        }
    };
    // A 512x384 scene with a 128x128 selection in it.
    let scene = DynamicImage::ImageRgb8(image::RgbImage::from_fn(512, 384, |x, y| {
        image::Rgb([(x / 2) as u8, (y / 2) as u8, 128])
    }));
    let mask = image::GrayImage::from_fn(512, 384, |x, y| {
        image::Luma([if (192..320).contains(&x) && (128..256).contains(&y) { 255 } else { 0 }])
    });
    let strength: f32 = arg(&args, "--strength").unwrap_or_else(|| pie::concept_defaults(&bundle).strength);
    let opts = AddRequest {
        steps: Some(steps),
        strength: Some(strength),
        device: Device::Cpu,
        threads,
        ..Default::default()
    };
    println!(
        "bundle {concept} ({}), selection 128x128 in 512x384, {steps} steps, strength {strength}, threads {}",
        bundle.dir.display(),
        threads.unwrap_or_else(pie::runtime::default_threads)
    );
    let mut best: Option<(Duration, Duration, Duration)> = None;
    for r in 0..runs + 1 {
        let t = Instant::now();
        let out = match pie::add(&bundle, &scene, &mask, &opts, &mut NoProgress) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("bench_add: {e}");
                std::process::exit(1);
            }
        };
        let total = t.elapsed();
        let s = out[0].stats;
        if r == 0 {
            println!("working size {}x{}; warm-up run {:.3} s", s.work_w, s.work_h, total.as_secs_f64());
            continue;
        }
        let engine = total.saturating_sub(s.runtime).saturating_sub(s.session);
        println!(
            "run {r}: total {:.3} s, inside ONNX Runtime {:.3} s, session creation {:.3} s, engine {:.3} s = {:.2}% of total",
            total.as_secs_f64(),
            s.runtime.as_secs_f64(),
            s.session.as_secs_f64(),
            engine.as_secs_f64(),
            100.0 * engine.as_secs_f64() / total.as_secs_f64()
        );
        if best.is_none_or(|b| total < b.0) {
            best = Some((total, s.runtime, s.session));
        }
    }
    if let Some((total, rt, sess)) = best {
        let engine = total.saturating_sub(rt).saturating_sub(sess);
        println!(
            "best: total {:.3} s, ONNX Runtime run {:.3} s ({:.1}%), session creation {:.3} s ({:.1}%), engine overhead {:.3} s ({:.2}%; goal < 5%)",
            total.as_secs_f64(),
            rt.as_secs_f64(),
            100.0 * rt.as_secs_f64() / total.as_secs_f64(),
            sess.as_secs_f64(),
            100.0 * sess.as_secs_f64() / total.as_secs_f64(),
            engine.as_secs_f64(),
            100.0 * engine.as_secs_f64() / total.as_secs_f64()
        );
    }
}
