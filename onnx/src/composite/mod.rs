//! Making a placed subject look photographed in the scene rather than
//! pasted: where it goes ([`place`]), the scene's light and colour on it
//! ([`light`]), the scene's grain and sharpness ([`grain`]) and the shadow it
//! casts ([`shadow`]). Everything here works on the crop around the
//! selection at the photo's own resolution, in the model's [-1, 1], before
//! the model redraws the seam; the backbones share it.

pub mod grain;
pub mod light;
pub mod place;
pub mod region;
pub mod shadow;

pub use place::{Anchor, Placement};

use crate::{Error, Opt, Result};

/// How far the subject is adapted to the scene.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Look {
    /// 0 to 1: how much of the difference between the subject's light
    /// (white balance, exposure, contrast) and the scene's around it is taken away.
    pub harmonize: f32,
    /// 0 to 1: how dark the contact shadow under the subject is (0 = none).
    /// The default, 0.7, gives the pairs of tests/eval about the ground's
    /// darkening under objects in real photographs (`look.py --shadows`:
    /// 0.46 to 0.59 of its light at 0.03 to 0.08 of the subject's height
    /// below it, against the photos' 0.45 to 0.55; 0.5 gave 0.59 to 0.70).
    pub shadow: f32,
    /// Match the subject's grain and sharpness to the scene's around it.
    pub grain: bool,
}

impl Default for Look {
    fn default() -> Self {
        Look { harmonize: 0.5, shadow: 0.7, grain: true }
    }
}

impl Look {
    pub(crate) fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.harmonize) {
            return Err(Error::out_of_range(Opt::Harmonize, self.harmonize, "0 to 1"));
        }
        if !(0.0..=1.0).contains(&self.shadow) {
            return Err(Error::out_of_range(Opt::Shadow, self.shadow, "0 to 1"));
        }
        Ok(())
    }
}

/// Pixels of `place` (coverage, [0, 1]) that are the subject's own.
pub(crate) fn inside(place: &[f32]) -> Vec<bool> {
    place.iter().map(|&m| m >= 0.5).collect()
}

/// The scene around the subject, [0, 1] weights: pixels outside its
/// footprint within `reach` pixels of it (and inside the crop).
pub(crate) fn surroundings(place: &[f32], w: usize, h: usize, reach: f32) -> Vec<f32> {
    let outside: Vec<bool> = place.iter().map(|&m| m <= 0.02).collect();
    let d = crate::imageops::distance_inside(&outside, w, h);
    d.iter().map(|&d| if d > 0.0 && d <= reach { 1.0 } else { 0.0 }).collect()
}

/// How far around the subject its surroundings are read (light, grain), for a
/// selection whose short side is `short` pixels.
pub(crate) fn reach(short: f32) -> f32 {
    (0.25 * short).max(4.0)
}

/// Darkens `planes` ([0, 1]) by `shade` (0 = untouched, 1 = black), multiplied
/// so that the ground keeps its texture in the shadow.
pub(crate) fn darken(planes: &mut crate::imageops::Planes, shade: &[f32]) {
    let n = shade.len();
    for c in 0..planes.c {
        planes.data[c * n..(c + 1) * n].iter_mut().zip(shade).for_each(|(v, k)| *v *= 1.0 - k);
    }
}
