//! The backbones this pie runs, listed once. The rest of the engine, the
//! command line and the plug-in reach a backbone only through what is here:
//! [`Backbone`] (its name in bundle.json), [`Model`] and [`Graphs`] (its
//! branches of bundle.json) and [`BackboneParts`] (what its bundles load
//! beyond the manifest). What each one does sits behind [`Engine`], in its
//! own module; a new backbone is that module and one variant in each enum here.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::add::Engine;
use crate::manifest::{Graph, Manifest, PixelGraphs, PixelModel, SdGraphs, SdModel, Text};
use crate::{Error, Result};

/// A backbone, by its name in bundle.json (`backbone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Backbone {
    /// What a concept is learned with unless asked otherwise.
    #[default]
    #[serde(rename = "pixel-unet")]
    PixelUnet,
    #[serde(rename = "sd")]
    Sd,
    #[serde(rename = "sdxl")]
    Sdxl,
}

impl Backbone {
    pub const ALL: [Backbone; 3] = [Backbone::PixelUnet, Backbone::Sd, Backbone::Sdxl];

    /// Its name in bundle.json, on the command line and to the trainer.
    pub fn name(self) -> &'static str {
        match self {
            Backbone::PixelUnet => "pixel-unet",
            Backbone::Sd => "sd",
            Backbone::Sdxl => "sdxl",
        }
    }

    /// The module that runs it.
    pub(crate) fn engine(self) -> &'static dyn Engine {
        match self {
            Backbone::PixelUnet => &crate::pixel::PixelUnet,
            Backbone::Sd => &crate::sd::pipeline::Sd,
            Backbone::Sdxl => &crate::sdxl::Sdxl,
        }
    }

    /// How a front end presents it to someone choosing one.
    pub fn about(self) -> About {
        self.engine().about()
    }

    /// Whether learning it fine-tunes a pretrained checkpoint, with a class
    /// word for the concept (the trainer's `--base`, `--class-word`,
    /// `--lora-rank`, `--train-text-encoder`, `--export-precision`).
    pub fn fine_tunes_a_base(self) -> bool {
        self.engine().fine_tunes_a_base()
    }

    /// The names of those backbones `which` holds for, joined with `sep`.
    pub fn names_where(which: impl Fn(Backbone) -> bool, sep: &str) -> String {
        Backbone::ALL.into_iter().filter(|b| which(*b)).map(Backbone::name).collect::<Vec<_>>().join(sep)
    }

    /// Reads its branches of bundle.json, `model` and `graphs`.
    pub(crate) fn parse_branch(
        self,
        model: serde_json::Value,
        graphs: serde_json::Value,
        text: Option<&Text>,
    ) -> std::result::Result<(Model, Graphs), String> {
        fn read<T: serde::de::DeserializeOwned>(
            key: &str,
            v: serde_json::Value,
        ) -> std::result::Result<T, String> {
            serde_json::from_value(v).map_err(|e| format!("{key}: {e}"))
        }
        self.engine().check_text(text)?;
        Ok(match self {
            Backbone::PixelUnet => {
                (Model::Pixel(read("model", model)?), Graphs::Pixel(read("graphs", graphs)?))
            }
            // sdxl's branch is sd's with the added conditioning (schema/README.md).
            Backbone::Sd | Backbone::Sdxl => {
                (Model::Sd(read("model", model)?), Graphs::Sd(read("graphs", graphs)?))
            }
        })
    }
}

impl std::str::FromStr for Backbone {
    type Err = Error;
    fn from_str(s: &str) -> Result<Backbone> {
        Backbone::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            Error::bad(format!("unknown backbone {s:?}: use {}", Backbone::names_where(|_| true, " or ")))
        })
    }
}

impl std::fmt::Display for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A backbone as a dialog or a listing shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct About {
    /// What it is called where its name would be too terse ("Stable Diffusion").
    pub title: &'static str,
    /// Its entry in a list of backbones to choose from.
    pub label: &'static str,
    /// That entry's explanation.
    pub help: &'static str,
}

/// `model`, by backbone.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Model {
    Pixel(PixelModel),
    Sd(SdModel),
}

impl Model {
    /// The native image side in pixels.
    pub fn resolution(&self) -> u32 {
        match self {
            Model::Pixel(m) => m.resolution,
            Model::Sd(m) => m.resolution,
        }
    }
}

/// `graphs`, by backbone.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // one per bundle
pub enum Graphs {
    Pixel(PixelGraphs),
    Sd(SdGraphs),
}

impl Graphs {
    /// Every graph, with its key in `graphs`.
    pub fn all(&self) -> Vec<(&'static str, &Graph)> {
        match self {
            Graphs::Pixel(g) => {
                let mut v = vec![("denoiser", &g.denoiser)];
                v.extend(g.denoiser_int8.as_ref().map(|q| ("denoiser_int8", &q.graph)));
                v
            }
            Graphs::Sd(g) => vec![
                ("text_encoder", &g.text_encoder),
                ("unet", &g.unet),
                ("vae_encoder", &g.vae_encoder),
                ("vae_decoder", &g.vae_decoder),
            ],
        }
    }
}

/// What a bundle's backbone loaded and checked beyond the common core.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per bundle
pub enum BackboneParts {
    Pixel(crate::pixel::PixelBundle),
    Sd(crate::sd::SdBundle),
}

/// A fault in one file of a bundle: the file, and what is wrong with it.
pub(crate) type Fault = (String, String);

impl BackboneParts {
    /// Loads what `m`'s backbone needs from `dir`, after the manifest and
    /// every file's sha256 have been checked.
    pub(crate) fn load(dir: &Path, m: &Manifest) -> std::result::Result<BackboneParts, Fault> {
        m.backbone.engine().load(dir, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_disk_parse_back_and_strangers_are_named_with_what_is_accepted() {
        for b in Backbone::ALL {
            let on_disk = serde_json::to_value(b).unwrap();
            assert_eq!(on_disk, serde_json::Value::from(b.name()));
            assert_eq!(serde_json::from_value::<Backbone>(on_disk).unwrap(), b);
            assert_eq!(b.name().parse::<Backbone>().unwrap(), b);
        }
        let e = "sd3".parse::<Backbone>().unwrap_err().to_string();
        assert!(e.contains("\"sd3\"") && e.contains("pixel-unet or sd or sdxl"), "{e}");
        let e = serde_json::from_str::<Backbone>("\"sd3\"").unwrap_err().to_string();
        assert!(e.contains("sd3") && e.contains("pixel-unet") && e.contains("sdxl"), "{e}");
    }
}
