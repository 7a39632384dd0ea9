//! Where to sample: the crop around the selection, and its working size.

use crate::imageops::Rect;
use crate::manifest::Model;
use crate::{Error, Result};

/// Context around the selection, in working pixels: at least this, or half the selection's long side.
const MIN_CONTEXT: f64 = 16.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The crop of the input image that is sampled, in image pixels.
    pub crop: Rect,
    /// The size the crop is sampled at (multiples of `size_multiple`, ≥ `min_size`).
    pub work_w: usize,
    pub work_h: usize,
    /// Working pixels per image pixel (≤ 1: the model's scale, never upscaled).
    pub scale: f64,
}

impl Plan {
    /// The selection's bounding box, in working pixels (fractional).
    pub fn to_work(&self, r: Rect) -> (f64, f64, f64, f64) {
        let sx = self.work_w as f64 / self.crop.w as f64;
        let sy = self.work_h as f64 / self.crop.h as f64;
        (
            (r.x - self.crop.x) as f64 * sx,
            (r.y - self.crop.y) as f64 * sy,
            r.w as f64 * sx,
            r.h as f64 * sy,
        )
    }
}

/// The smallest selection side, in working pixels, worth sampling.
pub fn min_selection_side(m: &Model) -> u32 {
    m.size_multiple.max(8)
}

pub fn plan(img_w: u32, img_h: u32, sel: Rect, m: &Model) -> Result<Plan> {
    let short = img_w.min(img_h).max(1);
    let scale = (f64::from(m.scene_short_side) / f64::from(short)).min(1.0);
    let min_sel = min_selection_side(m);
    let (sw, sh) = (f64::from(sel.w) * scale, f64::from(sel.h) * scale);
    if sw < f64::from(min_sel) || sh < f64::from(min_sel) {
        let need = (f64::from(min_sel) / scale).ceil() as u32;
        return Err(Error::bad(format!(
            "the selection is {}x{} px; at this image's working scale the concept needs at least {need}x{need} px \
             (select a larger region)",
            sel.w, sel.h
        )));
    }
    let mult = m.size_multiple.max(1) as usize;
    let min_size = (m.min_size as usize).max(mult);
    let (iw, ih) = (f64::from(img_w) * scale, f64::from(img_h) * scale);
    let margin = MIN_CONTEXT.max(sw.max(sh) / 2.0);
    let span = |pos: f64, len: f64, full: f64| -> (f64, f64) {
        let need = (len + 2.0 * margin).max(min_size as f64);
        let mut a = pos - (need - len) / 2.0;
        let mut b = a + need;
        if a < 0.0 {
            b -= a;
            a = 0.0;
        }
        if b > full {
            a = (a - (b - full)).max(0.0);
            b = full;
        }
        (a, b)
    };
    let (wx0, wx1) = span(f64::from(sel.x) * scale, sw, iw);
    let (wy0, wy1) = span(f64::from(sel.y) * scale, sh, ih);
    let to_img = |a: f64, b: f64, full: u32| -> (u32, u32) {
        let a = ((a / scale).floor() as u32).min(full.saturating_sub(1));
        let b = ((b / scale).ceil() as u32).clamp(a + 1, full);
        (a, b)
    };
    let (x0, x1) = to_img(wx0, wx1, img_w);
    let (y0, y1) = to_img(wy0, wy1, img_h);
    let crop = Rect { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
    let work = |len: u32| -> usize {
        let v = f64::from(len) * scale / mult as f64;
        ((v.round() as usize).max(1) * mult).max(min_size.div_ceil(mult) * mult)
    };
    Ok(Plan { crop, work_w: work(crop.w), work_h: work(crop.h), scale })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(short: u32) -> Model {
        Model { resolution: 64, size_multiple: 4, min_size: 16, channels: 3, value_range: [-1, 1], base_channels: 32, scene_short_side: short }
    }

    #[test]
    fn small_image_is_never_upscaled() {
        let p = plan(200, 150, Rect { x: 50, y: 40, w: 60, h: 50 }, &model(256)).unwrap();
        assert_eq!(p.scale, 1.0);
        assert!(p.crop.x <= 50 && p.crop.right() >= 110 && p.crop.y <= 40 && p.crop.bottom() >= 90);
        assert!(p.crop.right() <= 200 && p.crop.bottom() <= 150);
        assert_eq!(p.work_w % 4, 0);
        assert_eq!(p.work_h % 4, 0);
        assert!((p.work_w as i64 - p.crop.w as i64).abs() <= 2, "{p:?}");
    }

    #[test]
    fn large_photo_is_sampled_at_the_model_scale_around_the_selection() {
        let p = plan(6000, 4000, Rect { x: 3000, y: 2000, w: 400, h: 300 }, &model(128)).unwrap();
        assert!((p.scale - 0.032).abs() < 1e-9);
        assert!(p.crop.w < 2000 && p.crop.h < 2000, "{p:?}");
        assert!(p.work_w <= 64 && p.work_h <= 64 && p.work_w >= 16 && p.work_h >= 16, "{p:?}");
        let (x, y, w, h) = p.to_work(Rect { x: 3000, y: 2000, w: 400, h: 300 });
        assert!(x > 0.0 && y > 0.0 && x + w < p.work_w as f64 && y + h < p.work_h as f64);
    }

    #[test]
    fn selection_at_the_border_and_minimum() {
        let p = plan(100, 100, Rect { x: 0, y: 80, w: 20, h: 20 }, &model(256)).unwrap();
        assert_eq!((p.crop.x, p.crop.bottom()), (0, 100));
        assert!(p.work_w >= 16 && p.work_h >= 16);
        let e = plan(100, 100, Rect { x: 10, y: 10, w: 5, h: 30 }, &model(256)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::BadInput);
        assert!(e.to_string().contains("selection is 5x30"), "{e}");
        // tiny image: working size still reaches min_size
        let p = plan(12, 12, Rect { x: 2, y: 2, w: 8, h: 8 }, &model(256)).unwrap();
        assert_eq!((p.work_w, p.work_h), (16, 16));
    }
}
