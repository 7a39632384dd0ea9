//! Where to sample: the crop around the selection, and its working size.

use crate::imageops::Rect;
use crate::manifest::{PixelModel, SdModel};
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
    /// A box (x, y, width, height) in the crop's pixels, in working pixels (fractional).
    pub fn to_work(&self, (x, y, w, h): (f64, f64, f64, f64)) -> (f64, f64, f64, f64) {
        let sx = self.work_w as f64 / self.crop.w as f64;
        let sy = self.work_h as f64 / self.crop.h as f64;
        (x * sx, y * sy, w * sx, h * sy)
    }
}

/// The smallest selection side, in working pixels, worth sampling.
pub fn min_selection_side(m: &PixelModel) -> u32 {
    m.size_multiple.max(8)
}

/// pixel-unet: the whole image at the scene's learned scale (never upscaled), cropped.
pub fn plan_pixel(img_w: u32, img_h: u32, sel: Rect, m: &PixelModel) -> Result<Plan> {
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

/// sd: the selection plus context (half its long side each way, at least
/// 1/8 of it), grown towards the aspect of the working size, scaled (up or
/// down) so its area is about `resolution`², in multiples of `size_multiple`.
pub fn plan_sd(img_w: u32, img_h: u32, sel: Rect, m: &SdModel) -> Result<Plan> {
    let mult = m.size_multiple.max(1) as f64;
    let min_size = f64::from(m.min_size.max(m.size_multiple).max(1));
    let res = f64::from(m.resolution);
    let (iw, ih) = (f64::from(img_w), f64::from(img_h));
    let long = f64::from(sel.w.max(sel.h));
    let margin = (long / 2.0).max(4.0);
    // One span of the crop: `need` long, centred on the selection, inside the image.
    let span = |pos: f64, len: f64, need: f64, full: f64| -> (f64, f64) {
        let need = need.max(len).min(full);
        let mut a = pos + len / 2.0 - need / 2.0;
        a = a.clamp(0.0, full - need);
        (a, a + need)
    };
    let (cw, ch) = ((f64::from(sel.w) + 2.0 * margin).min(iw), (f64::from(sel.h) + 2.0 * margin).min(ih));
    // Working size: area ≈ resolution², multiples of size_multiple, at least min_size.
    let scale = res / (cw * ch).sqrt();
    let snap = |v: f64| ((v / mult).round().max(1.0) * mult).max((min_size / mult).ceil() * mult);
    let (ww, wh) = (snap(cw * scale), snap(ch * scale));
    // Grow the crop (where the image allows) to the working aspect, so the
    // scale is the same both ways.
    let aspect = ww / wh;
    let (cw, ch) = if cw / ch < aspect { ((ch * aspect).min(iw), ch) } else { (cw, (cw / aspect).min(ih)) };
    let (x0, x1) = span(f64::from(sel.x), f64::from(sel.w), cw, iw);
    let (y0, y1) = span(f64::from(sel.y), f64::from(sel.h), ch, ih);
    let (x0, y0) = (x0.floor() as u32, y0.floor() as u32);
    let (x1, y1) = ((x1.ceil() as u32).clamp(x0 + 1, img_w), (y1.ceil() as u32).clamp(y0 + 1, img_h));
    let crop = Rect { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
    let scale = (ww / f64::from(crop.w)).min(wh / f64::from(crop.h));
    let vsf = f64::from(m.vae_scale_factor.max(1));
    if f64::from(sel.w) * scale < vsf || f64::from(sel.h) * scale < vsf {
        return Err(Error::bad(format!(
            "the selection is {}x{} px, smaller than one latent cell at the working scale: select a larger region",
            sel.w, sel.h
        )));
    }
    Ok(Plan { crop, work_w: ww as usize, work_h: wh as usize, scale })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(short: u32) -> PixelModel {
        PixelModel {
            resolution: 64,
            size_multiple: 4,
            min_size: 16,
            channels: 3,
            value_range: [-1, 1],
            base_channels: 32,
            scene_short_side: short,
        }
    }

    fn sd(res: u32, mult: u32) -> SdModel {
        SdModel {
            resolution: res,
            size_multiple: mult,
            min_size: mult,
            channels: 3,
            value_range: [-1, 1],
            latent_channels: 4,
            vae_scale_factor: 8,
            scaling_factor: 0.18215,
            unet_in_channels: 4,
            precision: crate::manifest::Precision::Float32,
            base: crate::manifest::SdBase { name: "x".into(), path: None, extra: Default::default() },
            optimized: None,
            conditioning: None,
        }
    }

    #[test]
    fn sd_crops_around_the_selection_at_about_the_native_area() {
        // A large photo: the crop is the selection plus context, scaled down to ~512².
        let sel = Rect { x: 3000, y: 2000, w: 400, h: 300 };
        let p = plan_sd(6000, 4000, sel, &sd(512, 64)).unwrap();
        assert_eq!((p.work_w % 64, p.work_h % 64), (0, 0));
        let area = (p.work_w * p.work_h) as f64;
        assert!(area > 0.6 * 512.0 * 512.0 && area < 1.5 * 512.0 * 512.0, "{p:?}");
        assert!(
            p.crop.x <= 3000 && p.crop.right() >= 3400 && p.crop.y <= 2000 && p.crop.bottom() >= 2300,
            "{p:?}"
        );
        // same scale both ways (the crop was grown to the working aspect)
        let (sx, sy) = (p.work_w as f64 / p.crop.w as f64, p.work_h as f64 / p.crop.h as f64);
        assert!((sx / sy - 1.0).abs() < 0.01, "{p:?}");
        // A small image is upscaled to the native size.
        let p = plan_sd(96, 72, Rect { x: 30, y: 20, w: 32, h: 32 }, &sd(64, 16)).unwrap();
        assert!(p.work_w >= 48 && p.work_h >= 48, "{p:?}");
        assert!(p.crop.right() <= 96 && p.crop.bottom() <= 72);
        // At the border.
        let p = plan_sd(100, 100, Rect { x: 0, y: 80, w: 20, h: 20 }, &sd(64, 16)).unwrap();
        assert_eq!((p.crop.x, p.crop.bottom()), (0, 100));
        // One latent cell is the least.
        let e = plan_sd(4000, 4000, Rect { x: 10, y: 10, w: 2, h: 3000 }, &sd(512, 64)).unwrap_err();
        assert!(e.to_string().contains("latent cell"), "{e}");
    }

    #[test]
    fn small_image_is_never_upscaled() {
        let p = plan_pixel(200, 150, Rect { x: 50, y: 40, w: 60, h: 50 }, &model(256)).unwrap();
        assert_eq!(p.scale, 1.0);
        assert!(p.crop.x <= 50 && p.crop.right() >= 110 && p.crop.y <= 40 && p.crop.bottom() >= 90);
        assert!(p.crop.right() <= 200 && p.crop.bottom() <= 150);
        assert_eq!(p.work_w % 4, 0);
        assert_eq!(p.work_h % 4, 0);
        assert!((p.work_w as i64 - p.crop.w as i64).abs() <= 2, "{p:?}");
    }

    #[test]
    fn large_photo_is_sampled_at_the_model_scale_around_the_selection() {
        let p = plan_pixel(6000, 4000, Rect { x: 3000, y: 2000, w: 400, h: 300 }, &model(128)).unwrap();
        assert!((p.scale - 0.032).abs() < 1e-9);
        assert!(p.crop.w < 2000 && p.crop.h < 2000, "{p:?}");
        assert!(p.work_w <= 64 && p.work_h <= 64 && p.work_w >= 16 && p.work_h >= 16, "{p:?}");
        let at = ((3000 - p.crop.x) as f64, (2000 - p.crop.y) as f64, 400.0, 300.0);
        let (x, y, w, h) = p.to_work(at);
        assert!(x > 0.0 && y > 0.0 && x + w < p.work_w as f64 && y + h < p.work_h as f64);
    }

    #[test]
    fn selection_at_the_border_and_minimum() {
        let p = plan_pixel(100, 100, Rect { x: 0, y: 80, w: 20, h: 20 }, &model(256)).unwrap();
        assert_eq!((p.crop.x, p.crop.bottom()), (0, 100));
        assert!(p.work_w >= 16 && p.work_h >= 16);
        let e = plan_pixel(100, 100, Rect { x: 10, y: 10, w: 5, h: 30 }, &model(256)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::BadInput);
        assert!(e.to_string().contains("selection is 5x30"), "{e}");
        // tiny image: working size still reaches min_size
        let p = plan_pixel(12, 12, Rect { x: 2, y: 2, w: 8, h: 8 }, &model(256)).unwrap();
        assert_eq!((p.work_w, p.work_h), (16, 16));
    }
}
