//! One Add (or Blend) request: everything it needs besides the images, as
//! the user gave it (`None`: left to the concept). The command line and the
//! plug-in only translate their inputs into it; [`AddRequest::resolve`]
//! fills in the concept's defaults and refuses what its backbone does not
//! read, in one place for both.

use crate::add::{backbone_of, Engine};
use crate::backbone::Backbone;
use crate::bundle::Bundle;
use crate::composite::{Look, Placement};
use crate::runtime::{self, Device};
use crate::schedule::{Sampler, Scheduler};
use crate::{Error, Opt, Result};

#[derive(Debug, Clone)]
pub struct AddRequest {
    pub seed: u64,
    /// Denoiser steps over the whole schedule; `steps × strength` of them run.
    pub steps: Option<usize>,
    /// How much is re-synthesized where the model is free, (0, 1]: 1 starts
    /// from noise.
    pub strength: Option<f32>,
    /// Classifier-free guidance scale; 1 = none.
    pub guidance: Option<f32>,
    /// Results from seeds `seed`, `seed+1`, …
    pub variants: usize,
    pub device: Device,
    pub sampler: Sampler,
    pub scheduler: Option<Scheduler>,
    /// ONNX Runtime threads; `None` = all cores but one.
    pub threads: Option<usize>,
    /// 0 to 1: how much full-resolution detail is put back when the model
    /// works below 1:1 (large photos).
    pub detail: Option<f32>,
    /// Where the subject goes in the selection (Add; Blend takes the user's place).
    pub placement: Placement,
    /// How far it takes on the scene's light, grain and shadow.
    pub look: Look,
    /// Replaces the concept's prompt; `{subject}` and `{scene}` become the
    /// concepts' identifier and class word (e.g. "qbz dog").
    pub prompt: Option<String>,
    /// Replaces the concept's negative prompt.
    pub negative_prompt: Option<String>,
    /// CUDA only: capture the denoiser in a CUDA graph and replay it each
    /// step. `None`: wherever it runs on CUDA, unless ONNX Runtime cannot
    /// capture it (then without, and the progress says why).
    pub cuda_graph: Option<bool>,
}

impl Default for AddRequest {
    fn default() -> Self {
        AddRequest {
            seed: 0,
            steps: None,
            strength: None,
            guidance: None,
            variants: 1,
            device: Device::Auto,
            sampler: Sampler::Ddim,
            scheduler: None,
            threads: None,
            detail: None,
            placement: Placement::default(),
            look: Look::default(),
            prompt: None,
            negative_prompt: None,
            cuda_graph: None,
        }
    }
}

/// What a backbone uses for the options a request leaves out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    pub steps: usize,
    pub strength: f32,
    pub guidance: f32,
    pub detail: f32,
}

/// What an Add runs with: the request with every default filled in for the
/// concept's backbone, every value checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub steps: usize,
    pub strength: f32,
    pub guidance: f32,
    pub variants: usize,
    pub device: Device,
    pub sampler: Sampler,
    pub scheduler: Scheduler,
    pub threads: Option<usize>,
    pub detail: f32,
    pub placement: Placement,
    pub look: Look,
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub cuda_graph: Option<bool>,
}

impl AddRequest {
    /// The options that were given, with their values as the user wrote them.
    fn given(&self) -> Vec<(Opt, String)> {
        let mut v = Vec::new();
        if let Some(d) = self.detail {
            v.push((Opt::Detail, d.to_string()));
        }
        if let Some(p) = &self.prompt {
            v.push((Opt::Prompt, format!("{p:?}")));
        }
        if let Some(p) = &self.negative_prompt {
            v.push((Opt::NegativePrompt, format!("{p:?}")));
        }
        // Asking for none where there is none is no conflict.
        if self.cuda_graph == Some(true) {
            v.push((Opt::CudaGraph, String::new()));
        }
        v
    }

    /// The settings for `bundle`: its backbone's defaults where the request
    /// gives nothing; an error for a value out of range or an option the
    /// backbone does not read.
    pub fn resolve(&self, bundle: &Bundle) -> Result<Settings> {
        let backbone = backbone_of(bundle);
        let refuse =
            |option: Opt, value: String, reads: &dyn Fn(&dyn Engine) -> bool| Error::NotForBackbone {
                option,
                value,
                concept: bundle.name().to_string(),
                backbone: bundle.manifest.backbone.name(),
                lacks: backbone.lacks(),
                readers: Backbone::ALL
                    .into_iter()
                    .filter(|b| reads(b.engine()))
                    .map(Backbone::name)
                    .collect(),
            };
        if let Some((option, value)) = self.given().into_iter().find(|(o, _)| !backbone.reads(*o)) {
            return Err(refuse(option, value, &|b| b.reads(option)));
        }
        let scheduler = self.scheduler.unwrap_or_default();
        if !scheduler.supported_by(bundle.manifest.backbone) {
            return Err(refuse(Opt::Scheduler, scheduler.to_string(), &|b| {
                b.schedulers().contains(&scheduler)
            }));
        }
        let d = backbone.defaults();
        let s = Settings {
            seed: self.seed,
            steps: self.steps.unwrap_or(d.steps),
            strength: self.strength.unwrap_or(d.strength),
            guidance: self.guidance.unwrap_or(d.guidance),
            variants: self.variants,
            device: self.device,
            sampler: self.sampler,
            scheduler,
            threads: self.threads,
            detail: self.detail.unwrap_or(d.detail),
            placement: self.placement,
            look: self.look,
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            cuda_graph: self.cuda_graph,
        };
        s.check()?;
        Ok(s)
    }
}

impl Settings {
    /// The ranges every backbone shares.
    fn check(&self) -> Result<()> {
        if !(1..=1000).contains(&self.steps) {
            return Err(Error::out_of_range(Opt::Steps, self.steps, "1 to 1000"));
        }
        if !(self.strength > 0.0 && self.strength <= 1.0) {
            return Err(Error::out_of_range(Opt::Strength, self.strength, "above 0, at most 1"));
        }
        if !(self.guidance.is_finite() && (0.0..=30.0).contains(&self.guidance)) {
            return Err(Error::out_of_range(Opt::Guidance, self.guidance, "0 to 30"));
        }
        if !(1..=64).contains(&self.variants) {
            return Err(Error::out_of_range(Opt::Variants, self.variants, "1 to 64"));
        }
        self.placement.check()?;
        self.look.check()?;
        if !(0.0..=1.0).contains(&self.detail) {
            return Err(Error::out_of_range(Opt::Detail, self.detail, "0 to 1"));
        }
        let most = runtime::max_threads();
        if let Some(n) = self.threads {
            if n == 0 || n > most {
                let range = format!("1 to {most}: at most 4 per core on this machine");
                return Err(Error::out_of_range(Opt::Threads, n, range));
            }
        }
        if self.sampler == Sampler::Ddpm && !self.scheduler.takes_fresh_noise() {
            return Err(Error::Conflict {
                option: Opt::Sampler,
                value: String::from("ddpm"),
                why: "adds fresh noise every step, which DPM-Solver++(2M) does not",
                with: Opt::Scheduler,
                with_value: Scheduler::Ddim.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pixel-unet concept "ball" and an sd concept "dog".
    fn concepts() -> (tempfile::TempDir, Bundle, Bundle) {
        let d = tempfile::tempdir().unwrap();
        let ball = crate::testkit::Synthetic { name: "ball".into(), ..Default::default() };
        crate::testkit::write_bundle(d.path(), &ball).unwrap();
        let dog = crate::sd::testkit::SyntheticSd { name: "dog".into(), ..Default::default() };
        crate::sd::testkit::write_sd_bundle(d.path(), &dog).unwrap();
        let lib = crate::Library::open(Some(d.path().to_path_buf())).unwrap();
        let (ball, dog) = (lib.load("ball").unwrap(), lib.load("dog").unwrap());
        (d, ball, dog)
    }

    fn refused(r: &AddRequest, b: &Bundle) -> (Opt, Vec<&'static str>) {
        match r.resolve(b) {
            Err(Error::NotForBackbone { option, readers, .. }) => (option, readers),
            other => panic!("expected NotForBackbone, got {other:?}"),
        }
    }

    #[test]
    fn what_is_left_out_is_the_concepts_own_and_what_is_given_is_kept() {
        let (_d, ball, dog) = concepts();
        let none = AddRequest::default();
        let (b, s) = (none.resolve(&ball).unwrap(), none.resolve(&dog).unwrap());
        assert_eq!((b.strength, b.guidance, b.detail, b.steps), (0.2, 3.0, 1.0, 50));
        assert_eq!((s.strength, s.guidance, s.scheduler), (0.7, 7.5, Scheduler::Ddim));
        let given = AddRequest { strength: Some(0.4), guidance: Some(1.0), steps: Some(7), ..none };
        for c in [&ball, &dog] {
            let r = given.resolve(c).unwrap();
            assert_eq!((r.strength, r.guidance, r.steps), (0.4, 1.0, 7));
        }
    }

    #[test]
    fn an_option_the_backbone_does_not_read_is_refused_the_same_way_for_both() {
        let (_d, ball, dog) = concepts();
        let prompt = AddRequest { prompt: Some("a photo".into()), ..Default::default() };
        assert_eq!(refused(&prompt, &ball), (Opt::Prompt, vec!["sd", "sdxl"]));
        assert!(prompt.resolve(&dog).is_ok());
        let graph = AddRequest { cuda_graph: Some(true), ..Default::default() };
        assert_eq!(refused(&graph, &ball).0, Opt::CudaGraph);
        let dpm = AddRequest { scheduler: Some(Scheduler::DpmSolver2M), ..Default::default() };
        assert_eq!(refused(&dpm, &ball), (Opt::Scheduler, vec!["sd", "sdxl"]));
        let detail = AddRequest { detail: Some(0.5), ..Default::default() };
        assert_eq!(refused(&detail, &dog), (Opt::Detail, vec!["pixel-unet"]));
        assert!(detail.resolve(&ball).is_ok());
        let e = prompt.resolve(&ball).unwrap_err().to_string();
        assert!(e.contains("--prompt") && e.contains("\"ball\" is a pixel-unet concept"), "{e}");
    }

    #[test]
    fn fresh_noise_with_a_multistep_scheduler_and_too_many_threads_are_refused() {
        let (_d, _ball, dog) = concepts();
        let r = AddRequest {
            sampler: Sampler::Ddpm,
            scheduler: Some(Scheduler::DpmSolver2M),
            ..Default::default()
        };
        assert!(
            matches!(
                r.resolve(&dog),
                Err(Error::Conflict { option: Opt::Sampler, with: Opt::Scheduler, .. })
            ),
            "{:?}",
            r.resolve(&dog)
        );
        let most = runtime::max_threads();
        let r = AddRequest { threads: Some(most + 1), ..Default::default() };
        let e = r.resolve(&dog).unwrap_err();
        assert!(matches!(e, Error::OutOfRange { option: Opt::Threads, .. }), "{e:?}");
        assert!(e.to_string().contains(&format!("1 to {most}")), "{e}");
        assert!(AddRequest { threads: Some(most), ..Default::default() }.resolve(&dog).is_ok());
    }
}
