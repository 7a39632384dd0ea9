//! The pixel-unet backbone: a small denoiser on the photo's own pixels.
//! Crop, place the subject and match its colour to the scene around it,
//! re-synthesize where subject and scene meet (masked DDIM/DDPM with
//! classifier-free guidance, known pixels re-imposed every step), and put the
//! subject's own pixels, detail and shadow back at the photo's resolution:
//! inside the selection only the subject's footprint and a thin ring around
//! it change.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use image::{DynamicImage, GrayImage};
use ndarray::{Array1, Array2, Array3, Array4, Axis, Dimension, Ix4, Zip};
use ort::session::Session;
use ort::value::TensorRef;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use rand_distr::StandardNormal;

use crate::add::{self, Engine, Job, Prepared, Variant};
use crate::backbone::{About, Backbone, BackboneParts, Fault, Graphs, Model};
use crate::bundle::{self, Bundle};
use crate::composite::{self, region};
use crate::imageops::{self, Planes, Rect};
use crate::manifest::{DimSpec, Graph, Manifest, PixelModel, Quantization, Text};
use crate::plan::{self, Plan};
use crate::precision::{self, Precision, Wanted};
use crate::request::{Defaults, Settings};
use crate::runtime::{self, Device};
use crate::schedule::{step_coef, NoiseSchedule, Sampler, Scheduler};
use crate::{Error, Opt, Progress, Result};

/// The backbone named `pixel-unet` in bundle.json.
pub(crate) struct PixelUnet;

/// What a pixel-unet bundle holds beyond the common core.
#[derive(Debug, Clone)]
pub struct PixelBundle {
    pub model: PixelModel,
    /// The denoiser graph.
    pub denoiser: std::path::PathBuf,
    /// Its int8 twin, and what the trainer measured of it.
    pub denoiser_int8: Option<(std::path::PathBuf, Quantization)>,
}

impl Engine for PixelUnet {
    fn lacks(&self) -> &'static str {
        "no text encoder, DDIM/DDPM only"
    }

    fn reads(&self, opt: Opt) -> bool {
        !matches!(opt, Opt::Prompt | Opt::NegativePrompt | Opt::CudaGraph)
    }

    fn schedulers(&self) -> &'static [Scheduler] {
        &[Scheduler::Ddim]
    }

    fn defaults(&self) -> Defaults {
        Defaults { steps: 50, strength: 0.2, guidance: 3.0, detail: 1.0 }
    }

    fn blends(&self) -> bool {
        true
    }

    fn about(&self) -> About {
        About {
            title: "pixel-unet",
            label: "pixel-unet (small, any computer)",
            help: "pie's small model, trained from scratch on this photo; runs on a CPU",
        }
    }

    fn fine_tunes_a_base(&self) -> bool {
        false
    }

    fn check_text(&self, text: Option<&Text>) -> std::result::Result<(), String> {
        match text {
            Some(_) => Err("a pixel-unet bundle has no text section".into()),
            None => Ok(()),
        }
    }

    fn check_model(&self, m: &Manifest) -> std::result::Result<(), String> {
        let Model::Pixel(md) = &m.model else {
            return Err("graphs and model are of different backbones".into());
        };
        if md.channels != 3 || md.value_range != [-1, 1] {
            return Err("model.channels must be 3 and model.value_range [-1, 1]".into());
        }
        if md.size_multiple == 0
            || md.size_multiple > 1024
            || md.min_size == 0
            || md.min_size > 4096
            || md.scene_short_side < 8
            || md.resolution < 8
        {
            return Err("model sizes are out of range".into());
        }
        let s = &m.schedule;
        if s.kind != "ddpm" || s.prediction_type != "epsilon" {
            return Err("schedule must be type \"ddpm\" with prediction_type \"epsilon\"".into());
        }
        Ok(())
    }

    fn check_graphs(&self, m: &Manifest) -> std::result::Result<(), String> {
        let Graphs::Pixel(g) = &m.graphs else {
            return Err("graphs and model are of different backbones".into());
        };
        check_denoiser("graphs.denoiser", &g.denoiser)?;
        if let Some(q) = &g.denoiser_int8 {
            check_denoiser("graphs.denoiser_int8", &q.graph)?;
            if q.quantization.format != "qdq" {
                return Err(format!(
                    "graphs.denoiser_int8: quantization format {:?} is not one pie runs (qdq)",
                    q.quantization.format
                ));
            }
        }
        Ok(())
    }

    fn load(&self, dir: &std::path::Path, m: &Manifest) -> std::result::Result<BackboneParts, Fault> {
        match (&m.model, &m.graphs) {
            (Model::Pixel(model), Graphs::Pixel(g)) => Ok(BackboneParts::Pixel(PixelBundle {
                model: model.clone(),
                denoiser: dir.join(&g.denoiser.file),
                denoiser_int8: g
                    .denoiser_int8
                    .as_ref()
                    .map(|q| (dir.join(&q.graph.file), q.quantization.clone())),
            })),
            _ => Err(("bundle.json".into(), "graphs and model are of different backbones".into())),
        }
    }

    fn describe(&self, bundle: &Bundle) -> Vec<String> {
        let BackboneParts::Pixel(p) = &bundle.parts else { return Vec::new() };
        vec![format!(
            "backbone {} at {} px, scene short side {} px",
            bundle.manifest.backbone, p.model.resolution, p.model.scene_short_side
        )]
    }

    fn prepare<'a>(&self, job: &Job<'a>, progress: &mut dyn Progress) -> Result<Prepared<'a>> {
        let (bundle, s) = (job.bundle, job.settings);
        let BackboneParts::Pixel(parts) = &bundle.parts else {
            return Err(Error::internal(format!("concept {:?} is not a pixel-unet bundle", bundle.name())));
        };
        let plan = plan::plan_pixel(job.scene.width(), job.scene.height(), job.bbox, &parts.model)?;
        let work = prepare(bundle, job.scene, job.selection, job.pasted, &plan, job.bbox, s);
        add::loading(progress)?;
        let sched = NoiseSchedule::from_manifest(&bundle.manifest.schedule);
        let ts = sched.timesteps(s.steps, s.strength);
        let t0 = Instant::now();
        let (den, precision) = open_denoiser(bundle, parts, &work, &sched, ts[0], s)?;
        let session = t0.elapsed();
        if let Some(n) = &den.note {
            progress.update(0.0, n);
        }
        let div = if work.edit.is_some() { region::FEATHER_DIV_SUBJECT } else { region::FEATHER_DIV };
        let blend = region::blend_mask(job.selection, job.bbox, div);
        // With a subject, only its footprint and the ring around it are written;
        // the rest of the selection keeps its pixels exactly, like the outside.
        let write = match &work.edit {
            Some(e) => Cow::Owned(imageops::scale_mask_in(&blend, plan.crop, e)),
            None => blend,
        };
        Ok(Prepared {
            crop: plan.crop,
            work_w: plan.work_w,
            work_h: plan.work_h,
            steps: ts.len(),
            device: den.device,
            note: den.note,
            enlarged: work.enlarged,
            precision: Some(precision),
            session,
            write,
            sampler: Box::new(Sampling {
                session: den.session,
                bundle,
                work,
                sched,
                ts,
                settings: s.clone(),
                plan,
            }),
        })
    }
}

/// A denoiser graph's declared signature against the backbone's contract.
fn check_denoiser(key: &str, g: &Graph) -> std::result::Result<(), String> {
    let expect_in: [(&str, &str, usize); 3] = [("x", "float32", 4), ("t", "int64", 1), ("token", "int64", 1)];
    let expect_out: [(&str, &str, usize); 1] = [("eps", "float32", 4)];
    bundle::check_contract(key, Backbone::PixelUnet.name(), "inputs", &g.inputs, &expect_in)?;
    bundle::check_contract(key, Backbone::PixelUnet.name(), "outputs", &g.outputs, &expect_out)?;
    for spec in [&g.inputs[0], &g.outputs[0]] {
        if let DimSpec::Fixed(c) = &spec.shape[1] {
            if *c != 3 {
                return Err(format!("{key}: {} has {c} channels, expected 3", spec.name));
            }
        }
    }
    Ok(())
}

/// The variants' shared state.
struct Sampling<'a> {
    session: Session,
    bundle: &'a Bundle,
    work: Work,
    sched: NoiseSchedule,
    ts: Vec<usize>,
    settings: Settings,
    plan: Plan,
}

impl Variant for Sampling<'_> {
    fn sample(
        &mut self,
        seed: u64,
        runtime: &mut Duration,
        on_step: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Planes> {
        let (plan, prep) = (&self.plan, &self.work);
        let work = sample(
            &mut self.session,
            self.bundle,
            prep,
            &self.sched,
            &self.ts,
            &self.settings,
            seed,
            runtime,
            on_step,
        )?;
        // Back to [0, 1] at the crop's size.
        let mut res = imageops::resize(&Planes::from_array(work), plan.crop.w as usize, plan.crop.h as usize);
        if let Some(d) = &prep.detail {
            res.data.iter_mut().zip(d).for_each(|(v, d)| *v += d);
        }
        // The subject's own pixels at the photo's resolution: its outline is
        // as sharp as the photo's, whatever scale the model worked at.
        if let Some((full, weight)) = &prep.crisp {
            let n = weight.len();
            for c in 0..3 {
                let it = res.data[c * n..(c + 1) * n].iter_mut().zip(&full[c * n..(c + 1) * n]).zip(weight);
                it.for_each(|((r, f), k)| *r = k * f + (1.0 - k) * *r);
            }
        }
        res.data.iter_mut().for_each(|v| *v = (*v + 1.0) * 0.5);
        if let Some(shade) = &prep.shade {
            composite::darken(&mut res, shade);
        }
        Ok(res)
    }
}

/// What the model sees, at working resolution, in the model's [-1, 1]
/// (`[3, h, w]` images, `[h, w]` masks), and what is put back at the crop's.
struct Work {
    /// What is re-imposed where the model is not free: the scene crop, or,
    /// with a subject, the scene with the colour-matched subject in it.
    known: Array3<f32>,
    /// Scene with the subject pasted in: where sampling starts.
    composite: Array3<f32>,
    /// How free the model is, [0, 1]: the selection, or, with a subject, the
    /// band where subject and scene meet (see [`around_subject`]).
    sel: Array2<f32>,
    /// Where the subject token applies, [0, 1] (blurred placement).
    subj: Array2<f32>,
    /// At crop size, in model units: detail to add back after upsampling.
    detail: Option<Vec<f32>>,
    /// At crop size, [0, 1]: with a subject, the part of the selection that is
    /// written (its footprint and a ring around it); `None`: all of it.
    edit: Option<Vec<f32>>,
    /// At crop size: the composite in model units and how much of it is put
    /// back over the model's result (the subject's footprint).
    crisp: Option<(Vec<f32>, Vec<f32>)>,
    /// At crop size: how much darker the shadow makes each pixel, [0, 1].
    shade: Option<Vec<f32>>,
    /// How many times the subject's cut-out was enlarged to the photo's pixels.
    enlarged: Option<f32>,
}

/// How a subject is fitted into the scene. Lengths are fractions of the
/// selection's shorter side, so that they mean the same at any photo size.
struct Fit {
    /// The ring of scene around the subject's footprint that is re-synthesized
    /// (where the subject's soft edge meets the scene) ...
    ring: f32,
    /// ... and beyond it, the fade into the pixels that are kept as they are.
    fade: f32,
    /// Inside the footprint, the band along its edge where the model is free;
    /// further in, the subject's own pixels are kept (the small model cannot
    /// redraw a subject faithfully: it pulls it toward the scene it memorized).
    edge: f32,
    /// Along the subject's outline, how much of the colour difference between
    /// the scene just outside and the subject just inside is taken away at the
    /// outline (light from the scene wrapping around the subject) ...
    /// Against ground truth (tests/eval/harmonization.py, pie MSE over the
    /// composite's, seeds 0 and 1) less was better: 0.35 gave 0.817 and 0.755,
    /// 0.15 0.789 and 0.722, none 0.779 and 0.713. Some is kept for what that
    /// benchmark lacks: a cut-out's fringe of its own photo's background.
    wrap: f32,
    /// ... fading over this toward the subject's inside.
    wrap_depth: f32,
    /// Where the subject meets the selection's edge, all of that difference is
    /// taken away (as Poisson blending does) over this depth, and the model
    /// redraws it without the pasted detail, so the cut shows no seam.
    cut_depth: f32,
    /// The neighbourhood over which "local colour" is averaged.
    colour_scale: f32,
}

const FIT: Fit = Fit {
    ring: 0.03,
    fade: 0.03,
    edge: 0.02,
    wrap: 0.15,
    wrap_depth: 0.02,
    cut_depth: 0.05,
    colour_scale: 0.1,
};

fn prepare(
    bundle: &Bundle,
    scene: &DynamicImage,
    selection: &GrayImage,
    given: Option<&GrayImage>,
    plan: &Plan,
    bbox: Rect,
    opts: &Settings,
) -> Work {
    let (w, h) = (plan.work_w, plan.work_h);
    let (cw, ch) = (plan.crop.w as usize, plan.crop.h as usize);
    let crop = imageops::read_rgb(scene, plan.crop);
    let known: Vec<f32> = imageops::resize(&crop, w, h).data.iter().map(|v| v * 2.0 - 1.0).collect();
    let in_crop = |m: &GrayImage| {
        let mut v = Vec::with_capacity(cw * ch);
        for y in plan.crop.y..plan.crop.bottom() {
            for x in plan.crop.x..plan.crop.right() {
                v.push(f32::from(m.get_pixel(x, y).0[0]) / 255.0);
            }
        }
        v
    };
    let mcrop = in_crop(selection);
    let mut sel = imageops::resize_plane(&mcrop, cw, ch, w, h);
    // The subject is placed at full resolution, then brought to the working scale.
    let mut full = Planes { c: 3, w: cw, h: ch, data: crop.data.iter().map(|v| v * 2.0 - 1.0).collect() };
    let mut place_full = vec![0.0f32; cw * ch];
    let mut around = None;
    let mut enlarged = None;
    let look = opts.look;
    let placed = match (given, &bundle.subject) {
        (Some(mask), _) => {
            place_full = in_crop(mask);
            true
        }
        (None, Some(subject)) => {
            let rel = composite::place::subject_box(selection, bbox, plan.crop, opts.placement.anchor);
            enlarged = composite::place::paste_subject(
                subject,
                rel,
                &opts.placement,
                cw,
                ch,
                &mcrop,
                &mut full.data,
                &mut place_full,
            )
            .map(|f| f as f32);
            true
        }
        (None, None) => false,
    };
    let mut crisp = None;
    let mut shade: Option<Vec<f32>> = None;
    if placed {
        let short = bbox.w.min(bbox.h) as f32;
        let mut a = around_subject(&place_full, &mcrop, cw, ch, short, &FIT);
        let surroundings = composite::surroundings(&place_full, cw, ch, composite::reach(short));
        composite::light::harmonize(&mut full, &place_full, &surroundings, look.harmonize);
        let known_p = Planes { c: 3, w, h, data: known.clone() };
        match_colour(&mut full, &place_full, &known_p, &sel, short * plan.scale as f32, &FIT);
        if look.grain {
            // One grain for every variant: it is the photo's, not the variation's.
            composite::grain::match_grain(&mut full, &place_full, &a.d_in, &surroundings, 0);
        }
        let shadow = (look.shadow > 0.0).then(|| composite::shadow::coverage(&place_full, cw, ch));
        if let Some(shadow) = &shadow {
            a.write.iter_mut().zip(shadow).for_each(|(wr, s)| *wr = wr.max((s * 8.0).min(1.0)));
        }
        let free = imageops::resize_plane(&a.free, cw, ch, w, h);
        sel.iter_mut().zip(&free).for_each(|(s, f)| *s *= f.clamp(0.0, 1.0));
        // The subject's footprint, and the photo's own pixels just outside it
        // (one working pixel deep): below 1:1 the model's redrawing there is
        // an upsampled blur, which would soften the outline from outside.
        let texel = (1.0 / plan.scale as f32).max(1.0);
        let weight: Vec<f32> = place_full
            .iter()
            .zip(&a.d_out)
            .zip(&a.cut)
            .map(|((p, &d), k)| {
                let beside = if texel > 1.0 { (1.0 - (d - texel) / texel).clamp(0.0, 1.0) } else { 0.0 };
                p.min(1.0).max(beside) * (1.0 - k)
            })
            .collect();
        crisp = Some((full.data.clone(), weight));
        // Cast on the result, after the model: redrawn, the ring under the
        // subject would come back as the scene the model memorized, unshaded.
        shade = shadow.map(|s| composite::shadow::shade(&s, &mcrop, look.shadow));
        around = Some(a);
    }
    let composite = imageops::resize(&full, w, h).data;
    let known = if around.is_some() { composite.clone() } else { known };
    let place = imageops::resize_plane(&place_full, cw, ch, w, h);
    let radius = ((w.min(h) as f32) / 64.0).ceil() as usize;
    // Softened inward only: the subject's token outside its footprint would
    // draw a halo of its colour into the scene around it.
    let subj: Vec<f32> = imageops::box_blur(&place, w, h, radius.max(1))
        .iter()
        .zip(&place)
        .map(|(b, p)| b.min(p.min(1.0)))
        .collect();
    // What the working scale cannot hold: the composite minus its round trip
    // through the working size. Added back, it keeps the subject and the scene's
    // texture sharp when the model works below 1:1 (and is ~0 at 1:1).
    let detail = if opts.detail > 0.0 && (w != cw || h != ch) {
        let back = imageops::resize(&Planes { c: 3, w, h, data: composite.clone() }, cw, ch);
        let mut d: Vec<f32> = full.data.iter().zip(&back.data).map(|(f, b)| opts.detail * (f - b)).collect();
        // Where the subject is cut by the selection's edge the model's redrawing
        // stands alone: the pasted cut's detail would bring its seam back.
        if let Some(a) = &around {
            for c in 0..3 {
                let it =
                    d[c * cw * ch..(c + 1) * cw * ch].iter_mut().zip(&a.free).zip(&place_full).zip(&a.cut);
                it.for_each(|(((v, f), m), k)| *v *= 1.0 - m.min(1.0) * f * k);
            }
        }
        Some(d)
    } else {
        None
    };
    let image = |v: Vec<f32>| Planes { c: 3, w, h, data: v }.into_array();
    let mask = |v: Vec<f32>| Array2::from_shape_vec((h, w), v).unwrap_or_else(|e| unreachable!("{e}"));
    Work {
        known: image(known),
        composite: image(composite),
        sel: mask(sel),
        subj: mask(subj),
        detail,
        edit: around.map(|a| a.write),
        crisp,
        shade,
        enlarged,
    }
}

/// Around a placed subject, at the crop's size, [0, 1] each.
struct Around {
    /// What is written: the footprint, the ring around it, the fade beyond.
    write: Vec<f32>,
    /// How free the model is: on both sides of the footprint's edge (the ring
    /// outside, the `edge` band inside) and where the subject meets the
    /// selection's edge; 0 in the subject's inside, whose pixels are kept.
    free: Vec<f32>,
    /// Where the subject meets the selection's edge (within `cut_depth`).
    cut: Vec<f32>,
    /// Distance (chamfer, pixels) into the footprint (coverage ≥ 0.5), and out
    /// of it (from where coverage is above 0): for grain and the crisp outline.
    d_in: Vec<f32>,
    d_out: Vec<f32>,
}

fn around_subject(place: &[f32], sel: &[f32], w: usize, h: usize, short: f32, f: &Fit) -> Around {
    let outside: Vec<bool> = place.iter().map(|&m| m <= 0.0).collect();
    let inside = composite::inside(place);
    let in_sel: Vec<bool> = sel.iter().map(|&m| m >= 0.5).collect();
    let d_out = imageops::distance_inside(&outside, w, h);
    let d_in = imageops::distance_inside(&inside, w, h);
    let d_sel = imageops::distance_inside(&in_sel, w, h);
    let (ring, fade, edge) =
        ((short * f.ring).max(1.0), (short * f.fade).max(1.0), (short * f.edge).max(1.0));
    let cut_depth = (short * f.cut_depth).max(1.0);
    let write: Vec<f32> = d_out.iter().map(|&d| (1.0 - (d - ring) / fade).clamp(0.0, 1.0)).collect();
    let cut: Vec<f32> = d_sel
        .iter()
        .zip(place)
        .map(|(&d, &m)| if m > 0.0 { (1.0 - (d - cut_depth) / cut_depth).clamp(0.0, 1.0) } else { 0.0 })
        .collect();
    let free = write
        .iter()
        .zip(&d_in)
        .zip(&cut)
        .map(|((&wr, &di), &c)| {
            if di <= 0.0 { wr } else { (1.0 - (di - edge) / fade).clamp(0.0, 1.0) }.max(c)
        })
        .collect();
    Around { write, free, cut, d_in, d_out }
}

/// Matches the placed subject's colour to the scene around it, in the low
/// frequencies only, so that the subject keeps all its detail: the subject's
/// local mean colour over a band just inside its outline is moved toward the
/// scene's local mean colour over the kept pixels just outside it, by `wrap`
/// at the outline fading over `wrap_depth` inward, and all the way (as Poisson
/// blending does) where the subject meets the selection's edge, fading over
/// `cut_depth`. Works at the model's scale on `known` (the scene crop) and
/// `sel`; `full` and `place` are at the crop's size.
fn match_colour(full: &mut Planes, place: &[f32], known: &Planes, sel: &[f32], short_work: f32, f: &Fit) {
    let (w, h) = (known.w, known.h);
    let (cw, ch) = (full.w, full.h);
    let comp = imageops::resize(full, w, h);
    let pw = imageops::resize_plane(place, cw, ch, w, h);
    let inside: Vec<bool> = pw.iter().map(|&m| m >= 0.5).collect();
    let outside: Vec<bool> = inside.iter().map(|v| !v).collect();
    let in_sel: Vec<bool> = sel.iter().map(|&m| m >= 0.5).collect();
    let d_in = imageops::distance_inside(&inside, w, h);
    let d_out = imageops::distance_inside(&outside, w, h);
    let d_sel = imageops::distance_inside(&in_sel, w, h);
    let band = (0.05 * short_work).max(2.0);
    let ring_w: Vec<f32> = d_out.iter().map(|&d| if d > 0.0 && d <= band { 1.0 } else { 0.0 }).collect();
    let band_w: Vec<f32> = d_in.iter().map(|&d| if d > 0.0 && d <= band { 1.0 } else { 0.0 }).collect();
    let sigma = (f.colour_scale * short_work).max(1.0);
    let (scene_mean, sd) = imageops::local_mean(known, &ring_w, sigma);
    let (subj_mean, bd) = imageops::local_mean(&comp, &band_w, sigma);
    let (depth, cut_depth) = ((f.wrap_depth * short_work).max(0.5), (f.cut_depth * short_work).max(0.5));
    let n = w * h;
    let mut corr = Planes::new(3, w, h);
    for i in 0..n {
        if sd[i] <= 1e-4 || bd[i] <= 1e-4 {
            continue;
        }
        let k_wrap = f.wrap * (-(d_in[i] - 0.5).max(0.0) / depth).exp();
        let k_cut = (1.0 - (d_sel[i] - cut_depth) / cut_depth).clamp(0.0, 1.0);
        let k = k_wrap.max(k_cut);
        for c in 0..3 {
            corr.data[c * n + i] = k * (scene_mean.data[c * n + i] - subj_mean.data[c * n + i]);
        }
    }
    let up = imageops::resize(&corr, cw, ch);
    let cn = cw * ch;
    for c in 0..3 {
        for i in 0..cn {
            let v = &mut full.data[c * cn + i];
            *v = (*v + place[i] * up.data[c * cn + i]).clamp(-1.0, 1.0);
        }
    }
}

/// Standard normal samples from the seeded stream (ChaCha8 + ziggurat:
/// the same sequence for the same seed on every run).
struct Noise(ChaCha8Rng);

impl Noise {
    /// In the array's logical (row-major) order, whatever its memory layout.
    fn fill<D: Dimension>(&mut self, out: &mut ndarray::Array<f32, D>) {
        for v in out.iter_mut() {
            *v = self.0.sample(StandardNormal);
        }
    }
}

/// The tokens of one denoiser evaluation: subject, scene, null; a scene
/// bundle has no subject token, and guidance 1 is the conditional prediction
/// alone, with no need to run the null token.
fn batch_tokens(bundle: &Bundle, guidance: f32) -> Array1<i64> {
    let mut tokens = Vec::with_capacity(3);
    if let Some(s) = bundle.subject_token {
        tokens.push(s);
    }
    tokens.push(bundle.scene_token);
    if guidance != 1.0 {
        tokens.push(bundle.null_token);
    }
    Array1::from(tokens)
}

/// The denoiser session an Add runs, and which graph it is: int8 on the CPU
/// where the bundle has it within [`precision::TOLERANCE`] and, on this
/// machine, it runs clearly faster than fp32 (timed once on this Add's own
/// start, remembered; `PIE_PRECISION` overrides).
fn open_denoiser(
    bundle: &Bundle,
    parts: &PixelBundle,
    work: &Work,
    sched: &NoiseSchedule,
    t: usize,
    s: &Settings,
) -> Result<(runtime::Denoiser, Precision)> {
    let ctx = crate::locations::Context::current();
    let wanted = Wanted::from_env(&ctx)?;
    let fp32 = |d| Ok((runtime::open(&parts.denoiser, d, s.threads)?, Precision::Fp32));
    let Some((int8_path, q)) = parts.denoiser_int8.as_ref().filter(|_| wanted != Wanted::Fp32) else {
        if wanted == Wanted::Int8 {
            return Err(Error::bad(format!(
                "PIE_PRECISION=int8, but {:?} has no int8 denoiser (learned by an older pie, or its quantization was \
                 too far from fp32)",
                bundle.name()
            )));
        }
        return fp32(s.device);
    };
    let within = q.rel_rms_diff <= precision::TOLERANCE;
    // int8 is a CPU route: CUDA runs the fp32 graph.
    let cpu = s.device == Device::Cpu || (s.device == Device::Auto && !runtime::init()?.has_cuda_ep);
    if wanted == Wanted::Int8 {
        if !cpu || !within {
            return Err(Error::bad(format!(
                "PIE_PRECISION=int8 runs on the CPU only, within a relative difference of {} ({:?}: {})",
                precision::TOLERANCE,
                bundle.name(),
                q.rel_rms_diff
            )));
        }
        return Ok((runtime::open(int8_path, Device::Cpu, s.threads)?, Precision::Int8));
    }
    if !cpu || !within {
        return fp32(s.device);
    }
    let threads = s.threads.unwrap_or_else(runtime::default_threads).max(1);
    let key = precision::key(threads, parts.model.base_channels, &q.format);
    match precision::remembered(&ctx, &key) {
        Some(v) if v.int8 => return Ok((runtime::open(int8_path, Device::Cpu, s.threads)?, Precision::Int8)),
        Some(_) => return fp32(Device::Cpu),
        None => {}
    }
    let mut f = runtime::open(&parts.denoiser, Device::Cpu, s.threads)?;
    let mut i = runtime::open(int8_path, Device::Cpu, s.threads)?;
    // The probe is this Add's own first step: its composite at its noise level.
    let tokens = batch_tokens(bundle, s.guidance);
    let (_, h, w) = work.composite.dim();
    let a = sched.abar(Some(t));
    let (ka, kn) = (a.sqrt() as f32, (1.0 - a).sqrt() as f32);
    let mut noise = Noise(ChaCha8Rng::seed_from_u64(0));
    let mut z = Array3::<f32>::zeros((3, h, w));
    noise.fill(&mut z);
    let x = Zip::from(&work.composite).and(&z).map_collect(|&c, &e| ka * c + kn * e);
    let xin = x
        .broadcast((tokens.len(), 3, h, w))
        .map(|v| v.to_owned())
        .ok_or_else(|| Error::internal("the probe's batch does not broadcast"))?;
    let tv = Array1::from_elem(tokens.len(), t as i64);
    let v = precision::time(&mut f.session, &mut i.session, &xin, &tv, &tokens, 3)?;
    precision::remember(&ctx, &key, &v);
    Ok(if v.int8 { (i, Precision::Int8) } else { (f, Precision::Fp32) })
}

#[allow(clippy::too_many_arguments)]
fn sample(
    session: &mut ort::session::Session,
    bundle: &Bundle,
    p: &Work,
    sched: &NoiseSchedule,
    ts: &[usize],
    opts: &Settings,
    seed: u64,
    ort_time: &mut Duration,
    on_step: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Array3<f32>> {
    let (_, h, w) = p.known.dim();
    let mut noise = Noise(ChaCha8Rng::seed_from_u64(seed));
    let mut z = Array3::<f32>::zeros((3, h, w));

    let g = opts.guidance;
    let guided = g != 1.0;
    let tokens = batch_tokens(bundle, g);
    let batch = tokens.len();
    let has_subject = bundle.subject_token.is_some();

    let a0 = sched.abar(Some(ts[0]));
    noise.fill(&mut z);
    let (ka0, kn0) = (a0.sqrt() as f32, (1.0 - a0).sqrt() as f32);
    let mut x = Zip::from(&p.composite).and(&z).map_collect(|&c, &e| ka0 * c + kn0 * e);
    // One copy of x per token: the batch the denoiser runs.
    let mut xin = Array4::<f32>::zeros((batch, 3, h, w));
    let mut eps = Array3::<f32>::zeros((3, h, w));
    let eta = if opts.sampler == Sampler::Ddpm { 1.0 } else { 0.0 };
    let ie = |e: ort::Error| {
        Error::internal(format!("ONNX Runtime failed while running the denoiser of {}: {e}", bundle.name()))
    };

    for (i, &t) in ts.iter().enumerate() {
        on_step(i)?;
        xin.outer_iter_mut().for_each(|mut b| b.assign(&x));
        let tv = Array1::from_elem(batch, t as i64);
        let t_run = Instant::now();
        {
            let outputs = session
                .run(ort::inputs![
                    "x" => TensorRef::from_array_view(&xin).map_err(ie)?,
                    "t" => TensorRef::from_array_view(&tv).map_err(ie)?,
                    "token" => TensorRef::from_array_view(&tokens).map_err(ie)?,
                ])
                .map_err(ie)?;
            let eps_value = outputs.get("eps").ok_or_else(|| {
                Error::internal(format!("the denoiser of {} gave no output named eps", bundle.name()))
            })?;
            let out = eps_value.try_extract_array::<f32>().map_err(ie)?;
            let shape = out.shape().to_vec();
            let out =
                out.into_dimensionality::<Ix4>().ok().filter(|o| o.dim() == (batch, 3, h, w)).ok_or_else(
                    || {
                        Error::internal(format!(
                        "the denoiser of {} returned eps of shape {shape:?}, expected [{batch}, 3, {h}, {w}]",
                        bundle.name()
                    ))
                    },
                )?;
            *ort_time += t_run.elapsed();
            // Conditional ε: the subject's where it is placed, the scene's around it.
            if has_subject {
                Zip::from(&mut eps)
                    .and(out.index_axis(Axis(0), 0))
                    .and(out.index_axis(Axis(0), 1))
                    .and_broadcast(&p.subj)
                    .for_each(|e, &s, &sc, &m| *e = m * s + (1.0 - m) * sc);
            } else {
                eps.assign(&out.index_axis(Axis(0), 0));
            }
            if guided {
                Zip::from(&mut eps)
                    .and(out.index_axis(Axis(0), batch - 1))
                    .for_each(|e, &nu| *e = nu + g * (*e - nu));
            }
        }

        let prev = ts.get(i + 1).copied();
        let c = step_coef(sched.abar(Some(t)), sched.abar(prev), eta);
        let (sa, s1, sp, ce, sg) = (
            c.sqrt_abar as f32,
            c.sqrt_one_minus as f32,
            c.sqrt_abar_prev as f32,
            c.c_eps as f32,
            c.sigma as f32,
        );
        if sg > 0.0 {
            noise.fill(&mut z);
        } else {
            z.fill(0.0);
        }
        let (inv_sa, inv_s1) = (1.0 / sa, 1.0 / s1);
        Zip::from(&mut x).and(&eps).and(&z).for_each(|xv, &e, &zv| {
            let x0 = ((*xv - s1 * e) * inv_sa).clamp(-1.0, 1.0);
            // ε consistent with the clamped x̂0, so the step stays on its trajectory.
            let e = (*xv - sa * x0) * inv_s1;
            *xv = sp * x0 + ce * e + sg * zv;
        });
        // Re-impose what is known, noised to the level x is now at.
        let ap = sched.abar(prev);
        let (ka, kn) = (ap.sqrt() as f32, (1.0 - ap).sqrt() as f32);
        // Noise only where the known pixels show through, so a small selection
        // costs little; drawn channel by channel in row-major order, so the
        // stream is the same whatever the arrays' layout.
        for (mut xs, ks) in x.outer_iter_mut().zip(p.known.outer_iter()) {
            for ((xv, kv), m) in xs.iter_mut().zip(ks.iter()).zip(p.sel.iter()) {
                if *m < 1.0 {
                    let noise_v =
                        if prev.is_some() { kn * noise.0.sample::<f32, _>(StandardNormal) } else { 0.0 };
                    *xv = m * *xv + (1.0 - m) * (ka * kv + noise_v);
                }
            }
        }
    }
    on_step(ts.len())?;
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 60x50 crop of scene colour `a`, a selection x 10..50, y 10..40, and
    /// a subject of colour `b` filling x 20..40 over the selection's height
    /// (so it meets the selection's top and bottom edges).
    fn setup() -> (Planes, Vec<f32>, Vec<f32>, Planes) {
        let (w, h) = (60, 50);
        let (a, b) = ([-0.6f32, 0.0, 0.6], [0.8f32, -0.6, -0.8]);
        let inside = |x: usize, y: usize, x0, x1| (x0..x1).contains(&x) && (10..40).contains(&y);
        let sel: Vec<f32> =
            (0..w * h).map(|i| if inside(i % w, i / w, 10, 50) { 1.0 } else { 0.0 }).collect();
        let place: Vec<f32> =
            (0..w * h).map(|i| if inside(i % w, i / w, 20, 40) { 1.0 } else { 0.0 }).collect();
        let mut known = Planes::new(3, w, h);
        let mut full = Planes::new(3, w, h);
        for c in 0..3 {
            for i in 0..w * h {
                known.data[c * w * h + i] = a[c];
                full.data[c * w * h + i] = if place[i] > 0.0 { b[c] } else { a[c] };
            }
        }
        (known, sel, place, full)
    }

    fn px(p: &Planes, x: usize, y: usize) -> [f32; 3] {
        [0, 1, 2].map(|c| p.data[c * p.w * p.h + y * p.w + x])
    }

    fn d(p: [f32; 3], q: [f32; 3]) -> f32 {
        p.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt()
    }

    #[test]
    fn the_subject_takes_the_scene_colour_where_it_meets_the_selection_edge_and_keeps_its_own_inside() {
        let (known, sel, place, mut full) = setup();
        let (a, b) = (px(&known, 0, 0), px(&full, 30, 25));
        match_colour(&mut full, &place, &known, &sel, 30.0, &FIT);
        // at the selection's top and bottom edges, in the middle of the subject's width
        for y in [10, 39] {
            assert!(d(px(&full, 30, y), a) < 0.1 * d(a, b), "row {y}: {:?}", px(&full, 30, y));
        }
        // along its outline inside the selection the scene's light only wraps
        // around it: moved toward the scene, by a part of the wrap at most
        let side = px(&full, 20, 25);
        let moved = d(side, b) / d(a, b);
        assert!(moved > FIT.wrap / 3.0 && moved < FIT.wrap, "outline {side:?} moved {moved}");
        // the middle is the subject's own colour
        assert!(d(px(&full, 30, 25), b) < 0.01, "middle {:?}", px(&full, 30, 25));
        // outside the footprint nothing is touched
        assert_eq!(px(&full, 15, 25), a);
    }

    #[test]
    fn only_the_footprint_and_a_thin_ring_are_written_and_the_model_is_free_only_where_subject_and_scene_meet(
    ) {
        let (_, sel, place, _) = setup();
        let r = around_subject(&place, &sel, 60, 50, 30.0, &FIT);
        let at = |v: &[f32], x: usize, y: usize| v[y * 60 + x];
        // written: the footprint and about 2 px around it (3% of 30 px, then a 1 px fade)
        assert_eq!(at(&r.write, 30, 25), 1.0);
        assert_eq!(at(&r.write, 19, 25), 1.0);
        assert_eq!(at(&r.write, 15, 25), 0.0);
        assert_eq!(at(&r.write, 44, 25), 0.0);
        // free: on both sides of the outline and where the subject meets the selection's edge ...
        assert_eq!(at(&r.free, 19, 25), 1.0);
        assert_eq!(at(&r.free, 20, 25), 1.0);
        assert_eq!(at(&r.free, 30, 10), 1.0);
        assert!(at(&r.cut, 30, 10) == 1.0 && at(&r.cut, 30, 25) == 0.0);
        // ... and not in the subject's inside, whose pixels are kept
        assert_eq!(at(&r.free, 30, 25), 0.0);
    }
}
