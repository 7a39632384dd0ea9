//! Where the subject goes in the selection: how big, against which side,
//! mirrored or not; and putting it there at the photo's resolution.

use image::{DynamicImage, GenericImage, GenericImageView, GrayImage, RgbaImage};

use crate::imageops::{self, Planes};
use crate::{Error, Opt, Result};

/// Which side of the selection's bounds the subject rests against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Anchor {
    /// Standing on the selection's bottom edge, centred: things stand on the ground.
    #[default]
    Bottom,
    Center,
    Top,
    Left,
    Right,
    BottomLeft,
    BottomRight,
    TopLeft,
    TopRight,
}

impl Anchor {
    pub const NAMES: [&'static str; 9] =
        ["bottom", "center", "top", "left", "right", "bottom-left", "bottom-right", "top-left", "top-right"];

    /// Horizontal and vertical position in the free room, 0 (left, top) to 1.
    fn fractions(self) -> (f64, f64) {
        match self {
            Anchor::Bottom => (0.5, 1.0),
            Anchor::Center => (0.5, 0.5),
            Anchor::Top => (0.5, 0.0),
            Anchor::Left => (0.0, 0.5),
            Anchor::Right => (1.0, 0.5),
            Anchor::BottomLeft => (0.0, 1.0),
            Anchor::BottomRight => (1.0, 1.0),
            Anchor::TopLeft => (0.0, 0.0),
            Anchor::TopRight => (1.0, 0.0),
        }
    }
}

impl std::str::FromStr for Anchor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Anchor> {
        let all = [
            Anchor::Bottom,
            Anchor::Center,
            Anchor::Top,
            Anchor::Left,
            Anchor::Right,
            Anchor::BottomLeft,
            Anchor::BottomRight,
            Anchor::TopLeft,
            Anchor::TopRight,
        ];
        let key = s.trim().to_ascii_lowercase().replace('_', "-").replace("centre", "center");
        Anchor::NAMES.iter().position(|n| *n == key).map(|i| all[i]).ok_or_else(|| {
            Error::bad(format!("unknown anchor {s:?}: use one of {}", Anchor::NAMES.join(", ")))
        })
    }
}

/// How the subject is fitted into the selection's bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// The subject's size as a fraction of the largest that fits the
    /// selection's bounds with its aspect kept, (0, 1].
    pub scale: f32,
    pub anchor: Anchor,
    /// Mirrored left to right.
    pub flip: bool,
}

impl Default for Placement {
    fn default() -> Self {
        Placement { scale: 1.0, anchor: Anchor::Bottom, flip: false }
    }
}

impl Placement {
    pub(crate) fn check(&self) -> Result<()> {
        if !(self.scale >= 0.05 && self.scale <= 1.0) {
            return Err(Error::out_of_range(Opt::Scale, self.scale, "0.05 to 1"));
        }
        Ok(())
    }
}

/// Enlarges premultiplied RGBA planes with `image`'s Catmull-Rom cubic: the
/// triangle filter that shrinks well adds its own blur to an enlarged subject
/// (tests/eval/look.py, the dog enlarged 3x into a 2048 px photo: edge blur
/// 2.33 and 2.58 px with it, 1.99 and 2.13 with the cubic, the photo's 0.76).
/// The cubic's slight overshoot is clipped.
fn enlarge(p: &Planes, dw: usize, dh: usize) -> Planes {
    let n = p.w * p.h;
    let src = image::Rgba32FImage::from_fn(p.w as u32, p.h as u32, |x, y| {
        let i = y as usize * p.w + x as usize;
        image::Rgba([p.data[i], p.data[n + i], p.data[2 * n + i], p.data[3 * n + i]])
    });
    let big = image::imageops::resize(&src, dw as u32, dh as u32, image::imageops::FilterType::CatmullRom);
    let mut out = Planes::new(4, dw, dh);
    let dn = dw * dh;
    for (i, px) in big.pixels().enumerate() {
        let a = px.0[3].clamp(0.0, 1.0);
        out.data[3 * dn + i] = a;
        for c in 0..3 {
            out.data[c * dn + i] = px.0[c].clamp(0.0, a);
        }
    }
    out
}

/// Scales the subject (cut to its mask's bounds) into the box `(sx, sy, sw,
/// sh)` as `how` says; alpha ∧ selection decides where. `comp` ([-1, 1], 3
/// planes of `w`x`h`) receives it, `place` its coverage. Returns how many
/// times the cut-out was enlarged (below 1: shrunk); `None` if it has no
/// visible pixel.
#[allow(clippy::too_many_arguments)]
pub fn paste_subject(
    subject: &RgbaImage,
    (sx, sy, sw, sh): (f64, f64, f64, f64),
    how: &Placement,
    w: usize,
    h: usize,
    sel: &[f32],
    comp: &mut [f32],
    place: &mut [f32],
) -> Option<f64> {
    let alpha = GrayImage::from_fn(subject.width(), subject.height(), |x, y| {
        image::Luma([subject.get_pixel(x, y).0[3]])
    });
    let b = imageops::mask_bbox(&alpha)?;
    // Premultiplied, so the resampled edge does not pick up the colour under alpha 0.
    let mut p = Planes::new(4, b.w as usize, b.h as usize);
    let n = p.w * p.h;
    for y in 0..b.h {
        for x in 0..b.w {
            let sx_ = if how.flip { b.w - 1 - x } else { x };
            let px = subject.get_pixel(b.x + sx_, b.y + y).0;
            let a = f32::from(px[3]) / 255.0;
            let i = (y * b.w + x) as usize;
            for (c, v) in px.iter().take(3).enumerate() {
                p.data[c * n + i] = f32::from(*v) / 255.0 * a;
            }
            p.data[3 * n + i] = a;
        }
    }
    let fit = (sw / f64::from(b.w)).min(sh / f64::from(b.h)) * f64::from(how.scale);
    let pw = ((f64::from(b.w) * fit).round() as usize).max(1);
    let ph = ((f64::from(b.h) * fit).round() as usize).max(1);
    let r = if fit > 1.0 { enlarge(&p, pw, ph) } else { imageops::resize(&p, pw, ph) };
    let (fx, fy) = how.anchor.fractions();
    let ox = (sx + (sw - pw as f64) * fx).round() as isize;
    let oy = (sy + (sh - ph as f64) * fy).round() as isize;
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
            // Enlarged, the alpha's edge spreads over `fit` pixels; steepened
            // back to about one, the outline is as crisp as the photo's own.
            let a_edge = if fit > 1.0 { ((a - 0.5) * fit as f32 + 0.5).clamp(0.0, 1.0) } else { a };
            let m = (a_edge * sel[t]).clamp(0.0, 1.0);
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
    Some(fit)
}

/// `scene` with the cut-out `cutout` laid over it through its alpha, its
/// top-left corner at `at` (scene pixels, may be negative), and the mask of
/// where it landed; `None` when no visible pixel of it lands on the scene.
/// Blend's input from a pasted layer (GIMP) or a cut-out file (`pie blend`).
pub fn lay_over(
    scene: &DynamicImage,
    cutout: &DynamicImage,
    (ax, ay): (i64, i64),
) -> Option<(DynamicImage, GrayImage)> {
    let mut out = scene.clone();
    let (w, h) = out.dimensions();
    let sub = cutout.to_rgba8();
    let mut mask = GrayImage::new(w, h);
    let mut landed = false;
    for (x, y, px) in sub.enumerate_pixels() {
        let (tx, ty) = (ax + i64::from(x), ay + i64::from(y));
        if px.0[3] == 0 || tx < 0 || ty < 0 || tx >= i64::from(w) || ty >= i64::from(h) {
            continue;
        }
        let (tx, ty) = (tx as u32, ty as u32);
        let under = out.get_pixel(tx, ty).0;
        let k = f32::from(px.0[3]) / 255.0;
        let mixed = [0, 1, 2, 3].map(|c| {
            if c == 3 {
                under[3]
            } else {
                (k * f32::from(px.0[c]) + (1.0 - k) * f32::from(under[c])).round() as u8
            }
        });
        out.put_pixel(tx, ty, image::Rgba(mixed));
        mask.put_pixel(tx, ty, image::Luma([px.0[3]]));
        landed = true;
    }
    landed.then_some((out, mask))
}

/// Where a subject goes for a selection with bounding box `bbox`: (x, y,
/// width, height) relative to `crop`, in the photo's pixels. Inside the
/// selection's faded edge, so no part of the subject fades out with it; on
/// the bottom anchors with room below for its shadow.
pub(crate) fn subject_box(
    selection: &image::GrayImage,
    bbox: crate::imageops::Rect,
    crop: crate::imageops::Rect,
    anchor: Anchor,
) -> (f64, f64, f64, f64) {
    let bottom = matches!(anchor, Anchor::Bottom | Anchor::BottomLeft | Anchor::BottomRight);
    let edge = f64::from(crate::composite::region::faded_edge(selection, bbox));
    let room = if bottom { (bbox.h as f64 * 0.05).round() } else { 0.0 };
    (
        (bbox.x - crop.x) as f64 + edge,
        (bbox.y - crop.y) as f64 + edge,
        (bbox.w as f64 - 2.0 * edge).max(1.0),
        (bbox.h as f64 - 2.0 * edge - room).max(1.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 10x20 subject: left half red, right half blue.
    fn subject() -> RgbaImage {
        RgbaImage::from_fn(10, 20, |x, _| {
            if x < 5 {
                image::Rgba([255, 0, 0, 255])
            } else {
                image::Rgba([0, 0, 255, 255])
            }
        })
    }

    fn placed(how: &Placement) -> (Vec<f32>, Vec<f32>) {
        let (w, h) = (60, 50);
        let sel = vec![1.0; w * h];
        let mut comp = vec![0.0; 3 * w * h];
        let mut place = vec![0.0; w * h];
        paste_subject(&subject(), (10.0, 5.0, 40.0, 40.0), how, w, h, &sel, &mut comp, &mut place);
        (comp, place)
    }

    fn bounds(place: &[f32], w: usize) -> (usize, usize, usize, usize) {
        let on: Vec<usize> = (0..place.len()).filter(|&i| place[i] >= 0.5).collect();
        let xs = on.iter().map(|i| i % w);
        let ys = on.iter().map(|i| i / w);
        (xs.clone().min().unwrap(), ys.clone().min().unwrap(), xs.max().unwrap(), ys.max().unwrap())
    }

    #[test]
    fn the_subject_stands_on_the_bottom_by_default_and_follows_scale_anchor_and_flip() {
        let (_, place) = placed(&Placement::default());
        // full height of the 40 px box, 20 px wide, centred, standing on its bottom
        assert_eq!(bounds(&place, 60), (20, 5, 39, 44));
        let (_, place) = placed(&Placement { scale: 0.5, ..Default::default() });
        assert_eq!(bounds(&place, 60), (25, 25, 34, 44));
        let (_, place) = placed(&Placement { scale: 0.5, anchor: Anchor::TopLeft, flip: false });
        assert_eq!(bounds(&place, 60), (10, 5, 19, 24));
        let (comp, _) = placed(&Placement::default());
        let (flipped, _) = placed(&Placement { flip: true, ..Default::default() });
        let red_at = |c: &[f32], x: usize| c[25 * 60 + x] > 0.9;
        assert!(red_at(&comp, 21) && !red_at(&comp, 38));
        assert!(!red_at(&flipped, 21) && red_at(&flipped, 38));
    }

    #[test]
    fn a_cut_out_is_laid_over_through_its_alpha_where_it_lands_and_nowhere_else() {
        let scene = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(20, 10, image::Rgb([0, 0, 200])));
        let cut = DynamicImage::ImageRgba8(RgbaImage::from_fn(6, 6, |x, _| {
            image::Rgba([255, 0, 0, if x < 3 { 255 } else { 0 }])
        }));
        let (out, mask) = lay_over(&scene, &cut, (17, -2)).expect("lands");
        assert_eq!(out.get_pixel(17, 0).0[..3], [255, 0, 0]);
        assert_eq!(out.get_pixel(16, 0).0[..3], [0, 0, 200]);
        assert_eq!((mask.get_pixel(19, 3).0[0], mask.get_pixel(19, 4).0[0]), (255, 0));
        assert_eq!(out.color(), scene.color());
        assert!(lay_over(&scene, &cut, (40, 0)).is_none());
        assert!(lay_over(&scene, &cut, (18, 0)).is_some_and(|(_, m)| m
            .pixels()
            .filter(|p| p.0[0] > 0)
            .count()
            == 2 * 6));
    }

    #[test]
    fn anchors_and_scales_are_read_and_refused_by_name() {
        assert_eq!("bottom-left".parse::<Anchor>().unwrap(), Anchor::BottomLeft);
        assert_eq!("Centre".parse::<Anchor>().unwrap(), Anchor::Center);
        assert!("middle".parse::<Anchor>().unwrap_err().to_string().contains("bottom-right"));
        assert!(Placement { scale: 0.0, ..Default::default() }.check().is_err());
        assert!(Placement { scale: f32::NAN, ..Default::default() }.check().is_err());
    }
}
