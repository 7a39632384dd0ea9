//! Pixel work in f32: reading a crop of any colour type, resampling,
//! blurring, and writing the result back through the selection.
//!
//! The resampler, blurs and distance transform are hand-written because the
//! kept crates were slower, clamp f32 to [0, 1] (pie resamples signed planes),
//! or compute another filter or metric. bench/imageops-crates measures
//! them against `image`, `fast_image_resize` and `imageproc`, and its README
//! has the figures.

use image::{DynamicImage, GrayImage};
use ndarray::Array3;

/// A rectangle in pixels; `x, y` top-left, `w, h` size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub fn right(&self) -> u32 {
        self.x + self.w
    }
    pub fn bottom(&self) -> u32 {
        self.y + self.h
    }
}

/// Planar f32 channels, row-major within each plane.
#[derive(Debug, Clone)]
pub struct Planes {
    pub c: usize,
    pub w: usize,
    pub h: usize,
    pub data: Vec<f32>,
}

impl Planes {
    pub fn new(c: usize, w: usize, h: usize) -> Planes {
        Planes { c, w, h, data: vec![0.0; c * w * h] }
    }
    pub fn plane(&self, i: usize) -> &[f32] {
        &self.data[i * self.w * self.h..(i + 1) * self.w * self.h]
    }

    /// The same pixels as a `[c, h, w]` array, the layout the graphs take
    /// (no copy: planar row-major is that array's standard layout).
    pub fn into_array(self) -> Array3<f32> {
        let Planes { c, w, h, data } = self;
        Array3::from_shape_vec((c, h, w), data)
            .unwrap_or_else(|e| unreachable!("Planes hold c·w·h values: {e}"))
    }

    /// A `[c, h, w]` array's pixels as planes (no copy when it is in standard layout).
    pub fn from_array(a: Array3<f32>) -> Planes {
        let (c, h, w) = a.dim();
        let data = if a.is_standard_layout() {
            match a.into_raw_vec_and_offset() {
                (v, Some(0)) if v.len() == c * w * h => v,
                (v, off) => v[off.unwrap_or(0)..][..c * w * h].to_vec(),
            }
        } else {
            a.iter().copied().collect()
        };
        Planes { c, w, h, data }
    }
}

/// Bounding box of the pixels > 0; `None` when there are none.
pub fn mask_bbox(mask: &GrayImage) -> Option<Rect> {
    let (w, h) = mask.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (y, row) in mask.as_raw().chunks_exact(w.max(1) as usize).enumerate().take(h as usize) {
        for (x, &v) in row.iter().enumerate() {
            if v > 0 {
                let (x, y) = (x as u32, y as u32);
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
        }
    }
    (x0 != u32::MAX).then(|| Rect { x: x0, y: y0, w: x1 - x0 + 1, h: y1 - y0 + 1 })
}

/// Sample types of the colour types pie accepts, mapped to [0, 1].
trait Sample: Copy {
    fn to_unit(self) -> f32;
    fn from_unit(v: f32) -> Self;
}
impl Sample for u8 {
    fn to_unit(self) -> f32 {
        f32::from(self) / 255.0
    }
    fn from_unit(v: f32) -> u8 {
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}
impl Sample for u16 {
    fn to_unit(self) -> f32 {
        f32::from(self) / 65535.0
    }
    fn from_unit(v: f32) -> u16 {
        (v.clamp(0.0, 1.0) * 65535.0).round() as u16
    }
}
impl Sample for f32 {
    fn to_unit(self) -> f32 {
        self
    }
    fn from_unit(v: f32) -> f32 {
        v.clamp(0.0, 1.0)
    }
}

fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.2126 * r + 0.7152 * g + 0.0722 * b
}

fn read_generic<S: Sample>(buf: &[S], img_w: u32, ch: usize, r: Rect) -> Planes {
    let mut p = Planes::new(3, r.w as usize, r.h as usize);
    let n = p.w * p.h;
    for y in 0..r.h as usize {
        let row = (r.y as usize + y) * img_w as usize;
        for x in 0..r.w as usize {
            let px = &buf[(row + r.x as usize + x) * ch..][..ch];
            let (rv, gv, bv) = if ch >= 3 {
                (px[0].to_unit(), px[1].to_unit(), px[2].to_unit())
            } else {
                let v = px[0].to_unit();
                (v, v, v)
            };
            let i = y * p.w + x;
            p.data[i] = rv;
            p.data[n + i] = gv;
            p.data[2 * n + i] = bv;
        }
    }
    p
}

/// The RGB of `r` in [0, 1]; gray is replicated, alpha ignored.
pub fn read_rgb(img: &DynamicImage, r: Rect) -> Planes {
    let w = img.width();
    match img {
        DynamicImage::ImageLuma8(b) => read_generic(b.as_raw(), w, 1, r),
        DynamicImage::ImageLumaA8(b) => read_generic(b.as_raw(), w, 2, r),
        DynamicImage::ImageRgb8(b) => read_generic(b.as_raw(), w, 3, r),
        DynamicImage::ImageRgba8(b) => read_generic(b.as_raw(), w, 4, r),
        DynamicImage::ImageLuma16(b) => read_generic(b.as_raw(), w, 1, r),
        DynamicImage::ImageLumaA16(b) => read_generic(b.as_raw(), w, 2, r),
        DynamicImage::ImageRgb16(b) => read_generic(b.as_raw(), w, 3, r),
        DynamicImage::ImageRgba16(b) => read_generic(b.as_raw(), w, 4, r),
        DynamicImage::ImageRgb32F(b) => read_generic(b.as_raw(), w, 3, r),
        DynamicImage::ImageRgba32F(b) => read_generic(b.as_raw(), w, 4, r),
        other => {
            let rgb = other.to_rgb32f();
            read_generic(rgb.as_raw(), w, 3, r)
        }
    }
}

/// Writes `res` (RGB in [0, 1], the size of `r`) into `buf` through the
/// selection: out = m·res + (1−m)·in with m = mask/255. Where the mask is 0
/// the pixel is not touched at all; alpha is never touched.
fn blend_generic<S: Sample>(buf: &mut [S], img_w: u32, ch: usize, r: Rect, res: &Planes, mask: &GrayImage) {
    let n = res.w * res.h;
    let color = if ch >= 3 { 3 } else { 1 };
    for y in 0..r.h as usize {
        let iy = r.y as usize + y;
        for x in 0..r.w as usize {
            let ix = r.x as usize + x;
            let mv = mask.as_raw()[iy * mask.width() as usize + ix];
            if mv == 0 {
                continue;
            }
            let m = f32::from(mv) / 255.0;
            let i = y * res.w + x;
            let px = &mut buf[(iy * img_w as usize + ix) * ch..][..ch];
            let rgb = [res.data[i], res.data[n + i], res.data[2 * n + i]];
            for c in 0..color {
                let new = if color == 1 { luma(rgb[0], rgb[1], rgb[2]) } else { rgb[c] };
                px[c] = S::from_unit(m * new + (1.0 - m) * px[c].to_unit());
            }
        }
    }
}

pub fn blend_into(img: &mut DynamicImage, r: Rect, res: &Planes, mask: &GrayImage) {
    let w = img.width();
    match img {
        DynamicImage::ImageLuma8(b) => blend_generic(b, w, 1, r, res, mask),
        DynamicImage::ImageLumaA8(b) => blend_generic(b, w, 2, r, res, mask),
        DynamicImage::ImageRgb8(b) => blend_generic(b, w, 3, r, res, mask),
        DynamicImage::ImageRgba8(b) => blend_generic(b, w, 4, r, res, mask),
        DynamicImage::ImageLuma16(b) => blend_generic(b, w, 1, r, res, mask),
        DynamicImage::ImageLumaA16(b) => blend_generic(b, w, 2, r, res, mask),
        DynamicImage::ImageRgb16(b) => blend_generic(b, w, 3, r, res, mask),
        DynamicImage::ImageRgba16(b) => blend_generic(b, w, 4, r, res, mask),
        DynamicImage::ImageRgb32F(b) => blend_generic(b, w, 3, r, res, mask),
        DynamicImage::ImageRgba32F(b) => blend_generic(b, w, 4, r, res, mask),
        // `add` converts anything else to RGBA8 before it gets here.
        _ => {}
    }
}

/// Resamples one plane with a triangle filter whose support widens when
/// shrinking (an area-like average), so downscaling does not alias.
pub fn resize_plane(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    let tmp = resample_axis(src, sw, sh, dw, true);
    resample_axis(&tmp, dw, sh, dh, false)
}

/// Weights per output index: (first source index, weights).
fn weights(src: usize, dst: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = src as f64 / dst as f64;
    let support = scale.max(1.0);
    (0..dst)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support).floor().max(0.0)) as usize;
            let hi = ((center + support).ceil() as usize).min(src);
            let mut w: Vec<f32> = (lo..hi)
                .map(|j| {
                    let d = ((j as f64 + 0.5 - center) / support).abs();
                    (1.0 - d).max(0.0) as f32
                })
                .collect();
            let sum: f32 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
                (lo, w)
            } else {
                // Degenerate: nearest neighbour.
                (((center.floor() as usize).min(src - 1)), vec![1.0])
            }
        })
        .collect()
}

fn resample_axis(src: &[f32], w: usize, h: usize, dst: usize, horizontal: bool) -> Vec<f32> {
    if horizontal {
        if dst == w {
            return src.to_vec();
        }
        let ws = weights(w, dst);
        let mut out = vec![0.0; dst * h];
        for y in 0..h {
            let row = &src[y * w..(y + 1) * w];
            for (x, (lo, wt)) in ws.iter().enumerate() {
                out[y * dst + x] = wt.iter().zip(&row[*lo..]).map(|(a, b)| a * b).sum();
            }
        }
        out
    } else {
        if dst == h {
            return src.to_vec();
        }
        let ws = weights(h, dst);
        let mut out = vec![0.0; w * dst];
        for (y, (lo, wt)) in ws.iter().enumerate() {
            let o = &mut out[y * w..(y + 1) * w];
            for (k, wv) in wt.iter().enumerate() {
                let s = &src[(lo + k) * w..(lo + k + 1) * w];
                o.iter_mut().zip(s).for_each(|(a, b)| *a += wv * b);
            }
        }
        out
    }
}

pub fn resize(p: &Planes, dw: usize, dh: usize) -> Planes {
    let mut out = Planes::new(p.c, dw, dh);
    for c in 0..p.c {
        let r = resize_plane(p.plane(c), p.w, p.h, dw, dh);
        out.data[c * dw * dh..(c + 1) * dw * dh].copy_from_slice(&r);
    }
    out
}

/// Separable box blur of one plane, edges clamped.
pub fn box_blur(src: &[f32], w: usize, h: usize, radius: usize) -> Vec<f32> {
    if radius == 0 {
        return src.to_vec();
    }
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0.0; w * h];
        let (len, lines) = if horizontal { (w, h) } else { (h, w) };
        let at = |line: usize, i: usize| if horizontal { line * w + i } else { i * w + line };
        let k = (2 * radius + 1) as f32;
        for line in 0..lines {
            for i in 0..len {
                let mut s = 0.0;
                for d in 0..=2 * radius {
                    let j = (i + d).saturating_sub(radius).min(len - 1);
                    s += src[at(line, j)];
                }
                out[at(line, i)] = s / k;
            }
        }
        out
    };
    let h1 = pass(src, true);
    pass(&h1, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgba};

    #[test]
    fn bbox_of_mask() {
        let mut m = GrayImage::new(10, 8);
        assert_eq!(mask_bbox(&m), None);
        m.put_pixel(2, 3, Luma([1]));
        m.put_pixel(6, 5, Luma([255]));
        assert_eq!(mask_bbox(&m), Some(Rect { x: 2, y: 3, w: 5, h: 3 }));
    }

    #[test]
    fn resize_keeps_constants_and_means() {
        let src = vec![0.7f32; 40 * 30];
        for (dw, dh) in [(10, 7), (40, 30), (80, 61), (13, 29)] {
            let r = resize_plane(&src, 40, 30, dw, dh);
            assert_eq!(r.len(), dw * dh);
            assert!(r.iter().all(|v| (v - 0.7).abs() < 1e-5));
        }
        let ramp: Vec<f32> = (0..64 * 64).map(|i| (i % 64) as f32 / 63.0).collect();
        let small = resize_plane(&ramp, 64, 64, 16, 16);
        let mean: f32 = small.iter().sum::<f32>() / 256.0;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert!(small.windows(2).take(15).all(|w| w[1] > w[0]));
    }

    #[test]
    fn blending_leaves_outside_bit_identical_and_alpha_alone() {
        let mut img = ImageBuffer::from_fn(6, 5, |x, y| {
            Rgba([x as u16 * 1000 + 7, y as u16 * 999 + 3, 12345, 40000 + x as u16])
        });
        let orig = img.clone();
        let mut mask = GrayImage::new(6, 5);
        mask.put_pixel(2, 2, Luma([255]));
        mask.put_pixel(3, 2, Luma([128]));
        let r = Rect { x: 1, y: 1, w: 4, h: 3 };
        let mut res = Planes::new(3, 4, 3);
        res.data.iter_mut().for_each(|v| *v = 1.0);
        let mut dyn_img = DynamicImage::ImageRgba16(img.clone());
        blend_into(&mut dyn_img, r, &res, &mask);
        img = dyn_img.to_rgba16();
        for (x, y, p) in img.enumerate_pixels() {
            let o = orig.get_pixel(x, y);
            assert_eq!(p.0[3], o.0[3]);
            match mask.get_pixel(x, y).0[0] {
                0 => assert_eq!(p, o),
                255 => assert_eq!(&p.0[..3], &[65535, 65535, 65535]),
                _ => assert!(p.0[0] > o.0[0] && p.0[0] < 65535),
            }
        }
        // gray: written as luma
        let mut g = DynamicImage::ImageLuma8(GrayImage::new(6, 5));
        blend_into(&mut g, r, &res, &mask);
        assert_eq!(g.to_luma8().get_pixel(2, 2).0[0], 255);
        assert_eq!(g.to_luma8().get_pixel(1, 1).0[0], 0);
    }

    #[test]
    fn read_crop_of_gray_and_rgb() {
        let img = DynamicImage::ImageLuma8(GrayImage::from_fn(4, 4, |x, y| Luma([(x * 10 + y) as u8])));
        let p = read_rgb(&img, Rect { x: 1, y: 2, w: 2, h: 2 });
        assert_eq!(p.data[0], 12.0 / 255.0);
        assert_eq!(p.plane(2)[3], 23.0 / 255.0);
    }

    #[test]
    fn blur_keeps_constants() {
        let b = box_blur(&[1.0; 20], 5, 4, 2);
        assert!(b.iter().all(|v| (v - 1.0).abs() < 1e-6));
    }
}

/// True when the selection is hard-edged: (almost) no values between 0 and 255.
pub fn is_hard(mask: &GrayImage) -> bool {
    let (mut partial, mut inside) = (0usize, 0usize);
    for &v in mask.as_raw() {
        inside += usize::from(v > 0);
        partial += usize::from(v > 0 && v < 255);
    }
    partial * 100 < inside
}

/// A copy of `mask` whose inside fades from 0 at the selection's edge to its
/// value `radius` pixels in (chamfer distance). Zero stays zero, so what is
/// outside the selection stays untouched; a hard edge becomes a soft seam.
pub fn feather_inward(mask: &GrayImage, bbox: Rect, radius: u32) -> GrayImage {
    let mut out = mask.clone();
    if radius == 0 {
        return out;
    }
    // Work on the bounding box plus a border, so the box's edge counts as outside.
    let (bw, bh) = (bbox.w as usize + 2, bbox.h as usize + 2);
    let big = u32::MAX / 4;
    let mut d = vec![big; bw * bh];
    let at = |x: usize, y: usize| -> u8 {
        if x == 0 || y == 0 || x > bbox.w as usize || y > bbox.h as usize {
            return 0;
        }
        mask.get_pixel(bbox.x + x as u32 - 1, bbox.y + y as u32 - 1).0[0]
    };
    for y in 0..bh {
        for x in 0..bw {
            if at(x, y) == 0 {
                d[y * bw + x] = 0;
            }
        }
    }
    // Two-pass 3-4 chamfer: 3 per straight step, 4 per diagonal.
    for y in 0..bh {
        for x in 0..bw {
            let mut v = d[y * bw + x];
            if x > 0 {
                v = v.min(d[y * bw + x - 1] + 3);
            }
            if y > 0 {
                v = v.min(d[(y - 1) * bw + x] + 3);
                if x > 0 {
                    v = v.min(d[(y - 1) * bw + x - 1] + 4);
                }
                if x + 1 < bw {
                    v = v.min(d[(y - 1) * bw + x + 1] + 4);
                }
            }
            d[y * bw + x] = v;
        }
    }
    for y in (0..bh).rev() {
        for x in (0..bw).rev() {
            let mut v = d[y * bw + x];
            if x + 1 < bw {
                v = v.min(d[y * bw + x + 1] + 3);
            }
            if y + 1 < bh {
                v = v.min(d[(y + 1) * bw + x] + 3);
                if x + 1 < bw {
                    v = v.min(d[(y + 1) * bw + x + 1] + 4);
                }
                if x > 0 {
                    v = v.min(d[(y + 1) * bw + x - 1] + 4);
                }
            }
            d[y * bw + x] = v;
        }
    }
    for y in 1..=bbox.h as usize {
        for x in 1..=bbox.w as usize {
            let m = at(x, y);
            if m == 0 {
                continue;
            }
            // Distance in pixels to the nearest unselected pixel: 1 next to it.
            let dist = d[y * bw + x] as f32 / 3.0;
            let w = ((dist - 0.5) / radius as f32).clamp(0.0, 1.0);
            let v = (f32::from(m) * w).round().clamp(1.0, 255.0) as u8;
            out.put_pixel(bbox.x + x as u32 - 1, bbox.y + y as u32 - 1, image::Luma([v]));
        }
    }
    out
}

#[cfg(test)]
mod feather_tests {
    use super::*;
    use image::Luma;

    #[test]
    fn hard_edges_fade_inward_and_outside_stays_zero() {
        let mut m = GrayImage::new(40, 30);
        for y in 5..25 {
            for x in 10..30 {
                m.put_pixel(x, y, Luma([255]));
            }
        }
        assert!(is_hard(&m));
        let bbox = mask_bbox(&m).unwrap();
        let f = feather_inward(&m, bbox, 4);
        for (x, y, p) in f.enumerate_pixels() {
            let o = m.get_pixel(x, y).0[0];
            assert_eq!(p.0[0] == 0, o == 0, "zero-ness changed at {x},{y}");
        }
        assert!(f.get_pixel(10, 15).0[0] < 64, "edge {}", f.get_pixel(10, 15).0[0]);
        assert!(f.get_pixel(11, 15).0[0] < f.get_pixel(12, 15).0[0]);
        assert_eq!(f.get_pixel(20, 15).0[0], 255);
        // a mask that is already soft is not hard
        let soft = GrayImage::from_fn(20, 20, |x, _| Luma([(x * 12) as u8]));
        assert!(!is_hard(&soft));
    }
}

/// Chamfer (3-4) distance, in pixels, from each pixel where `inside` is true
/// to the nearest pixel where it is false (0 where it is false). Pixels beyond
/// the plane's edge count as inside, so the edge itself is no boundary.
pub fn distance_inside(inside: &[bool], w: usize, h: usize) -> Vec<f32> {
    let big = u32::MAX / 4;
    let mut d: Vec<u32> = inside.iter().map(|&v| if v { big } else { 0 }).collect();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let mut v = d[i];
            if x > 0 {
                v = v.min(d[i - 1] + 3);
            }
            if y > 0 {
                v = v.min(d[i - w] + 3);
                if x > 0 {
                    v = v.min(d[i - w - 1] + 4);
                }
                if x + 1 < w {
                    v = v.min(d[i - w + 1] + 4);
                }
            }
            d[i] = v;
        }
    }
    for y in (0..h).rev() {
        for x in (0..w).rev() {
            let i = y * w + x;
            let mut v = d[i];
            if x + 1 < w {
                v = v.min(d[i + 1] + 3);
            }
            if y + 1 < h {
                v = v.min(d[i + w] + 3);
                if x + 1 < w {
                    v = v.min(d[i + w + 1] + 4);
                }
                if x > 0 {
                    v = v.min(d[i + w - 1] + 4);
                }
            }
            d[i] = v;
        }
    }
    d.into_iter().map(|v| if v >= big { f32::INFINITY } else { v as f32 / 3.0 }).collect()
}

/// Box blur of one plane whose cost does not grow with the radius (running
/// sums); near the edges it averages only what is inside the plane.
fn box_blur_sum(src: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let (len, lines) = if horizontal { (w, h) } else { (h, w) };
        let at = |line: usize, i: usize| if horizontal { line * w + i } else { i * w + line };
        let mut out = vec![0.0f32; w * h];
        let mut pre = vec![0.0f64; len + 1];
        for line in 0..lines {
            for i in 0..len {
                pre[i + 1] = pre[i] + f64::from(src[at(line, i)]);
            }
            for i in 0..len {
                let (a, b) = (i.saturating_sub(r), (i + r + 1).min(len));
                out[at(line, i)] = ((pre[b] - pre[a]) / (b - a) as f64) as f32;
            }
        }
        out
    };
    let h1 = pass(src, true);
    pass(&h1, false)
}

/// A smooth (three box passes, about Gaussian with σ ≈ `sigma`) blur of one plane.
pub fn smooth(src: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
    let r = sigma.round().max(1.0) as usize;
    let mut v = src.to_vec();
    for _ in 0..3 {
        v = box_blur_sum(&v, w, h, r);
    }
    v
}

/// The local mean colour of `img` (3 planes) over the pixels where `weight`
/// is > 0, around every pixel (normalized convolution with [`smooth`]), and
/// how much weight it rests on (0: none of those pixels nearby).
pub fn local_mean(img: &Planes, weight: &[f32], sigma: f32) -> (Planes, Vec<f32>) {
    let (w, h) = (img.w, img.h);
    let den = smooth(weight, w, h, sigma);
    let mut out = Planes::new(3, w, h);
    for c in 0..3 {
        let num: Vec<f32> = img.plane(c).iter().zip(weight).map(|(v, m)| v * m).collect();
        let num = smooth(&num, w, h, sigma);
        for (i, (n, d)) in num.iter().zip(&den).enumerate() {
            out.data[c * w * h + i] = if *d > 1e-6 { n / d } else { 0.0 };
        }
    }
    (out, den)
}

#[cfg(test)]
mod footprint_tests {
    use super::*;

    #[test]
    fn distance_grows_inward_from_the_boundary() {
        let (w, h) = (20, 12);
        let inside: Vec<bool> =
            (0..w * h).map(|i| (5..15).contains(&(i % w)) && (2..10).contains(&(i / w))).collect();
        let d = distance_inside(&inside, w, h);
        assert_eq!(d[0], 0.0);
        assert_eq!(d[6 * w + 5], 1.0);
        assert_eq!(d[6 * w + 7], 3.0);
        assert!(d[6 * w + 9] >= 4.0);
    }

    #[test]
    fn smooth_and_local_mean_keep_constants() {
        let (w, h) = (30, 20);
        let s = smooth(&vec![0.25; w * h], w, h, 4.0);
        assert!(s.iter().all(|v| (v - 0.25).abs() < 1e-5));
        let mut img = Planes::new(3, w, h);
        img.data.iter_mut().enumerate().for_each(|(i, v)| *v = if i % (w * h) % w < 10 { 0.5 } else { -1.0 });
        // the mean of only the left part is the left part's colour, wherever it is taken
        let wt: Vec<f32> = (0..w * h).map(|i| if i % w < 10 { 1.0 } else { 0.0 }).collect();
        let (m, den) = local_mean(&img, &wt, 3.0);
        assert!((m.data[5 * w + 12] - 0.5).abs() < 1e-5 && den[5 * w + 12] > 0.0);
        assert_eq!(den[5 * w + 29], 0.0);
    }
}

/// A copy of `mask` whose values inside `r` are multiplied by `scale` (the
/// size of `r`, [0, 1]); outside `r`, and where it is 0, it is unchanged, so
/// what the mask leaves alone stays alone.
pub fn scale_mask_in(mask: &GrayImage, r: Rect, scale: &[f32]) -> GrayImage {
    let mut out = mask.clone();
    let mw = mask.width() as usize;
    let raw: &mut [u8] = &mut out;
    for y in 0..r.h as usize {
        for x in 0..r.w as usize {
            let i = (r.y as usize + y) * mw + r.x as usize + x;
            let s = scale[y * r.w as usize + x].clamp(0.0, 1.0);
            raw[i] = (f32::from(raw[i]) * s).round() as u8;
        }
    }
    out
}
