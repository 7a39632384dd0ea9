//! The `sd` backbone: a fine-tuned Stable Diffusion checkpoint exported as
//! text encoder, UNet and VAE graphs plus its tokenizer (schema/README.md,
//! "Backbone sd"). Sampling happens in latent space around the selection;
//! the result is composited back so pixels outside the selection stay exact.

pub mod pipeline;
pub mod step;
#[doc(hidden)]
pub mod testkit;
pub mod text;

use std::collections::HashMap;
use std::sync::Arc;

use crate::manifest::{DimSpec, Graph, Manifest, Precision, Role, SdGraphs, SdModel, TensorSpec, Text};

/// What an sd bundle holds beyond the common core.
#[derive(Debug, Clone)]
pub struct SdBundle {
    pub model: SdModel,
    pub text: Text,
    /// The bundle's tokenizer, loaded, ready to encode prompts.
    pub prompter: Arc<text::Prompter>,
}

impl SdBundle {
    /// Loads the tokenizer `text` names; a fault names the file.
    pub(crate) fn load(
        dir: &std::path::Path,
        model: &SdModel,
        t: &Text,
    ) -> Result<SdBundle, (String, String)> {
        let prompter =
            text::Prompter::load(&dir.join(&t.tokenizer), t).map_err(|w| (t.tokenizer.clone(), w))?;
        Ok(SdBundle { model: model.clone(), text: t.clone(), prompter: Arc::new(prompter) })
    }
}

/// The classifier-free guidance scale the command line uses for sd bundles
/// when `--guidance` is not given (as diffusers' pipelines).
pub const DEFAULT_GUIDANCE: f32 = 7.5;

/// The strength the command line uses for sd bundles when `--strength` is
/// not given: the placed subject is a start, redrawn by the fine-tuned model
/// (the pixel path's 0.2 would keep the paste nearly as it is).
pub const DEFAULT_STRENGTH: f32 = 0.7;

/// `model` of an sd bundle: the rules the schema cannot state.
pub(crate) fn check_model(m: &SdModel) -> Result<(), String> {
    if m.channels != 3 || m.value_range != [-1, 1] {
        return Err("model.channels must be 3 and model.value_range [-1, 1]".into());
    }
    if !(1..=64).contains(&m.vae_scale_factor) || !(1..=64).contains(&m.latent_channels) {
        return Err("model.vae_scale_factor and model.latent_channels must be 1 to 64".into());
    }
    #[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; the workspace says 1.83
    let aligned = m.size_multiple % m.vae_scale_factor == 0;
    if m.size_multiple == 0 || m.size_multiple > 1024 || !aligned {
        return Err(format!(
            "model.size_multiple {} must be a multiple of model.vae_scale_factor {} (and at most 1024)",
            m.size_multiple, m.vae_scale_factor
        ));
    }
    if !(8..=8192).contains(&m.resolution) || m.min_size == 0 || m.min_size > 8192 {
        return Err("model sizes are out of range".into());
    }
    if m.unet_in_channels != m.latent_channels && m.unet_in_channels != 2 * m.latent_channels + 1 {
        return Err(format!(
            "model.unet_in_channels {} is neither latent_channels ({}) nor an inpainting UNet's 2·latent_channels+1",
            m.unet_in_channels, m.latent_channels
        ));
    }
    if !(m.scaling_factor.is_finite() && m.scaling_factor > 0.0) {
        return Err("model.scaling_factor must be a positive number".into());
    }
    if m.base.name.trim().is_empty() {
        return Err("model.base.name is empty".into());
    }
    if let Some(o) = &m.optimized {
        let mut seen = std::collections::HashSet::new();
        if o.graphs.is_empty() || !o.graphs.iter().all(|g| seen.insert(*g)) {
            return Err("model.optimized.graphs must list each rewritten graph once".into());
        }
        if m.precision != Precision::Float16 {
            return Err(format!(
                "model.optimized: {} rewrites float16 graphs only, model.precision is {}",
                o.by, m.precision
            ));
        }
    }
    Ok(())
}

/// A graph's inputs or outputs against the contract, by name: each
/// (name, dtype, fixed sizes by axis, where the contract fixes them).
fn check_io(
    graph: &str,
    what: &str,
    got: &[TensorSpec],
    want: &[(&str, &str, Vec<Option<i64>>)],
) -> Result<(), String> {
    let show = |v: &[TensorSpec]| {
        v.iter()
            .map(|t| format!("{} {} rank {}", t.name, t.dtype, t.shape.len()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let contract =
        want.iter().map(|(n, d, s)| format!("{n} {d} rank {}", s.len())).collect::<Vec<_>>().join(", ");
    let mismatch = || {
        format!("graphs.{graph}.{what} are [{}], the contract for this backbone is [{contract}]", show(got))
    };
    if got.len() != want.len() {
        return Err(mismatch());
    }
    let by_name: HashMap<&str, &TensorSpec> = got.iter().map(|t| (t.name.as_str(), t)).collect();
    for (name, dtype, dims) in want {
        let t = by_name.get(name).ok_or_else(mismatch)?;
        if t.dtype != *dtype || t.shape.len() != dims.len() {
            return Err(mismatch());
        }
        for (axis, (have, need)) in t.shape.iter().zip(dims).enumerate() {
            if let (DimSpec::Fixed(h), Some(n)) = (have, need) {
                if h != n {
                    return Err(format!("graphs.{graph}: {name} has size {h} on axis {axis}, the bundle's model and text say {n}"));
                }
            }
        }
    }
    Ok(())
}

/// Every sd graph's declared signature against the contract and the bundle's sizes.
pub(crate) fn check_graphs(g: &SdGraphs, m: &SdModel, t: &Text) -> Result<(), String> {
    let (l, d) = (Some(i64::from(t.max_length)), Some(i64::from(t.hidden_size)));
    let (c, lc) = (Some(i64::from(m.unet_in_channels)), Some(i64::from(m.latent_channels)));
    let check = |name: &str,
                 gr: &Graph,
                 ins: &[(&str, &str, Vec<Option<i64>>)],
                 outs: &[(&str, &str, Vec<Option<i64>>)]| {
        check_io(name, "inputs", &gr.inputs, ins)?;
        check_io(name, "outputs", &gr.outputs, outs)
    };
    let mut text_in = vec![("input_ids", "int64", vec![None, l])];
    let mut text_out = vec![("last_hidden_state", "float32", vec![None, l, d])];
    let mut unet_in = vec![
        ("sample", "float32", vec![None, c, None, None]),
        ("timestep", "int64", vec![None]),
        ("encoder_hidden_states", "float32", vec![None, l, d]),
    ];
    // sdxl: the second encoder's ids and pooled output, and the UNet's added conditioning.
    if let Some(xl) = &m.conditioning {
        let p = Some(i64::from(xl.pooled_size));
        text_in.push(("input_ids_2", "int64", vec![None, l]));
        text_out.push(("text_embeds", "float32", vec![None, p]));
        unet_in.push(("text_embeds", "float32", vec![None, p]));
        unet_in.push(("time_ids", "float32", vec![None, Some(crate::sdxl::TIME_IDS.len() as i64)]));
    }
    check("text_encoder", &g.text_encoder, &text_in, &text_out)?;
    check("unet", &g.unet, &unet_in, &[("noise_pred", "float32", vec![None, lc, None, None])])?;
    check(
        "vae_encoder",
        &g.vae_encoder,
        &[("image", "float32", vec![None, Some(3), None, None])],
        &[("latent", "float32", vec![None, lc, None, None])],
    )?;
    check(
        "vae_decoder",
        &g.vae_decoder,
        &[("latent", "float32", vec![None, lc, None, None])],
        &[("image", "float32", vec![None, Some(3), None, None])],
    )?;
    Ok(())
}

/// The prompt for Add: `--prompt` with its placeholders filled, else the bundle's.
pub fn add_prompt(m: &Manifest, text: &Text, template: Option<&str>) -> crate::Result<String> {
    let Some(tpl) = template else { return Ok(text.prompts.add.clone()) };
    let phrase = |role: Role| {
        m.tokens.concepts.iter().find(|c| c.role == role).map(|c| match &c.class_word {
            Some(w) => format!("{} {w}", c.identifier),
            None => c.identifier.clone(),
        })
    };
    let mut out = String::new();
    let mut rest = tpl;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| {
            crate::Error::bad(format!(
                "the prompt {tpl:?}: a '{{' is not closed (placeholders are {{subject}} and {{scene}})"
            ))
        })?;
        let key = &after[..close];
        let value = match key {
            "subject" => phrase(Role::Subject).ok_or_else(|| {
                crate::Error::bad(format!(
                    "the prompt uses {{subject}}, but {:?} is a scene concept (it has no subject)",
                    m.name
                ))
            })?,
            "scene" => phrase(Role::Scene).ok_or_else(|| {
                crate::Error::bad(format!("the prompt uses {{scene}}, but {:?} has no scene concept", m.name))
            })?,
            other => {
                return Err(crate::Error::bad(format!(
                    "the prompt {tpl:?}: unknown placeholder {{{other}}} (use {{subject}} and {{scene}})"
                )))
            }
        };
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    if out.trim().is_empty() {
        return Err(crate::Error::bad("the prompt is empty"));
    }
    Ok(out)
}
