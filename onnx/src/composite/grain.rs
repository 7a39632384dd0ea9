//! The scene's grain and sharpness on the subject.
//!
//! Both show in the finest detail: Immerkaer's noise operator, the
//! difference of two 3x3 Laplacians, which cancels any locally planar signal
//! (so gentle shading and much of a photo's texture), leaves mostly noise.
//! Its robust spread (the median absolute value, which the few real edges
//! barely move) measures sensor noise and film grain, and a soft photo has
//! little of it. A subject with less than the scene around it gets seeded
//! grain to make up the difference; one with more is kept.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use rand_distr::StandardNormal;

use crate::imageops::Planes;

/// What [`fine_detail`] reads of white noise of spread 1: the operator (scaled
/// by 1/6) keeps all of it, but the flattest tiles' medians lie below the
/// typical one (0.70 at the 5 % quantile of 8x8 tiles, simulated over 24 000
/// tiles of white noise). The 3x3 box residual used before read texture as
/// grain: on the pairs' scenes an independent estimate (tests/eval/look.py)
/// found the subject given 1.3 to 1.6 times the scene's grain.
const NOISE_READ: f32 = 0.70;

/// A difference under this fraction is left alone: the goal is the scene's
/// grain within 20 %. The measure cannot tell grain from a subject's own fine
/// texture (fur, print), so a subject from the same kind of photo is left as
/// it is; a clean studio cut-out in a grainy photo is far outside it.
const TOLERANCE: f32 = 0.2;

/// Luminance of the planes ([-1, 1] → [0, 1]).
fn luma(p: &Planes) -> Vec<f32> {
    let n = p.w * p.h;
    (0..n)
        .map(|i| 0.299 * p.data[i] + 0.587 * p.data[n + i] + 0.114 * p.data[2 * n + i])
        .map(|v| (v + 1.0) * 0.5)
        .collect()
}

/// Side of the tiles the residual's spread is measured in.
const TILE: usize = 8;
/// Which tile is taken: a low quantile, the flattest parts, where a photo's
/// texture (grass, fur, print) is absent and only its grain shows. Grass or
/// gravel around a subject has few flat tiles, and at 0.2 their texture
/// read as grain that the subject lacked (harmonization benchmark: pie's MSE
/// 64.8 at 0.2, 61.1 at 0.05, 59.8 with no grain added at all).
const FLAT_QUANTILE: f32 = 0.05;

/// The grain of `p` over the pixels where `weight` > 0 (in [0, 1] units): the
/// robust spread (1.4826 × median absolute value) of the fine-detail residual
/// in each 8x8 tile lying mostly in that region, at the flattest tiles'
/// quantile. `None` with too few tiles to tell.
pub fn fine_detail(p: &Planes, weight: &[f32]) -> Option<f32> {
    let (w, h) = (p.w, p.h);
    let y = luma(p);
    let at = |x: usize, yy: usize, dx: isize, dy: isize| {
        let xx = (x as isize + dx).clamp(0, w as isize - 1) as usize;
        let yy = (yy as isize + dy).clamp(0, h as isize - 1) as usize;
        y[yy * w + xx]
    };
    // [1 -2 1; -2 4 -2; 1 -2 1] / 6: white noise of spread s comes out as s.
    let detail = |x: usize, yy: usize| {
        let corners = at(x, yy, -1, -1) + at(x, yy, 1, -1) + at(x, yy, -1, 1) + at(x, yy, 1, 1);
        let sides = at(x, yy, 0, -1) + at(x, yy, -1, 0) + at(x, yy, 1, 0) + at(x, yy, 0, 1);
        (corners - 2.0 * sides + 4.0 * y[yy * w + x]) / 6.0
    };
    let mut spreads = Vec::new();
    let mut r = Vec::with_capacity(TILE * TILE);
    for ty in (0..h.saturating_sub(TILE - 1)).step_by(TILE) {
        for tx in (0..w.saturating_sub(TILE - 1)).step_by(TILE) {
            r.clear();
            for yy in ty..ty + TILE {
                for xx in tx..tx + TILE {
                    let i = yy * w + xx;
                    if weight[i] > 0.0 {
                        r.push(detail(xx, yy).abs());
                    }
                }
            }
            if r.len() * 4 < TILE * TILE * 3 {
                continue;
            }
            let mid = r.len() / 2;
            let (_, m, _) = r.select_nth_unstable_by(mid, f32::total_cmp);
            spreads.push(1.4826 * *m);
        }
    }
    if spreads.len() < 4 {
        return None;
    }
    let k = ((spreads.len() - 1) as f32 * FLAT_QUANTILE).round() as usize;
    let (_, q, _) = spreads.select_nth_unstable_by(k, f32::total_cmp);
    Some(*q)
}

/// What [`match_grain`] measured and did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrainMatch {
    pub scene: f32,
    pub subject_before: f32,
    pub subject_after: f32,
}

/// Matches the fine detail of the subject's inside (more than 2 pixels into
/// its footprint by `depth`, the distance into where `place` ≥ 0.5) to the
/// scene's around it (`around`), adding grain from `seed`.
pub fn match_grain(
    full: &mut Planes,
    place: &[f32],
    depth: &[f32],
    around: &[f32],
    seed: u64,
) -> Option<GrainMatch> {
    let scene = fine_detail(full, around)?;
    add_grain(full, place, depth, scene, seed)
}

/// As [`match_grain`], to a scene grain `scene` measured beforehand: where
/// `full` is a model's redrawing, the photo's own grain is read from the photo.
pub fn add_grain(
    full: &mut Planes,
    place: &[f32],
    depth: &[f32],
    scene: f32,
    seed: u64,
) -> Option<GrainMatch> {
    let n = full.w * full.h;
    // The inside away from the outline: the outline's own step is no grain.
    let inner: Vec<f32> = depth.iter().map(|&d| if d > 2.0 { 1.0 } else { 0.0 }).collect();
    let before = fine_detail(full, &inner)?;
    if (before - scene).abs() <= TOLERANCE * scene.max(1e-3) {
        return Some(GrainMatch { scene, subject_before: before, subject_after: before });
    }
    if before < scene {
        // Luminance grain, the same on the three channels, as a sensor's mostly is.
        let sd = 2.0 * (scene * scene - before * before).sqrt() / NOISE_READ;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6772_6169_6e00);
        for i in 0..n {
            let z: f32 = rng.sample(StandardNormal);
            if place[i] <= 0.0 {
                continue;
            }
            for c in 0..3 {
                full.data[c * n + i] = (full.data[c * n + i] + place[i] * sd * z).clamp(-1.0, 1.0);
            }
        }
    }
    // A subject with more fine detail than the scene around it is left sharp:
    // in front of a soft background that is depth of field, and softening it
    // (measured on the harmonization benchmark) lost more than it gained.
    let after = fine_detail(full, &inner).unwrap_or(before);
    Some(GrainMatch { scene, subject_before: before, subject_after: after })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 80x80 crop of mid grey with grain `scene_sd` around a subject (x, y in 20..60) of grain `subject_sd`.
    fn crop(scene_sd: f32, subject_sd: f32) -> (Planes, Vec<f32>) {
        let (w, h) = (80, 80);
        let place: Vec<f32> = (0..w * h)
            .map(|i| if (20..60).contains(&(i % w)) && (20..60).contains(&(i / w)) { 1.0 } else { 0.0 })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut p = Planes::new(3, w, h);
        for i in 0..w * h {
            let z: f32 = rng.sample(StandardNormal);
            let sd = if place[i] > 0.0 { subject_sd } else { scene_sd };
            for c in 0..3 {
                p.data[c * w * h + i] = 2.0 * sd * z;
            }
        }
        (p, place)
    }

    fn depth(place: &[f32]) -> Vec<f32> {
        crate::imageops::distance_inside(&crate::composite::inside(place), 80, 80)
    }

    #[test]
    fn a_clean_subject_in_a_grainy_photo_gets_the_photos_grain_and_a_grainier_one_is_kept() {
        let (mut p, place) = crop(0.01, 0.05);
        let around = crate::composite::surroundings(&place, 80, 80, 12.0);
        let m = match_grain(&mut p, &place, &depth(&place), &around, 7).expect("measured");
        assert_eq!(m.subject_after, m.subject_before);
        for (scene_sd, subject_sd) in [(0.04, 0.0), (0.03, 0.01), (0.05, 0.02)] {
            let (mut p, place) = crop(scene_sd, subject_sd);
            let around = crate::composite::surroundings(&place, 80, 80, 12.0);
            let m = match_grain(&mut p, &place, &depth(&place), &around, 7).expect("measured");
            assert!((m.subject_after - m.scene).abs() <= 0.2 * m.scene, "{scene_sd} {subject_sd}: {m:?}");
            assert!((m.subject_before - m.scene).abs() > 0.3 * m.scene, "{m:?}");
            // outside the footprint nothing changes
            let (q, _) = crop(scene_sd, subject_sd);
            assert_eq!(p.data[..80], q.data[..80]);
        }
    }
}
