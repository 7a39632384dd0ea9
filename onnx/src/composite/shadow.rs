//! The contact shadow: the subject darkens the ground it stands on.
//!
//! Two parts, as in a photograph under open light: ambient occlusion, dark
//! and tight right under where the subject touches the ground, and a soft
//! shadow of its footprint on the ground plane, squashed by the viewing angle,
//! from light from above. The result is multiplied by it, so the ground keeps
//! its texture under it, and nothing above the subject's base is touched.

use crate::imageops;

// How dark real photographs are under an object standing on the ground
// (tests/eval/look.py --shadows: the ground's linear luminance under the
// object's base over the ground's at 0.4 of its height below, median of five
// of the harmonization photos): 0.31 just under it, 0.47 at 0.05 of its
// height, 0.50 at 0.08, 0.80 at 0.12, 0.90 at 0.2 (the six photos: 0.39,
// 0.45, 0.49, 0.55, 0.86, 0.92). With these constants the default strength
// (`Look`; the shade multiplies sRGB values, so linear light by about its
// 2.2th power) comes near that profile on the pairs. Before (depth 0.05,
// squash 0.12, cast 0.45, strength 0.5) the shadow reached half as far and
// was too faint to read on busy ground.

/// How far the squashed footprint reaches, as a fraction of the subject's
/// height (the ground plane seen at a low angle).
const SQUASH: f32 = 0.18;
/// The occlusion's depth below the contact, as a fraction of the subject's height.
const OCCLUSION_DEPTH: f32 = 0.08;
/// How dark each part is at full strength.
const OCCLUSION_DARK: f32 = 0.8;
const CAST_DARK: f32 = 0.6;

/// Shadow coverage, [0, 1], for a subject whose coverage is `place` (`w`x`h`).
/// Zero above the subject's base and inside its footprint.
pub fn coverage(place: &[f32], w: usize, h: usize) -> Vec<f32> {
    let on = |x: usize, y: usize| place[y * w + x] >= 0.5;
    // The lowest row of the subject in every column, and its extent.
    let mut base = vec![None; w];
    let (mut top, mut bottom, mut left, mut right) = (h, 0usize, w, 0usize);
    for (x, b) in base.iter_mut().enumerate() {
        for y in (0..h).rev() {
            if on(x, y) {
                *b = Some(y);
                bottom = bottom.max(y);
                left = left.min(x);
                right = right.max(x);
                break;
            }
        }
        if let Some(y) = (0..h).find(|&y| on(x, y)) {
            top = top.min(y);
        }
    }
    let mut out = vec![0.0f32; w * h];
    if left > right || top > bottom {
        return out;
    }
    let height = (bottom - top + 1) as f32;
    let width = (right - left + 1) as f32;
    // Occlusion: below each column's contact, fading with depth.
    let depth = (OCCLUSION_DEPTH * height).max(1.5);
    let mut occ = vec![0.0f32; w * h];
    for (x, b) in base.iter().enumerate() {
        let Some(b) = *b else { continue };
        // Only the subject's lower part touches the ground.
        if (bottom - b) as f32 > 0.1 * height {
            continue;
        }
        for y in b + 1..h {
            let d = (y - b) as f32;
            if d > 4.0 * depth {
                break;
            }
            occ[y * w + x] = (-d / depth).exp();
        }
    }
    // Softened across columns only: down the column the falloff is already smooth.
    let occ = soften_rows(&occ, w, h, (0.5 * depth).max(1.0) as usize);
    // The cast shadow: an ellipse under the base, as wide as the subject.
    let (cx, cy) = ((left + right) as f32 * 0.5, bottom as f32);
    let (rx, ry) = (0.6 * width, (SQUASH * height).max(2.0));
    let mut cast = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
            let r2 = dx * dx + dy * dy;
            if r2 < 1.0 {
                cast[y * w + x] = 1.0 - r2;
            }
        }
    }
    let cast = imageops::smooth(&cast, w, h, (0.25 * ry).max(1.0));
    let from = bottom.saturating_sub((0.1 * height) as usize);
    for y in from..h {
        for x in 0..w {
            let i = y * w + x;
            let v = (OCCLUSION_DARK * occ[i]).max(CAST_DARK * cast[i]) * (1.0 - place[i].min(1.0));
            out[i] = v.clamp(0.0, 1.0);
        }
    }
    out
}

/// How much darker each pixel gets, [0, 1]: the shadow's `coverage` at
/// `strength`, only where the `selection` lets anything change.
pub fn shade(coverage: &[f32], selection: &[f32], strength: f32) -> Vec<f32> {
    coverage.iter().zip(selection).map(|(c, m)| c * m * strength).collect()
}

/// A horizontal box blur of each row, `r` pixels each side.
fn soften_rows(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; w * h];
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        for x in 0..w {
            let (a, b) = (x.saturating_sub(r), (x + r + 1).min(w));
            out[y * w + x] = row[a..b].iter().sum::<f32>() / (b - a) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_lies_under_the_subject_and_nothing_above_its_base_darkens() {
        let (w, h) = (60, 60);
        // a subject x 20..40, y 10..40
        let place: Vec<f32> = (0..w * h)
            .map(|i| if (20..40).contains(&(i % w)) && (10..40).contains(&(i / w)) { 1.0 } else { 0.0 })
            .collect();
        let cov = coverage(&place, w, h);
        let at = |x: usize, y: usize| cov[y * w + x];
        assert!(at(30, 40) > 0.4, "right under the contact: {}", at(30, 40));
        assert!(at(30, 41) > at(30, 46), "fades with depth");
        assert!(at(15, 40) > 0.0, "reaches past the sides");
        for y in 0..36 {
            for x in 0..w {
                assert_eq!(at(x, y), 0.0, "above the base at {x},{y}");
            }
        }
        assert_eq!(at(30, 39), 0.0, "not on the subject");
    }
}
