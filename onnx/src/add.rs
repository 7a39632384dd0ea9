//! Adding the subject into a selection: crop, place, re-synthesize with the
//! personalized denoiser (masked DDIM/DDPM with classifier-free guidance,
//! known pixels re-imposed every step), and blend back.

use std::time::{Duration, Instant};

use image::{DynamicImage, GenericImageView, GrayImage, RgbaImage};
use ort::value::TensorRef;
use rand_chacha::ChaCha8Rng;
use rand::Rng;
use rand_core::SeedableRng;
use rand_distr::StandardNormal;

use crate::bundle::Bundle;
use crate::imageops::{self, Planes, Rect};
use crate::plan::{self, Plan};
use crate::runtime::{self, Device};
use crate::schedule::{step_coef, NoiseSchedule};
use crate::{Error, Progress, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    /// Deterministic (η = 0), x̂0 clamped to [-1, 1].
    #[default]
    Ddim,
    /// Ancestral, DDPM's posterior variance (η = 1) on the same timesteps.
    Ddpm,
}

impl std::str::FromStr for Sampler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Sampler> {
        match s.to_ascii_lowercase().as_str() {
            "ddim" => Ok(Sampler::Ddim),
            "ddpm" => Ok(Sampler::Ddpm),
            _ => Err(Error::bad(format!("unknown sampler {s:?}: use ddim or ddpm"))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AddOptions {
    pub seed: u64,
    /// Denoiser steps over the whole schedule; `steps × strength` of them run
    /// per result, each one graph run on a batch of 3 (subject, scene, null).
    pub steps: usize,
    /// How much of the selection is re-synthesized, (0, 1]: 1 starts from noise,
    /// lower keeps more of the placed subject.
    pub strength: f32,
    /// Classifier-free guidance scale; 1 = none.
    pub guidance: f32,
    /// Results from seeds `seed`, `seed+1`, …
    pub variants: usize,
    pub device: Device,
    pub sampler: Sampler,
    /// ONNX Runtime threads; `None` = all cores but one.
    pub threads: Option<usize>,
    /// 0 to 1: how much full-resolution detail of the placed subject and the
    /// scene is put back when the model works below 1:1 (large photos).
    pub detail: f32,
}

impl Default for AddOptions {
    fn default() -> Self {
        AddOptions { seed: 0, steps: 50, strength: 0.7, guidance: 3.0, variants: 1, device: Device::Auto, sampler: Sampler::Ddim, threads: None, detail: 1.0 }
    }
}

/// Where the time went.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct AddStats {
    pub total: Duration,
    /// Inside ONNX Runtime's `run`.
    pub runtime: Duration,
    /// Creating the session (loading the graph).
    pub session: Duration,
    pub steps: usize,
    pub work_w: usize,
    pub work_h: usize,
}

#[derive(Debug, Clone)]
pub struct AddOutput {
    pub seed: u64,
    /// Same size and colour type as the input; bit-identical where the selection is 0; alpha untouched.
    pub image: DynamicImage,
    /// Bounding box of the pixels that may differ from the input.
    pub changed: Rect,
    /// The device that really ran the model.
    pub device: Device,
    /// Why `auto` ran on the CPU, said once per process.
    pub note: Option<String>,
    pub stats: AddStats,
}

fn check_options(o: &AddOptions) -> Result<()> {
    if !(1..=1000).contains(&o.steps) {
        return Err(Error::bad(format!("--steps {} is out of range (1 to 1000)", o.steps)));
    }
    if !(o.strength > 0.0 && o.strength <= 1.0) {
        return Err(Error::bad(format!("--strength {} is out of range (above 0, at most 1)", o.strength)));
    }
    if !(o.guidance.is_finite() && (0.0..=30.0).contains(&o.guidance)) {
        return Err(Error::bad(format!("--guidance {} is out of range (0 to 30)", o.guidance)));
    }
    if !(1..=64).contains(&o.variants) {
        return Err(Error::bad(format!("--variants {} is out of range (1 to 64)", o.variants)));
    }
    if !(0.0..=1.0).contains(&o.detail) {
        return Err(Error::bad(format!("--detail {} is out of range (0 to 1)", o.detail)));
    }
    if o.threads == Some(0) {
        return Err(Error::bad("--threads must be at least 1"));
    }
    Ok(())
}

/// Checks the selection against the scene; returns its bounding box.
pub fn check_selection(scene: &DynamicImage, selection: &GrayImage) -> Result<Rect> {
    if scene.width() == 0 || scene.height() == 0 {
        return Err(Error::bad("the image is empty (0 pixels)"));
    }
    if selection.dimensions() != scene.dimensions() {
        return Err(Error::bad(format!(
            "the selection mask is {}x{} but the image is {}x{}: they must be the same size",
            selection.width(),
            selection.height(),
            scene.width(),
            scene.height()
        )));
    }
    let bbox = imageops::mask_bbox(selection)
        .ok_or_else(|| Error::bad("the selection mask is empty (0 everywhere): select where the subject should go"))?;
    if selection.as_raw().iter().all(|&v| v > 0) {
        return Err(Error::bad(
            "the selection covers the whole image: leave part of the scene unselected so pie can match it",
        ));
    }
    Ok(bbox)
}

/// Adds the bundle's subject into `selection` of `scene`. A scene (Stage I)
/// bundle re-synthesizes the selection as more of the scene.
pub fn add(bundle: &Bundle, scene: &DynamicImage, selection: &GrayImage, opts: &AddOptions, progress: &mut dyn Progress) -> Result<Vec<AddOutput>> {
    let mut outs = Vec::with_capacity(opts.variants);
    add_each(bundle, scene, selection, opts, progress, &mut |o| {
        outs.push(o);
        Ok(())
    })?;
    Ok(outs)
}

/// [`add`], handing each result to `sink` as soon as it is made, so a caller
/// that stores them (the command line) never holds K full-size copies of a
/// large photo at once. An error from `sink` stops the work.
pub fn add_each(
    bundle: &Bundle,
    scene: &DynamicImage,
    selection: &GrayImage,
    opts: &AddOptions,
    progress: &mut dyn Progress,
    sink: &mut dyn FnMut(AddOutput) -> Result<()>,
) -> Result<()> {
    let started = Instant::now();
    check_options(opts)?;
    let bbox = check_selection(scene, selection)?;
    let plan = plan::plan(scene.width(), scene.height(), bbox, &bundle.manifest.model)?;
    let prep = prepare(bundle, scene, selection, &plan, bbox, opts.detail);

    progress.update(0.0, "loading the model");
    if progress.cancelled() {
        return Err(Error::Cancelled);
    }
    let t0 = Instant::now();
    let mut den = runtime::open(&bundle.denoiser_path(), opts.device, opts.threads)?;
    let session_time = t0.elapsed();
    if let Some(n) = &den.note {
        progress.update(0.0, n);
    }

    let sched = NoiseSchedule::from_manifest(&bundle.manifest.schedule);
    let ts = sched.timesteps(opts.steps, opts.strength);
    let base = match scene {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageLumaA8(_) | DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_)
        | DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) | DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgba16(_)
        | DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => scene.clone(),
        other => DynamicImage::ImageRgba8(other.to_rgba8()),
    };
    // A hard-edged selection would show its edge as a seam: fade the result in
    // over a few pixels inside it (outside stays untouched either way).
    let soft_owned;
    let blend_mask = if imageops::is_hard(selection) {
        let r = (bbox.w.min(bbox.h) / 24).clamp(1, 12);
        soft_owned = imageops::feather_inward(selection, bbox, r);
        &soft_owned
    } else {
        selection
    };
    for v in 0..opts.variants {
        let seed = opts.seed.wrapping_add(v as u64);
        let mut stats = AddStats { session: session_time, steps: ts.len(), work_w: plan.work_w, work_h: plan.work_h, ..Default::default() };
        let total = (opts.variants * ts.len()) as f64;
        let mut on_step = |i: usize| -> Result<()> {
            progress.update(
                (v * ts.len() + i) as f64 / total,
                &if opts.variants > 1 { format!("variant {}/{}: step {}/{}", v + 1, opts.variants, i, ts.len()) } else { format!("step {}/{}", i, ts.len()) },
            );
            if progress.cancelled() {
                return Err(Error::Cancelled);
            }
            Ok(())
        };
        let work = sample(&mut den.session, bundle, &prep, &sched, &ts, opts, seed, &mut stats.runtime, &mut on_step)?;
        // Back to [0, 1] at the crop's size, then through the user's selection.
        let mut res = imageops::resize(&Planes { c: 3, w: plan.work_w, h: plan.work_h, data: work }, plan.crop.w as usize, plan.crop.h as usize);
        if let Some(d) = &prep.detail {
            res.data.iter_mut().zip(d).for_each(|(v, d)| *v += d);
        }
        res.data.iter_mut().for_each(|v| *v = (*v + 1.0) * 0.5);
        let mut image = base.clone();
        imageops::blend_into(&mut image, plan.crop, &res, blend_mask);
        stats.total = started.elapsed();
        sink(AddOutput { seed, image, changed: bbox, device: den.device, note: den.note.clone(), stats })?;
    }
    progress.update(1.0, "done");
    Ok(())
}

/// Everything at working resolution, in the model's [-1, 1].
struct Prepared {
    w: usize,
    h: usize,
    /// The scene crop (the known pixels).
    known: Vec<f32>,
    /// Scene with the subject pasted in: where sampling starts.
    composite: Vec<f32>,
    /// The selection, [0, 1].
    sel: Vec<f32>,
    /// Where the subject token applies, [0, 1] (blurred placement).
    subj: Vec<f32>,
    /// At crop size, in model units: detail to add back after upsampling.
    detail: Option<Vec<f32>>,
}

fn prepare(bundle: &Bundle, scene: &DynamicImage, selection: &GrayImage, plan: &Plan, bbox: Rect, detail: f32) -> Prepared {
    let (w, h) = (plan.work_w, plan.work_h);
    let (cw, ch) = (plan.crop.w as usize, plan.crop.h as usize);
    let crop = imageops::read_rgb(scene, plan.crop);
    let known: Vec<f32> = imageops::resize(&crop, w, h).data.iter().map(|v| v * 2.0 - 1.0).collect();
    let mut mcrop = Vec::with_capacity(cw * ch);
    for y in plan.crop.y..plan.crop.bottom() {
        for x in plan.crop.x..plan.crop.right() {
            mcrop.push(f32::from(selection.get_pixel(x, y).0[0]) / 255.0);
        }
    }
    let sel = imageops::resize_plane(&mcrop, cw, ch, w, h);
    // The subject is placed at full resolution, then brought to the working scale.
    let mut full = Planes { c: 3, w: cw, h: ch, data: crop.data.iter().map(|v| v * 2.0 - 1.0).collect() };
    let mut place_full = vec![0.0f32; cw * ch];
    if let Some(subject) = &bundle.subject {
        let rel = ((bbox.x - plan.crop.x) as f64, (bbox.y - plan.crop.y) as f64, bbox.w as f64, bbox.h as f64);
        paste_subject(subject, rel, cw, ch, &mcrop, &mut full.data, &mut place_full);
    }
    let composite = imageops::resize(&full, w, h).data;
    let place = imageops::resize_plane(&place_full, cw, ch, w, h);
    let radius = ((w.min(h) as f32) / 64.0).ceil() as usize;
    let subj = imageops::box_blur(&place, w, h, radius.max(1));
    // What the working scale cannot hold: the composite minus its round trip
    // through the working size. Added back, it keeps the subject and the scene's
    // texture sharp when the model works below 1:1 (and is ~0 at 1:1).
    let detail = if detail > 0.0 && (w != cw || h != ch) {
        let back = imageops::resize(&Planes { c: 3, w, h, data: composite.clone() }, cw, ch);
        Some(full.data.iter().zip(&back.data).map(|(f, b)| detail * (f - b)).collect())
    } else {
        None
    };
    Prepared { w, h, known, composite, sel, subj, detail }
}

/// Scales the subject (cut to its mask's bounds) to fit the selection's
/// bounds, keeping its aspect, centred; alpha ∧ selection decides where.
fn paste_subject(subject: &RgbaImage, (sx, sy, sw, sh): (f64, f64, f64, f64), w: usize, h: usize, sel: &[f32], comp: &mut [f32], place: &mut [f32]) {
    let alpha = GrayImage::from_fn(subject.width(), subject.height(), |x, y| image::Luma([subject.get_pixel(x, y).0[3]]));
    let Some(b) = imageops::mask_bbox(&alpha) else { return };
    // Premultiplied, so the resampled edge does not pick up the colour under alpha 0.
    let mut p = Planes::new(4, b.w as usize, b.h as usize);
    let n = p.w * p.h;
    for y in 0..b.h {
        for x in 0..b.w {
            let px = subject.get_pixel(b.x + x, b.y + y).0;
            let a = f32::from(px[3]) / 255.0;
            let i = (y * b.w + x) as usize;
            for (c, v) in px.iter().take(3).enumerate() {
                p.data[c * n + i] = f32::from(*v) / 255.0 * a;
            }
            p.data[3 * n + i] = a;
        }
    }
    let fit = (sw / f64::from(b.w)).min(sh / f64::from(b.h));
    let pw = ((f64::from(b.w) * fit).round() as usize).max(1);
    let ph = ((f64::from(b.h) * fit).round() as usize).max(1);
    let r = imageops::resize(&p, pw, ph);
    let ox = (sx + (sw - pw as f64) / 2.0).round() as isize;
    let oy = (sy + (sh - ph as f64) / 2.0).round() as isize;
    let rn = pw * ph;
    let wn = w * h;
    for y in 0..ph {
        for x in 0..pw {
            let (tx, ty) = (ox + x as isize, oy + y as isize);
            if tx < 0 || ty < 0 || tx >= w as isize || ty >= h as isize {
                continue;
            }
            let t = ty as usize * w + tx as usize;
            let i = y * pw + x;
            let a = r.data[3 * rn + i];
            let m = (a * sel[t]).clamp(0.0, 1.0);
            if m <= 0.0 {
                continue;
            }
            for c in 0..3 {
                let col = if a > 1e-6 { (r.data[c * rn + i] / a).clamp(0.0, 1.0) } else { 0.0 };
                comp[c * wn + t] = m * (col * 2.0 - 1.0) + (1.0 - m) * comp[c * wn + t];
            }
            place[t] = m;
        }
    }
}

/// Standard normal samples from the seeded stream (ChaCha8 + ziggurat:
/// the same sequence for the same seed on every run).
struct Noise(ChaCha8Rng);

impl Noise {
    fn fill(&mut self, out: &mut [f32]) {
        for v in out.iter_mut() {
            *v = self.0.sample(StandardNormal);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn sample(
    session: &mut ort::session::Session,
    bundle: &Bundle,
    p: &Prepared,
    sched: &NoiseSchedule,
    ts: &[usize],
    opts: &AddOptions,
    seed: u64,
    ort_time: &mut Duration,
    on_step: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Vec<f32>> {
    let (w, h) = (p.w, p.h);
    let plane = w * h;
    let n = 3 * plane;
    let mut noise = Noise(ChaCha8Rng::seed_from_u64(seed));
    let mut z = vec![0.0f32; n];

    // Subject, scene, null; a scene bundle has no subject token.
    let mut tokens = Vec::with_capacity(3);
    if let Some(s) = bundle.subject_token {
        tokens.push(s);
    }
    tokens.push(bundle.scene_token);
    let g = opts.guidance;
    // Guidance 1 is the conditional prediction alone: no need to run the null token.
    let guided = g != 1.0;
    if guided {
        tokens.push(bundle.null_token);
    }
    let batch = tokens.len();
    let has_subject = bundle.subject_token.is_some();

    let a0 = sched.abar(Some(ts[0]));
    noise.fill(&mut z);
    let mut x: Vec<f32> = p.composite.iter().zip(&z).map(|(c, e)| (a0.sqrt() as f32) * c + ((1.0 - a0).sqrt() as f32) * e).collect();
    let mut xin = vec![0.0f32; batch * n];
    let mut eps = vec![0.0f32; n];
    let eta = if opts.sampler == Sampler::Ddpm { 1.0 } else { 0.0 };
    let ie = |e: ort::Error| Error::internal(format!("ONNX Runtime failed while running the denoiser of {}: {e}", bundle.name()));

    for (i, &t) in ts.iter().enumerate() {
        on_step(i)?;
        for b in 0..batch {
            xin[b * n..(b + 1) * n].copy_from_slice(&x);
        }
        let tv = vec![t as i64; batch];
        let t_run = Instant::now();
        {
            let outputs = session
                .run(ort::inputs![
                    "x" => TensorRef::from_array_view(([batch, 3, h, w], &xin[..])).map_err(ie)?,
                    "t" => TensorRef::from_array_view(([batch], &tv[..])).map_err(ie)?,
                    "token" => TensorRef::from_array_view(([batch], &tokens[..])).map_err(ie)?,
                ])
                .map_err(ie)?;
            let eps_value = outputs
                .get("eps")
                .ok_or_else(|| Error::internal(format!("the denoiser of {} gave no output named eps", bundle.name())))?;
            let (shape, out) = eps_value.try_extract_tensor::<f32>().map_err(ie)?;
            if out.len() != batch * n {
                return Err(Error::internal(format!("the denoiser of {} returned eps of shape {shape:?}, expected [{batch}, 3, {h}, {w}]", bundle.name())));
            }
            *ort_time += t_run.elapsed();
            // Conditional ε: the subject's where it is placed, the scene's around it.
            if has_subject {
                let (s, sc) = (&out[..n], &out[n..2 * n]);
                for c in 0..3 {
                    let r = c * plane..(c + 1) * plane;
                    let it = eps[r.clone()].iter_mut().zip(&s[r.clone()]).zip(&sc[r]).zip(&p.subj);
                    for (((e, s), sc), m) in it {
                        *e = m * s + (1.0 - m) * sc;
                    }
                }
            } else {
                eps.copy_from_slice(&out[..n]);
            }
            if guided {
                let nu = &out[(batch - 1) * n..batch * n];
                for (e, nu) in eps.iter_mut().zip(nu) {
                    *e = nu + g * (*e - nu);
                }
            }
        }

        let prev = ts.get(i + 1).copied();
        let c = step_coef(sched.abar(Some(t)), sched.abar(prev), eta);
        let (sa, s1, sp, ce, sg) = (c.sqrt_abar as f32, c.sqrt_one_minus as f32, c.sqrt_abar_prev as f32, c.c_eps as f32, c.sigma as f32);
        if sg > 0.0 {
            noise.fill(&mut z);
        } else {
            z.iter_mut().for_each(|v| *v = 0.0);
        }
        let (inv_sa, inv_s1) = (1.0 / sa, 1.0 / s1);
        for ((xv, e), zv) in x.iter_mut().zip(&eps).zip(&z) {
            let x0 = ((*xv - s1 * e) * inv_sa).clamp(-1.0, 1.0);
            // ε consistent with the clamped x̂0, so the step stays on its trajectory.
            let e = (*xv - sa * x0) * inv_s1;
            *xv = sp * x0 + ce * e + sg * zv;
        }
        // Re-impose what is known, noised to the level x is now at.
        let ap = sched.abar(prev);
        let (ka, kn) = (ap.sqrt() as f32, (1.0 - ap).sqrt() as f32);
        // Noise only where the known pixels show through, so a small selection costs little.
        for c in 0..3 {
            let xs = &mut x[c * plane..(c + 1) * plane];
            let ks = &p.known[c * plane..(c + 1) * plane];
            for ((xv, kv), m) in xs.iter_mut().zip(ks).zip(&p.sel) {
                if *m < 1.0 {
                    let noise_v = if prev.is_some() { kn * noise.0.sample::<f32, _>(StandardNormal) } else { 0.0 };
                    *xv = m * *xv + (1.0 - m) * (ka * kv + noise_v);
                }
            }
        }
    }
    on_step(ts.len())?;
    Ok(x)
}
