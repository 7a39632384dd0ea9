//! Which of a pixel-unet bundle's denoiser graphs an Add runs on the CPU: the
//! fp32 graph, or its int8 twin (QDQ convolutions, calibrated by the trainer on
//! the concept's own views). ONNX Runtime runs int8 convolutions with VNNI/AMX
//! where the CPU has them and can be slower than fp32 where it has not, so the
//! choice is timed once per machine, ONNX Runtime version, thread count and
//! model width, and remembered in the build cache (`denoiser-precision.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::{Array1, Array4};
use ort::session::Session;
use ort::value::TensorRef;

use crate::locations::Context;
use crate::{Error, Result};

/// The largest relative RMS difference of ε (int8 against fp32, measured by the
/// trainer at export and again here on the probe) with which int8 is used: at
/// the trainer's 0.012 a subject's Add moved by at most 1 level of 255 on the
/// evaluation pairs, a scene concept's by at most 5 (bench/README.md).
pub const TOLERANCE: f64 = 0.05;

/// int8 is kept only when it takes at most this share of fp32's time: a tie
/// is not worth the (small) difference in the result.
const FASTER: f64 = 0.9;

/// The graph an Add ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        })
    }
}

/// What `PIE_PRECISION` asks for: `auto` (the default: timed), `fp32` or `int8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Auto,
    Fp32,
    Int8,
}

impl Wanted {
    pub fn from_env(ctx: &Context) -> Result<Wanted> {
        match ctx.precision().as_deref() {
            None | Some("auto") => Ok(Wanted::Auto),
            Some("fp32") => Ok(Wanted::Fp32),
            Some("int8") => Ok(Wanted::Int8),
            Some(other) => Err(Error::bad(format!(
                "PIE_PRECISION is {other:?}: use auto, fp32 or int8 (or leave it unset)"
            ))),
        }
    }
}

/// One timing: both graphs on the same probe, alternated.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Verdict {
    pub fp32_ms: f64,
    pub int8_ms: f64,
    /// ε's relative RMS difference on the probe.
    pub rel_rms_diff: f64,
    /// The probe's batch, height and width.
    pub probe: [usize; 3],
    pub int8: bool,
}

impl Verdict {
    fn new(fp32_ms: f64, int8_ms: f64, rel_rms_diff: f64, probe: [usize; 3]) -> Verdict {
        let int8 = int8_ms <= FASTER * fp32_ms && rel_rms_diff <= TOLERANCE;
        Verdict { fp32_ms, int8_ms, rel_rms_diff, probe, int8 }
    }
}

/// What the timing is remembered under: the timing holds for any bundle of
/// the same architecture on this machine.
pub fn key(threads: usize, base_channels: u32, format: &str) -> String {
    format!(
        "{} | onnxruntime {} | {threads} threads | pixel-unet base_channels {base_channels} {format}",
        cpu_name(),
        crate::runtime::init().map(|i| i.version).unwrap_or_default()
    )
}

/// The CPU's model name and the instruction sets int8 speed depends on.
fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let flags = field("flags").unwrap_or_default();
    let has: Vec<&str> = ["avx2", "avx512_vnni", "avx_vnni", "amx_int8"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|g| g == *f))
        .collect();
    format!("{model} [{}]", has.join(" "))
}

fn cache_file(ctx: &Context) -> Option<PathBuf> {
    ctx.cache().map(|c| c.path.join("denoiser-precision.json"))
}

fn read_all(path: &Path) -> BTreeMap<String, Verdict> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// The remembered timing for `key`, if any.
pub fn remembered(ctx: &Context, key: &str) -> Option<Verdict> {
    cache_file(ctx).and_then(|p| read_all(&p).remove(key))
}

/// Remembers `v` for `key`. A cache that cannot be written only means timing
/// again next time.
pub fn remember(ctx: &Context, key: &str, v: &Verdict) {
    let Some(path) = cache_file(ctx) else { return };
    let mut all = read_all(&path);
    all.insert(key.to_string(), v.clone());
    let Ok(text) = serde_json::to_vec_pretty(&all) else { return };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // Written aside and renamed, so a concurrent Add never reads half a file.
    let tmp = path.with_extension(format!("json.{}", std::process::id()));
    if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Times both sessions on `x` (batch of the probe, `t`, `tokens`): one
/// warm-up each, then `rounds` alternated runs, medians.
pub fn time(
    fp32: &mut Session,
    int8: &mut Session,
    x: &Array4<f32>,
    t: &Array1<i64>,
    tokens: &Array1<i64>,
    rounds: usize,
) -> Result<Verdict> {
    let ie = |e: ort::Error| Error::internal(format!("ONNX Runtime failed while timing the denoisers: {e}"));
    let run = |s: &mut Session| -> Result<(f64, Vec<f32>)> {
        let t0 = Instant::now();
        let out = s
            .run(ort::inputs![
                "x" => TensorRef::from_array_view(x).map_err(ie)?,
                "t" => TensorRef::from_array_view(t).map_err(ie)?,
                "token" => TensorRef::from_array_view(tokens).map_err(ie)?,
            ])
            .map_err(ie)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let eps = out.get("eps").ok_or_else(|| Error::internal("the denoiser gave no output named eps"))?;
        let (_, v) = eps.try_extract_tensor::<f32>().map_err(ie)?;
        Ok((ms, v.to_vec()))
    };
    let (_, ef) = run(fp32)?;
    let (_, eq) = run(int8)?;
    if ef.len() != eq.len() || ef.len() != x.len() {
        return Err(Error::internal("the fp32 and int8 denoisers give outputs of different sizes"));
    }
    let (mut tf, mut tq) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds.max(1) {
        tf.push(run(fp32)?.0);
        tq.push(run(int8)?.0);
    }
    let (se, sr) = ef.iter().zip(&eq).fold((0.0f64, 0.0f64), |(se, sr), (&f, &q)| {
        let d = f64::from(q - f);
        (se + d * d, sr + f64::from(f) * f64::from(f))
    });
    let rel = (se / sr.max(1e-12)).sqrt();
    let (n, _, h, w) = x.dim();
    Ok(Verdict::new(median(&mut tf), median(&mut tq), rel, [n, h, w]))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_is_kept_only_when_clearly_faster_and_within_the_tolerance() {
        assert!(Verdict::new(100.0, 60.0, 0.02, [3, 64, 64]).int8);
        assert!(!Verdict::new(100.0, 95.0, 0.02, [3, 64, 64]).int8, "a tie keeps fp32");
        assert!(!Verdict::new(100.0, 60.0, 0.2, [3, 64, 64]).int8, "too far from fp32");
    }

    #[test]
    fn a_timing_is_remembered_per_key_and_an_unreadable_cache_is_no_timing() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::with(&[("PIE_CACHE", dir.path().to_str().unwrap())], None);
        assert_eq!(remembered(&ctx, "a"), None);
        let v = Verdict::new(100.0, 60.0, 0.02, [3, 64, 64]);
        remember(&ctx, "a", &v);
        remember(&ctx, "b", &Verdict::new(100.0, 99.0, 0.02, [3, 64, 64]));
        assert_eq!(remembered(&ctx, "a"), Some(v));
        assert!(!remembered(&ctx, "b").unwrap().int8);
        std::fs::write(dir.path().join("denoiser-precision.json"), "{").unwrap();
        assert_eq!(remembered(&ctx, "a"), None);
    }

    #[test]
    fn pie_precision_takes_auto_fp32_int8_or_is_refused() {
        let w = |v: &str| Wanted::from_env(&Context::with(&[("PIE_PRECISION", v)], None));
        assert_eq!(w("").unwrap(), Wanted::Auto);
        assert_eq!(w("auto").unwrap(), Wanted::Auto);
        assert_eq!(w("fp32").unwrap(), Wanted::Fp32);
        assert_eq!(w("int8").unwrap(), Wanted::Int8);
        assert!(w("bf16").is_err());
    }
}
