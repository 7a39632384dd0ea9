//! The `sdxl` backbone: a fine-tuned Stable Diffusion XL checkpoint. Its
//! bundle is an sd bundle whose text graph runs both text encoders and whose
//! UNet takes the added conditioning, pooled text embeddings and size ids
//! (schema/README.md, "Backbone sdxl"). Sampling is sd's
//! ([`crate::sd::pipeline`]), which feeds that conditioning where the model
//! declares it; what differs is checked and described here.

use crate::add::{Engine, Job, Prepared};
use crate::backbone::{About, BackboneParts, Fault};
use crate::bundle::Bundle;
use crate::manifest::{Conditioning, Manifest, Model, Text};
use crate::request::Defaults;
use crate::schedule::Scheduler;
use crate::sd::pipeline::{self, Sd};
use crate::{Opt, Progress, Result};

/// What the UNet's `time_ids` hold, in order, as `model.conditioning.time_ids` names them.
pub const TIME_IDS: [&str; 6] =
    ["original_height", "original_width", "crop_top", "crop_left", "target_height", "target_width"];

/// `time_ids` for an image generated at `w` x `h`: the working size is both
/// the original and the target size, uncropped (as diffusers' pipelines
/// pass them, and as the trainer trains).
pub(crate) fn time_ids(w: usize, h: usize) -> [f32; 6] {
    let (w, h) = (w as f32, h as f32);
    [h, w, 0.0, 0.0, h, w]
}

fn check_conditioning(c: &Conditioning) -> std::result::Result<(), String> {
    if c.time_ids.iter().map(String::as_str).ne(TIME_IDS) {
        return Err(format!(
            "model.conditioning.time_ids are {:?}; this pie knows only {TIME_IDS:?}",
            c.time_ids
        ));
    }
    if !(1..=16384).contains(&c.pooled_size) {
        return Err(format!("model.conditioning.pooled_size {} is out of range", c.pooled_size));
    }
    if c.pad_id_2 < 0 {
        return Err(format!("model.conditioning.pad_id_2 {} is negative", c.pad_id_2));
    }
    Ok(())
}

/// The backbone named `sdxl` in bundle.json.
pub(crate) struct Sdxl;

impl Engine for Sdxl {
    fn lacks(&self) -> &'static str {
        Sd.lacks()
    }

    fn reads(&self, opt: Opt) -> bool {
        Sd.reads(opt)
    }

    fn schedulers(&self) -> &'static [Scheduler] {
        Sd.schedulers()
    }

    fn defaults(&self) -> Defaults {
        Sd.defaults()
    }

    fn blends(&self) -> bool {
        Sd.blends()
    }

    fn about(&self) -> About {
        About {
            title: "Stable Diffusion XL",
            label: "Stable Diffusion XL (GPU)",
            help: "Fine-tunes a local Stable Diffusion XL checkpoint (a diffusers folder) at 1024 px; wants an NVIDIA GPU with 16 GB or more",
        }
    }

    fn fine_tunes_a_base(&self) -> bool {
        true
    }

    fn check_text(&self, text: Option<&Text>) -> std::result::Result<(), String> {
        match text {
            Some(_) => Ok(()),
            None => Err("an sdxl bundle needs a text section (tokenizer, max_length, prompts)".into()),
        }
    }

    fn check_model(&self, m: &Manifest) -> std::result::Result<(), String> {
        let Model::Sd(md) = &m.model else {
            return Err("graphs and model are of different backbones".into());
        };
        let c = md.conditioning.as_ref().ok_or(
            "an sdxl bundle needs model.conditioning (pooled_size, time_ids, pad_id_2, zero_negative)",
        )?;
        check_conditioning(c)?;
        if md.unet_in_channels != md.latent_channels {
            return Err(format!(
                "model.unet_in_channels {}: pie has no sdxl inpainting UNet (it needs {})",
                md.unet_in_channels, md.latent_channels
            ));
        }
        pipeline::check_model_and_schedule(m, md)
    }

    fn check_graphs(&self, m: &Manifest) -> std::result::Result<(), String> {
        Sd.check_graphs(m)
    }

    fn load(&self, dir: &std::path::Path, m: &Manifest) -> std::result::Result<BackboneParts, Fault> {
        Sd.load(dir, m)
    }

    fn describe(&self, bundle: &Bundle) -> Vec<String> {
        let mut lines = Sd.describe(bundle);
        if let Model::Sd(md) = &bundle.manifest.model {
            if let Some(c) = &md.conditioning {
                lines.push(format!(
                    "two text encoders ({} wide together), pooled embeddings {} wide, size conditioning{}",
                    bundle.manifest.text.as_ref().map_or(0, |t| t.hidden_size),
                    c.pooled_size,
                    if c.zero_negative { ", an empty negative prompt is zeros" } else { "" }
                ));
            }
        }
        lines
    }

    fn prepare<'a>(&self, job: &Job<'a>, progress: &mut dyn Progress) -> Result<Prepared<'a>> {
        Sd.prepare(job, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ids_are_height_first_and_uncropped() {
        assert_eq!(time_ids(1152, 896), [896.0, 1152.0, 0.0, 0.0, 896.0, 1152.0]);
    }

    #[test]
    fn unknown_size_conditioning_is_refused_by_name() {
        let mut c = Conditioning {
            pooled_size: 1280,
            time_ids: TIME_IDS.iter().map(|s| s.to_string()).collect(),
            pad_id_2: 0,
            zero_negative: true,
        };
        assert!(check_conditioning(&c).is_ok());
        c.time_ids.push("aesthetic_score".into());
        let e = check_conditioning(&c).unwrap_err();
        assert!(e.contains("aesthetic_score") && e.contains("original_height"), "{e}");
    }
}
