//! `pie doctor`: what pie found, and what to do about what it did not.

use std::path::PathBuf;

use pie::locations::{Context, Report};
use pie::{Library, Result};
use serde_json::json;

pub fn run(library: &Option<PathBuf>, json: bool) -> Result<()> {
    let mut report = serde_json::Map::new();
    let mut lines = vec![format!("pie {}", env!("CARGO_PKG_VERSION"))];
    let places = Context::current().report(library.as_deref());
    report.insert("locations".into(), json!(places));

    match Library::open(library.clone()).and_then(|l| Ok((l.path().to_path_buf(), l.list()?.len()))) {
        Ok((p, n)) => {
            lines.push(format!("concept library: {} ({n} concepts)", p.display()));
            if let Some(l) = &places.library {
                lines.push(format!(
                    "  {}{}",
                    l.from.reason(),
                    if l.exists { "" } else { "; not created yet" }
                ));
            }
            report.insert("library".into(), json!({"path": p, "concepts": n}));
        }
        Err(e) => {
            lines.push(format!("concept library: {e}"));
            report.insert("library".into(), json!({"error": e.to_string()}));
        }
    }

    lines.push(match &places.cache {
        Some(c) => format!(
            "build cache: {} ({}; {})",
            c.path.display(),
            c.from.reason(),
            if c.exists { "there" } else { "not there; an installed pie does not need it" }
        ),
        None => "build cache: none (no HOME, PIE_CACHE or XDG_CACHE_HOME)".into(),
    });

    let mut ort_ok = false;
    match pie::runtime::init() {
        Ok(info) => {
            ort_ok = true;
            lines.push(format!("ONNX Runtime: {} (version {})", info.library.display(), info.version));
            lines.push(ort_candidates(&places));
            let cuda = pie::runtime::probe_cuda();
            let (ok, why) = match cuda {
                Ok(Ok(())) => (true, "usable".to_string()),
                Ok(Err(w)) => (false, w),
                Err(e) => (false, e.to_string()),
            };
            lines.push(if ok {
                "CUDA: usable; --device auto runs on the GPU".into()
            } else {
                format!("CUDA: not used: {why}")
            });
            if let Some(from) = pie::runtime::cuda_libraries() {
                lines.push(format!("CUDA libraries: loaded from {from}"));
            }
            lines.push(cuda_dirs(&places));
            report.insert("onnxruntime".into(), json!({"library": info.library, "version": info.version, "cuda_ep_in_library": info.has_cuda_ep}));
            report.insert(
                "cuda".into(),
                json!({"usable": ok, "why": why, "libraries": pie::runtime::cuda_libraries()}),
            );
        }
        Err(e) => {
            lines.push(format!("ONNX Runtime: {e}"));
            lines.push(ort_candidates(&places));
            report.insert("onnxruntime".into(), json!({"error": e.to_string()}));
        }
    }
    lines.push(format!("threads for inference: {} (all cores but one)", pie::runtime::default_threads()));

    match pie::train::check_trainer() {
        Ok((env, version)) => {
            lines.push(format!("trainer: {} ({}), {version}", env.python.display(), env.source));
            lines.push(match &env.pythonpath {
                Some(p) => format!("  trainer code: {} (PIE_TRAINER_PATH)", p.display()),
                None => "  trainer code: the pie_trainer installed in that environment".into(),
            });
            report.insert(
                "trainer".into(),
                json!({"python": env.python, "source": env.source, "versions": version}),
            );
        }
        Err(e) => {
            lines.push(format!("trainer: {e}"));
            report.insert("trainer".into(), json!({"error": e.to_string()}));
        }
    }

    if let serde_json::Value::Object(gimp) = super::gimp::report(&mut lines) {
        report.extend(gimp);
    }

    if json {
        report.insert("event".into(), json!("doctor"));
        println!("{}", serde_json::Value::Object(report));
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    if ort_ok {
        Ok(())
    } else {
        Err(pie::Error::Unavailable(
            "pie cannot add subjects without the ONNX Runtime library (see above)".into(),
        ))
    }
}

/// Each place the ONNX Runtime library is looked for, in order, and which one is used.
fn ort_candidates(r: &Report) -> String {
    let mut out = String::from("  looked at, in order:");
    for c in &r.onnxruntime {
        let state = if c.chosen {
            "used"
        } else if c.place.exists {
            "there"
        } else {
            "missing"
        };
        out.push_str(&format!("\n    {} ({}): {state}", c.place.path.display(), c.place.from.reason()));
    }
    out
}

/// Where the CUDA libraries are looked for.
fn cuda_dirs(r: &Report) -> String {
    match &r.cuda_libraries {
        Some(c) => {
            let mut out = format!("  CUDA libraries are looked for in ({}):", c.from.reason());
            for d in &c.dirs {
                out.push_str(&format!(
                    "\n    {}{}",
                    d.path.display(),
                    if d.exists { "" } else { " (missing)" }
                ));
            }
            out
        }
        None => "  CUDA libraries: no PIE_CUDA_LIBS and no trainer environment to take them from".into(),
    }
}
