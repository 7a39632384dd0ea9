//! Add with an sd bundle: crop around the selection, scale it to the
//! model's native area, place the subject, VAE-encode, noise to the
//! strength, denoise with classifier-free guidance (known latents re-imposed
//! outside the mask each step, or an inpainting UNet's extra channels),
//! decode, and blend back through the selection.
//!
//! The latents stay where the UNet runs: every tensor of the loop is
//! allocated on the session's device and bound with IoBinding, and the step
//! after the UNet (guidance, scheduler, re-imposing) is a small ONNX graph
//! ([`super::step`]) on the same device. On the CPU the same code runs with
//! host memory, so the tests exercise the path the GPU takes.

use std::time::{Duration, Instant};

use ndarray::{s, Array1, Array2, Array3, Array4, ArrayView, Axis, Dimension, Ix2, Ix3, Ix4, Zip};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::Session;
use ort::value::{Tensor, TensorRef};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use rand_distr::StandardNormal;

use crate::add::{self, Engine, Job, Prepared, Variant};
use crate::backbone::{About, BackboneParts, Fault, Graphs};
use crate::bundle::Bundle;
use crate::composite::{self, region};
use crate::error::CudaOnly;
use crate::imageops::{self, Planes};
use crate::manifest::{Manifest, Model, Precision, SdModel, Text};
use crate::plan;
use crate::request::Defaults;
use crate::runtime::{self, Device, ModelSource};
use crate::schedule::{NoiseSchedule, Prediction, Sampler, Scheduler, StepPlan, Timing};
use crate::sd::step::{self, StepShape};
use crate::{Error, Opt, Progress, Result};

/// The device the bundle allows: float16 weights and graphs fused for CUDA
/// run on CUDA only, so the CPU is refused before any graph is opened.
fn device_for(bundle: &Bundle, model: &SdModel, asked: Device) -> Result<Device> {
    let needs = match (&model.optimized, model.precision) {
        (Some(o), _) if o.by.cuda_only() => {
            CudaOnly::Fused { by: o.by, graphs: o.graphs.iter().map(|g| g.key()).collect() }
        }
        (_, Precision::Float16) => CudaOnly::Float16,
        _ => return Ok(asked),
    };
    let refuse = |cuda: Option<String>| Error::CudaOnly {
        concept: bundle.name().to_string(),
        needs: needs.clone(),
        cuda,
    };
    match asked {
        Device::Cpu => Err(refuse(None)),
        Device::Cuda => Ok(Device::Cuda),
        Device::Auto => match runtime::probe_cuda()? {
            Ok(()) => Ok(Device::Cuda),
            Err(why) => Err(refuse(Some(why))),
        },
    }
}

/// `model` and `schedule` of an sd or sdxl bundle.
pub(crate) fn check_model_and_schedule(m: &Manifest, md: &SdModel) -> std::result::Result<(), String> {
    super::check_model(md)?;
    let s = &m.schedule;
    if s.kind != "ddpm" || !(s.prediction_type == "epsilon" || s.prediction_type == "v_prediction") {
        return Err(
            "schedule must be type \"ddpm\" with prediction_type \"epsilon\" or \"v_prediction\"".into()
        );
    }
    Ok(())
}

/// The backbone named `sd` in bundle.json: Stable Diffusion 1.x/2.x with a
/// text encoder, a VAE and a UNet.
pub(crate) struct Sd;

impl Engine for Sd {
    fn lacks(&self) -> &'static str {
        "it works in the VAE's latents, not at the photo's resolution"
    }

    fn reads(&self, opt: Opt) -> bool {
        opt != Opt::Detail
    }

    fn schedulers(&self) -> &'static [Scheduler] {
        &[Scheduler::Ddim, Scheduler::DpmSolver2M]
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            steps: 50,
            strength: super::DEFAULT_STRENGTH,
            guidance: super::DEFAULT_GUIDANCE,
            detail: 0.0,
        }
    }

    fn blends(&self) -> bool {
        false
    }

    fn about(&self) -> About {
        About {
            title: "Stable Diffusion",
            label: "Stable Diffusion (GPU)",
            help: "Fine-tunes a local Stable Diffusion checkpoint (a diffusers folder or a single .safetensors file); wants an NVIDIA GPU",
        }
    }

    fn fine_tunes_a_base(&self) -> bool {
        true
    }

    fn check_text(&self, text: Option<&Text>) -> std::result::Result<(), String> {
        match text {
            Some(_) => Ok(()),
            None => Err("an sd bundle needs a text section (tokenizer, max_length, prompts)".into()),
        }
    }

    fn check_model(&self, m: &Manifest) -> std::result::Result<(), String> {
        let Model::Sd(md) = &m.model else {
            return Err("graphs and model are of different backbones".into());
        };
        if md.conditioning.is_some() {
            return Err("model.conditioning is an sdxl bundle's, and this one says backbone sd".into());
        }
        check_model_and_schedule(m, md)
    }

    fn check_graphs(&self, m: &Manifest) -> std::result::Result<(), String> {
        let (Graphs::Sd(g), Model::Sd(md)) = (&m.graphs, &m.model) else {
            return Err("graphs and model are of different backbones".into());
        };
        let text = m.text.as_ref().ok_or("an sd bundle needs a text section")?;
        super::check_graphs(g, md, text)
    }

    fn load(&self, dir: &std::path::Path, m: &Manifest) -> std::result::Result<BackboneParts, Fault> {
        let (Model::Sd(model), Some(text)) = (&m.model, &m.text) else {
            return Err(("bundle.json".into(), "an sd bundle needs a text section".into()));
        };
        Ok(BackboneParts::Sd(super::SdBundle::load(dir, model, text)?))
    }

    fn describe(&self, bundle: &Bundle) -> Vec<String> {
        let BackboneParts::Sd(p) = &bundle.parts else { return Vec::new() };
        let (m, md) = (&bundle.manifest, &p.model);
        let base = md.base.path.as_deref().map(|p| format!(" ({p})")).unwrap_or_default();
        let mut lines = vec![format!(
            "backbone {} at {} px, base {}{base}, precision {}",
            m.backbone, md.resolution, md.base.name, md.precision
        )];
        if let Some(o) = &md.optimized {
            let graphs = o.graphs.iter().map(|g| g.key()).collect::<Vec<_>>().join(", ");
            let cuda = if o.by.cuda_only() { " (CUDA only)" } else { "" };
            lines.push(format!("graphs fused by {} {}: {graphs}{cuda}", o.by, o.version));
        }
        lines.push(format!(
            "UNet {} input channels{}, {} prediction",
            md.unet_in_channels,
            if md.unet_in_channels > md.latent_channels { " (inpainting)" } else { "" },
            m.schedule.prediction_type
        ));
        let t = &p.text;
        lines.push(format!(
            "prompt: {:?}{}",
            t.prompts.add,
            if t.prompts.negative.is_empty() {
                String::new()
            } else {
                format!(", negative: {:?}", t.prompts.negative)
            }
        ));
        lines
    }

    /// Crops around the selection at the model's native area, places the
    /// subject, encodes the prompt and the image once for every variant.
    fn prepare<'a>(&self, job: &Job<'a>, progress: &mut dyn Progress) -> Result<Prepared<'a>> {
        let (bundle, scene, selection, bbox, opts) =
            (job.bundle, job.scene, job.selection, job.bbox, job.settings);
        let m = &bundle.manifest;
        let BackboneParts::Sd(parts) = &bundle.parts else {
            return Err(Error::internal(format!("concept {:?} is not an sd bundle", bundle.name())));
        };
        let (model, text, prompter) = (&parts.model, &parts.text, &parts.prompter);
        let plan = plan::plan_sd(scene.width(), scene.height(), bbox, model)?;
        let prompt = super::add_prompt(m, text, opts.prompt.as_deref())?;
        let negative = opts.negative_prompt.clone().unwrap_or_else(|| text.prompts.negative.clone());
        let device = device_for(bundle, model, opts.device)?;

        add::loading(progress)?;
        let path =
            |key: &str| bundle.graph_path(key).ok_or_else(|| Error::internal(format!("no {key} graph")));
        let t0 = Instant::now();
        let vsf = model.vae_scale_factor as usize;
        let (ww, wh) = (plan.work_w, plan.work_h);
        let (lw, lh) = (ww / vsf, wh / vsf);
        let guided = opts.guidance != 1.0;
        let batch = if guided { 2 } else { 1 };
        // The UNet's free dimensions (schema/README.md), fixed for a CUDA graph.
        let fixed = [("N", batch as i64), ("h", lh as i64), ("w", lw as i64)];
        let (unet, cuda_graph) = runtime::open_captured(
            ModelSource::File(&path("unet")?),
            device,
            opts.threads,
            &fixed,
            opts.cuda_graph,
        )?;
        // The step graph on the device the UNet really got (it shares the loop's
        // device memory); the text encoder and the VAE there too, where they can
        // run.
        let dev = unet.device;
        let others = match (dev, device) {
            (Device::Cpu | Device::Auto, _) => Device::Cpu,
            (Device::Cuda, Device::Cuda) => Device::Cuda,
            (Device::Cuda, _) => Device::Auto,
        };
        let note = unet.note.clone();
        if let Some(n) = &note {
            progress.update(0.0, n);
        }
        let unet = unet.session;
        let open = |key: &str| -> Result<Session> {
            Ok(runtime::open_with(ModelSource::File(&path(key)?), others, opts.threads, None)?.session)
        };
        let mut text_encoder = open("text_encoder")?;
        let mut vae_encoder = open("vae_encoder")?;
        let vae_decoder = open("vae_decoder")?;

        let lc = model.latent_channels as usize;
        let shape = StepShape { batch, latent: lc, unet_in: model.unet_in_channels as usize, h: lh, w: lw };
        let step_graph = step::graph(&shape);
        let step_session =
            runtime::open_with(ModelSource::Bytes(&step_graph, "the step graph"), dev, Some(1), None)?
                .session;
        let session_time = t0.elapsed();
        let mut ort_time = Duration::ZERO;
        let ie = |what: &'static str| {
            move |e: ort::Error| {
                Error::internal(format!(
                    "ONNX Runtime failed while running the {what} of {}: {e}",
                    bundle.name()
                ))
            }
        };

        // Prompts → text embeddings, once: [negative, prompt] (just the prompt without guidance).
        progress.update(0.0, "encoding the prompt");
        let prompts: Vec<&str> =
            if guided { vec![negative.as_str(), prompt.as_str()] } else { vec![prompt.as_str()] };
        let t_run = Instant::now();
        let (ehs, added) = encode_prompts(
            &mut text_encoder,
            bundle.name(),
            prompter,
            model,
            text,
            &prompts,
            guided && negative.is_empty(),
            progress,
        )?;
        // sdxl: the pooled embeddings and the size conditioning, one row per batch entry.
        let added = added.map(|pooled| {
            let ids = crate::sdxl::time_ids(ww, wh);
            let time = Array2::from_shape_fn((shape.batch, ids.len()), |(_, k)| ids[k]);
            (pooled, time)
        });

        // The crop at working size, in the model's [-1, 1], with the subject placed.
        let crop = imageops::read_rgb(scene, plan.crop);
        let (cw, ch) = (plan.crop.w as usize, plan.crop.h as usize);
        let mut mcrop = Vec::with_capacity(cw * ch);
        for y in plan.crop.y..plan.crop.bottom() {
            for x in plan.crop.x..plan.crop.right() {
                mcrop.push(f32::from(selection.get_pixel(x, y).0[0]) / 255.0);
            }
        }
        let sel = imageops::resize_plane(&mcrop, cw, ch, ww, wh);
        let mut composite: Vec<f32> =
            imageops::resize(&crop, ww, wh).data.iter().map(|v| v * 2.0 - 1.0).collect();
        let mut grain = None;
        if let Some(subject) = &bundle.subject {
            let mut placed = vec![0.0f32; ww * wh];
            let at = plan.to_work(composite::place::subject_box(
                selection,
                bbox,
                plan.crop,
                opts.placement.anchor,
            ));
            composite::place::paste_subject(
                subject,
                at,
                &opts.placement,
                ww,
                wh,
                &sel,
                &mut composite,
                &mut placed,
            );
            let mut planes = Planes { c: 3, w: ww, h: wh, data: composite };
            let look = opts.look;
            let short = at.2.min(at.3) as f32;
            let around = composite::surroundings(&placed, ww, wh, composite::reach(short));
            composite::light::harmonize(&mut planes, &placed, &around, look.harmonize);
            if look.shadow > 0.0 {
                // Cast before encoding, so that the model redraws it with the
                // ground's texture (the pixel path, which keeps more of the
                // scene, casts it on the result).
                let cover = composite::shadow::coverage(&placed, ww, wh);
                let shade = composite::shadow::shade(&cover, &sel, look.shadow);
                planes.data.iter_mut().for_each(|v| *v = (*v + 1.0) * 0.5);
                composite::darken(&mut planes, &shade);
                planes.data.iter_mut().for_each(|v| *v = *v * 2.0 - 1.0);
            }
            composite = planes.data;
            if look.grain {
                grain = GrainAt::new(&crop, &placed, (ww, wh), (cw, ch), short * cw as f32 / ww as f32);
            }
        }
        // The mask at latent resolution: every cell the selection touches, grown by one cell.
        let lmask = latent_mask(&sel, ww, wh, vsf);
        let inpainting = shape.cond_channels() > 0;

        progress.update(0.0, "encoding the image");
        let image = Planes { c: 3, w: ww, h: wh, data: composite }.into_array();
        let image_batch: Array4<f32> = if inpainting {
            // diffusers: the masked image is the image with the region to generate set to 0.
            let mut masked = image.clone();
            for ((_, y, x), v) in masked.indexed_iter_mut() {
                if lmask[[y / vsf, x / vsf]] > 0.5 {
                    *v = 0.0;
                }
            }
            ndarray::stack(Axis(0), &[image.view(), masked.view()])
                .map_err(|e| Error::internal(format!("the masked image: {e}")))?
        } else {
            image.insert_axis(Axis(0))
        };
        let nb = image_batch.len_of(Axis(0));
        let latents: Array4<f32> = {
            let out = vae_encoder
                .run(ort::inputs!["image" => TensorRef::from_array_view(&image_batch).map_err(ie("VAE encoder"))?])
                .map_err(ie("VAE encoder"))?;
            let v = out["latent"].try_extract_array::<f32>().map_err(ie("VAE encoder"))?;
            runtime::shaped::<Ix4>(v, &[nb, lc, lh, lw])
                .map_err(|s| {
                    Error::internal(format!(
                        "the VAE encoder of {} returned shape {s:?}, expected [{nb}, {lc}, {lh}, {lw}]",
                        bundle.name()
                    ))
                })?
                .to_owned()
        };
        ort_time += t_run.elapsed();
        let known = latents.slice(s![0..1, .., .., ..]).to_owned();
        let lmask =
            lmask.into_shape_with_order((1, 1, lh, lw)).map_err(|e| Error::internal(e.to_string()))?;
        // Inpainting UNet: concat(latents, mask, masked-image latents), nothing re-imposed.
        let (keep, cond): (Array4<f32>, Option<Array4<f32>>) = if inpainting {
            let cond = ndarray::concatenate(Axis(1), &[lmask.view(), latents.slice(s![1..2, .., .., ..])])
                .map_err(|e| Error::internal(format!("the inpainting channels: {e}")))?;
            (Array4::zeros((1, 1, lh, lw)), Some(cond))
        } else {
            (lmask.mapv(|m| 1.0 - m), None)
        };

        let schedule = &m.schedule;
        let sched = NoiseSchedule::from_manifest(schedule);
        let eta = if opts.sampler == Sampler::Ddpm { 1.0 } else { 0.0 };
        let steps = sched.plan(
            opts.scheduler,
            Prediction::from_manifest(schedule),
            opts.steps,
            opts.strength,
            Timing::from_manifest(schedule),
            eta,
        );

        let lp = Loop::new(&unet, dev, &shape, &ehs, added, &known, &keep, cond, cuda_graph)
            .map_err(ie("UNet"))?;
        let write = region::blend_mask(selection, bbox, region::FEATHER_DIV);
        Ok(Prepared {
            crop: plan.crop,
            work_w: ww,
            work_h: wh,
            steps: steps.steps.len(),
            device: dev,
            note,
            // sd pastes at its working scale, which the VAE then decodes:
            // the cut-out's own resolution is not what limits its sharpness.
            enlarged: None,
            precision: None,
            session: session_time,
            write,
            sampler: Box::new(Sampling {
                bundle,
                unet,
                step_session,
                vae_decoder,
                lp,
                steps,
                known,
                guidance: opts.guidance,
                dev,
                latent: [lc, lh, lw],
                work: (ww, wh),
                crop: (cw, ch),
                ort_time,
                grain,
            }),
        })
    }
}

/// The variants' shared state: the sessions, the loop's device tensors and
/// the encoded image.
struct Sampling<'a> {
    bundle: &'a Bundle,
    unet: Session,
    step_session: Session,
    vae_decoder: Session,
    lp: Loop,
    steps: StepPlan,
    /// The encoded image, `[1, lc, h, w]`.
    known: Array4<f32>,
    guidance: f32,
    dev: Device,
    /// Latent channels, height and width.
    latent: [usize; 3],
    /// The working and the crop's size.
    work: (usize, usize),
    crop: (usize, usize),
    /// Time in ONNX Runtime encoding the prompt and the image, counted in every variant.
    ort_time: Duration,
    grain: Option<GrainAt>,
}

/// The photo's grain around the placed subject and where it goes, at the
/// crop's resolution: the VAE's decoding is smoother than the photo, so the
/// subject gets the photo's grain back on every result.
struct GrainAt {
    scene: f32,
    place: Vec<f32>,
    depth: Vec<f32>,
}

impl GrainAt {
    fn new(
        crop: &Planes,
        placed: &[f32],
        work: (usize, usize),
        size: (usize, usize),
        short: f32,
    ) -> Option<Self> {
        let (cw, ch) = size;
        let place = imageops::resize_plane(placed, work.0, work.1, cw, ch);
        let around = composite::surroundings(&place, cw, ch, composite::reach(short));
        let photo = Planes { c: 3, w: cw, h: ch, data: crop.data.iter().map(|v| v * 2.0 - 1.0).collect() };
        let scene = composite::grain::fine_detail(&photo, &around)?;
        let depth = imageops::distance_inside(&composite::inside(&place), cw, ch);
        Some(GrainAt { scene, place, depth })
    }

    fn apply(&self, result: &mut Planes) {
        result.data.iter_mut().for_each(|v| *v = *v * 2.0 - 1.0);
        composite::grain::add_grain(result, &self.place, &self.depth, self.scene, 0);
        result.data.iter_mut().for_each(|v| *v = (*v + 1.0) * 0.5);
    }
}

impl Variant for Sampling<'_> {
    fn sample(
        &mut self,
        seed: u64,
        runtime: &mut Duration,
        on_step: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Planes> {
        let name = self.bundle.name();
        let ie = |what: &'static str| {
            move |e: ort::Error| {
                Error::internal(format!("ONNX Runtime failed while running the {what} of {name}: {e}"))
            }
        };
        let [lc, lh, lw] = self.latent;
        let ((ww, wh), (cw, ch)) = (self.work, self.crop);
        let steps = &self.steps;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise0 = normals(&mut rng, (1, lc, lh, lw));
        let (sa, s1) = (steps.abar_start.sqrt() as f32, (1.0 - steps.abar_start).sqrt() as f32);
        let start = Zip::from(&self.known).and(&noise0).map_collect(|&k, &e| sa * k + s1 * e);
        let t_run = Instant::now();
        let x = self
            .lp
            .run(
                &mut self.unet,
                &mut self.step_session,
                steps,
                self.guidance,
                &start,
                &noise0,
                &mut rng,
                on_step,
            )
            .map_err(|e| match e {
                LoopError::Stop(e) => e,
                LoopError::Ort(e) => ie("UNet")(e),
            })?;
        // The final latents come to the host (a few kB): the decoder may sit on
        // another device than the loop (CUDA with a per-node fallback, or the CPU).
        let x = if self.dev == Device::Cuda {
            x.to(AllocationDevice::CPU, 0).map(|c| c.extract_array().to_owned()).map_err(ie("UNet"))?
        } else {
            x.extract_array().to_owned()
        };
        let decoded: Array3<f32> = {
            let out = self
                .vae_decoder
                .run(ort::inputs!["latent" => TensorRef::from_array_view(&x).map_err(ie("VAE decoder"))?])
                .map_err(ie("VAE decoder"))?;
            let v = out["image"].try_extract_array::<f32>().map_err(ie("VAE decoder"))?;
            let v = runtime::shaped::<Ix4>(v, &[1, 3, wh, ww]).map_err(|s| {
                Error::internal(format!(
                    "the VAE decoder of {name} returned shape {s:?}, expected [1, 3, {wh}, {ww}]"
                ))
            })?;
            v.index_axis(Axis(0), 0).mapv(|p| (p.clamp(-1.0, 1.0) + 1.0) * 0.5)
        };
        *runtime += t_run.elapsed() + self.ort_time;
        let mut result = imageops::resize(&Planes::from_array(decoded), cw, ch);
        if let Some(grain) = &self.grain {
            grain.apply(&mut result);
        }
        Ok(result)
    }
}

/// The prompts through the text encoder: `[B, L, D]` hidden states, and for
/// sdxl (`model.conditioning`) the pooled `[B, P]` too. `zero_first`: the
/// first prompt is an empty negative, which an sdxl bundle may ask to be
/// all zeros.
#[allow(clippy::too_many_arguments)]
fn encode_prompts(
    text_encoder: &mut Session,
    name: &str,
    prompter: &super::text::Prompter,
    model: &SdModel,
    text: &Text,
    prompts: &[&str],
    zero_first: bool,
    progress: &mut dyn Progress,
) -> Result<(Array3<f32>, Option<Array2<f32>>)> {
    let ie = |e: ort::Error| {
        Error::internal(format!("ONNX Runtime failed while running the text encoder of {name}: {e}"))
    };
    let (b, l, d) = (prompts.len(), prompter.max_length(), text.hidden_size as usize);
    let xl = model.conditioning.as_ref();
    let mut ids: Vec<i64> = Vec::with_capacity(b * l);
    let mut ids_2: Vec<i64> = Vec::with_capacity(b * l);
    for p in prompts {
        let (v, cut) = prompter.ids(p).map_err(Error::bad)?;
        if cut {
            progress.update(
                -1.0,
                &format!(
                    "the prompt is longer than the text encoder's {} tokens; the rest is ignored",
                    l - 2
                ),
            );
        }
        if let Some(c) = xl {
            ids_2.extend(prompter.ids_padded(p, c.pad_id_2).map_err(Error::bad)?.0);
        }
        ids.extend(v);
    }
    let as_array = |v: Vec<i64>| {
        Array2::from_shape_vec((b, l), v)
            .map_err(|e| Error::internal(format!("the prompts' token ids are not {b} x {l}: {e}")))
    };
    let ids = as_array(ids)?;
    let out = match xl {
        None => text_encoder
            .run(ort::inputs!["input_ids" => TensorRef::from_array_view(&ids).map_err(ie)?])
            .map_err(ie)?,
        Some(_) => {
            let ids_2 = as_array(ids_2)?;
            text_encoder
                .run(ort::inputs![
                    "input_ids" => TensorRef::from_array_view(&ids).map_err(ie)?,
                    "input_ids_2" => TensorRef::from_array_view(&ids_2).map_err(ie)?
                ])
                .map_err(ie)?
        }
    };
    let wrong = |what: &str, s: Vec<usize>, want: String| {
        Error::internal(format!("the text encoder of {name} returned {what} of shape {s:?}, expected {want}"))
    };
    let v = out["last_hidden_state"].try_extract_array::<f32>().map_err(ie)?;
    let mut ehs = runtime::shaped::<Ix3>(v, &[b, l, d])
        .map_err(|s| wrong("last_hidden_state", s, format!("[{b}, {l}, {d}]")))?
        .to_owned();
    let mut pooled = match xl {
        None => None,
        Some(c) => {
            let p = c.pooled_size as usize;
            let v = out["text_embeds"].try_extract_array::<f32>().map_err(ie)?;
            Some(
                runtime::shaped::<Ix2>(v, &[b, p])
                    .map_err(|s| wrong("text_embeds", s, format!("[{b}, {p}]")))?
                    .to_owned(),
            )
        }
    };
    if zero_first && xl.is_some_and(|c| c.zero_negative) {
        ehs.index_axis_mut(Axis(0), 0).fill(0.0);
        if let Some(p) = pooled.as_mut() {
            p.index_axis_mut(Axis(0), 0).fill(0.0);
        }
    }
    Ok((ehs, pooled))
}

/// Standard normal samples in row-major order (the seeded stream's order).
fn normals(rng: &mut ChaCha8Rng, shape: (usize, usize, usize, usize)) -> Array4<f32> {
    Array4::from_shape_simple_fn(shape, || rng.sample(StandardNormal))
}

/// `[h / f, w / f]`: 1 in every latent cell that any selected pixel (of the
/// `w` x `h` `sel`) falls in, dilated by one cell.
pub fn latent_mask(sel: &[f32], w: usize, h: usize, f: usize) -> Array2<f32> {
    let (lw, lh) = (w / f, h / f);
    let mut cell = Array2::from_elem((lh, lw), false);
    for y in 0..lh * f {
        for x in 0..lw * f {
            // Feathered edges below half a grey level are not the selection.
            if sel[y * w + x] > 0.5 / 255.0 {
                cell[[y / f, x / f]] = true;
            }
        }
    }
    Array2::from_shape_fn((lh, lw), |(y, x)| {
        let near = cell.slice(s![y.saturating_sub(1)..(y + 2).min(lh), x.saturating_sub(1)..(x + 2).min(lw)]);
        if near.iter().any(|&c| c) {
            1.0
        } else {
            0.0
        }
    })
}

enum LoopError {
    /// Cancelled, or the progress callback's error.
    Stop(Error),
    Ort(ort::Error),
}

impl From<ort::Error> for LoopError {
    fn from(e: ort::Error) -> Self {
        LoopError::Ort(e)
    }
}

/// The tensors of the denoising loop, allocated once on the device.
struct Loop {
    dev: Device,
    alloc: Allocator,
    shape: StepShape,
    /// The UNet's input batch, written by the step graph.
    sample: Tensor<f32>,
    noise_pred: Tensor<f32>,
    /// x and x̂0, ping-pong: step k reads [k % 2] and writes [1 − k % 2].
    x: [Tensor<f32>; 2],
    x0: [Tensor<f32>; 2],
    ehs: Tensor<f32>,
    /// sdxl: `text_embeds` `[B, P]` and `time_ids` `[B, 6]`.
    added: Option<[Tensor<f32>; 2]>,
    known: Tensor<f32>,
    keep: Tensor<f32>,
    /// Inpainting: mask and masked-image latents, [1, C − lc, h, w].
    cond: Option<Tensor<f32>>,
    cond_host: Option<Array4<f32>>,
    /// CUDA graphs replay fixed device addresses: the timestep lives on the device too.
    timestep: Option<Tensor<i64>>,
}

impl Loop {
    #[allow(clippy::too_many_arguments)]
    fn new(
        unet: &Session,
        dev: Device,
        shape: &StepShape,
        ehs: &Array3<f32>,
        added: Option<(Array2<f32>, Array2<f32>)>,
        known: &Array4<f32>,
        keep: &Array4<f32>,
        cond: Option<Array4<f32>>,
        cuda_graph: bool,
    ) -> ort::Result<Loop> {
        let alloc = if dev == Device::Cuda {
            Allocator::new(
                unet,
                MemoryInfo::new(AllocationDevice::CUDA, 0, AllocatorType::Device, MemoryType::Default)?,
            )?
        } else {
            Allocator::default()
        };
        let (b, lc, h, w) = (shape.batch, shape.latent, shape.h, shape.w);
        let zeros = |shape| upload(&alloc, dev, Array4::<f32>::zeros(shape).view());
        let lat = (1, lc, h, w);
        Ok(Loop {
            dev,
            shape: *shape,
            sample: zeros((b, shape.unet_in, h, w))?,
            noise_pred: zeros((b, lc, h, w))?,
            x: [zeros(lat)?, zeros(lat)?],
            x0: [zeros(lat)?, zeros(lat)?],
            ehs: upload(&alloc, dev, ehs.view())?,
            added: match &added {
                Some((pooled, time)) => {
                    Some([upload(&alloc, dev, pooled.view())?, upload(&alloc, dev, time.view())?])
                }
                None => None,
            },
            known: upload(&alloc, dev, known.view())?,
            keep: upload(&alloc, dev, keep.view())?,
            cond: cond.as_ref().map(|c| upload(&alloc, dev, c.view())).transpose()?,
            cond_host: cond,
            timestep: if cuda_graph { Some(Tensor::<i64>::new(&alloc, [b])?) } else { None },
            alloc,
        })
    }

    /// Runs every step of `plan` from `start`; returns x at the end (on the device).
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        unet: &mut Session,
        step_session: &mut Session,
        plan: &StepPlan,
        guidance: f32,
        start: &Array4<f32>,
        noise0: &Array4<f32>,
        rng: &mut ChaCha8Rng,
        on_step: &mut dyn FnMut(usize) -> Result<()>,
    ) -> std::result::Result<Tensor<f32>, LoopError> {
        let s = self.shape;
        let b = s.batch;
        // The first UNet input: [x ⊕ cond] for each batch entry.
        let one = match &self.cond_host {
            Some(c) => ndarray::concatenate(Axis(1), &[start.view(), c.view()])
                .map_err(|e| ort::Error::new(format!("the UNet's first input: {e}")))?,
            None => start.clone(),
        };
        let mut first = Array4::<f32>::zeros((b, s.unet_in, s.h, s.w));
        first.outer_iter_mut().for_each(|mut e| e.assign(&one.index_axis(Axis(0), 0)));
        fill(self.dev, &mut self.sample, first.view())?;
        fill(self.dev, &mut self.x[0], start.view())?;
        let noise0_t = upload(&self.alloc, self.dev, noise0.view())?;

        let mut ub = unet.create_binding()?;
        ub.bind_input("sample", &self.sample)?;
        ub.bind_input("encoder_hidden_states", &self.ehs)?;
        if let Some([pooled, time]) = &self.added {
            ub.bind_input("text_embeds", pooled)?;
            ub.bind_input("time_ids", time)?;
        }
        if let Some(t) = &self.timestep {
            ub.bind_input("timestep", t)?;
        }
        ub.bind_output("noise_pred", &mut self.noise_pred)?;
        let mut sb = [step_session.create_binding()?, step_session.create_binding()?];
        for (k, bnd) in sb.iter_mut().enumerate() {
            bnd.bind_input("noise_pred", &self.noise_pred)?;
            bnd.bind_input("x", &self.x[k])?;
            bnd.bind_input("x0_prev", &self.x0[k])?;
            bnd.bind_input("known", &self.known)?;
            bnd.bind_input("noise0", &noise0_t)?;
            bnd.bind_input("keep", &self.keep)?;
            if let Some(c) = &self.cond {
                bnd.bind_input("cond", c)?;
            }
            bnd.bind_output("x_next", &mut self.x[1 - k])?;
            bnd.bind_output("x0", &mut self.x0[1 - k])?;
            bnd.bind_output("sample", &mut self.sample)?;
        }
        let lat = (1, s.latent, s.h, s.w);
        let mut z = Array4::<f32>::zeros(lat);
        for (i, st) in plan.steps.iter().enumerate() {
            on_step(i).map_err(LoopError::Stop)?;
            let tv = Tensor::from_array(Array1::from_elem(b, st.t))?;
            match &mut self.timestep {
                Some(t) => tv.copy_into(t)?,
                None => ub.bind_input("timestep", &tv)?,
            }
            unet.run_binding(&ub)?;
            let k = i % 2;
            // Fresh noise only where the scheduler adds some (DDIM with η > 0).
            let zt = if st.s > 0.0 {
                z.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
                Tensor::from_array(z.clone())?
            } else {
                Tensor::from_array(Array4::<f32>::zeros(lat))?
            };
            let coef = Tensor::from_array(ndarray::arr1(&st.coef(guidance)))?;
            sb[k].bind_input("z", &zt)?;
            sb[k].bind_input("coef", &coef)?;
            step_session.run_binding(&sb[k])?;
        }
        on_step(plan.steps.len()).map_err(LoopError::Stop)?;
        drop(ub);
        drop(sb);
        let last = plan.steps.len() % 2;
        // Hand the result out; a fresh buffer takes its place for the next result.
        let fresh = upload(&self.alloc, self.dev, Array4::<f32>::zeros(lat).view())?;
        Ok(std::mem::replace(&mut self.x[last], fresh))
    }
}

/// Overwrites a tensor's contents in place (its address stays, as CUDA graphs
/// need) with `data`, of the tensor's shape.
fn fill<D: Dimension + 'static>(
    dev: Device,
    t: &mut Tensor<f32>,
    data: ArrayView<'_, f32, D>,
) -> ort::Result<()> {
    if t.shape().iter().map(|&d| d as usize).ne(data.shape().iter().copied()) {
        return Err(ort::Error::new(format!(
            "a loop tensor of shape {:?} was given data of shape {:?}",
            t.shape(),
            data.shape()
        )));
    }
    if dev == Device::Cuda {
        Tensor::from_array(data.to_owned())?.copy_into(t)
    } else {
        t.extract_array_mut().iter_mut().zip(data.iter()).for_each(|(v, d)| *v = *d);
        Ok(())
    }
}

/// A tensor on `dev` holding `data`, allocated by ONNX Runtime (only such
/// tensors can be bound to outputs).
fn upload<D: Dimension + 'static>(
    alloc: &Allocator,
    dev: Device,
    data: ArrayView<'_, f32, D>,
) -> ort::Result<Tensor<f32>> {
    let mut t = Tensor::<f32>::new(alloc, data.shape().to_vec())?;
    fill(dev, &mut t, data)?;
    Ok(t)
}
