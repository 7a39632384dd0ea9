#![allow(dead_code)]
//! Figures for issue 12 item 8: see Cargo.toml.

#[path = "../../../onnx/src/imageops.rs"]
mod imageops;
use fast_image_resize as fr;
use image::{ImageBuffer, Luma};
use imageops as hand;
use std::time::Instant;

type Fimg = ImageBuffer<Luma<f32>, Vec<f32>>;

/// A plane in [0, 1]: smooth gradients plus a deterministic high-frequency texture.
fn plane(w: usize, h: usize) -> Vec<f32> {
    let mut s: u32 = 12345;
    (0..w * h)
        .map(|i| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            let (x, y) = ((i % w) as f32 / w as f32, (i / w) as f32 / h as f32);
            let n = (s >> 8) as f32 / (1u32 << 24) as f32;
            (0.35 + 0.3 * (6.0 * x).sin() * (4.0 * y).cos() + 0.3 * n).clamp(0.0, 1.0)
        })
        .collect()
}

fn mask(w: usize, h: usize) -> Vec<bool> {
    // An ellipse plus a rectangle: the footprint-like shapes pie measures.
    (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f32 / w as f32 - 0.5, (i / w) as f32 / h as f32 - 0.55);
            x * x / 0.09 + y * y / 0.12 < 1.0 || ((i % w) > w / 8 && (i % w) < w / 4 && (i / w) > h / 3)
        })
        .collect()
}

fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..reps {
        let t = Instant::now();
        let o = f();
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
        out = Some(o);
    }
    (best, out.unwrap())
}

fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let mut mx = 0.0f32;
    let mut sum = 0.0f64;
    let mut n = 0usize;
    for (x, y) in a.iter().zip(b) {
        if x.is_infinite() && y.is_infinite() {
            continue;
        }
        let d = (x - y).abs();
        mx = mx.max(d);
        sum += d as f64;
        n += 1;
    }
    (mx, (sum / n.max(1) as f64) as f32)
}

fn fir(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize, r: &mut fr::Resizer) -> Vec<f32> {
    let bytes: Vec<u8> = src.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let s = fr::images::Image::from_vec_u8(sw as u32, sh as u32, bytes, fr::PixelType::F32).unwrap();
    let mut d = fr::images::Image::new(dw as u32, dh as u32, fr::PixelType::F32);
    let opt = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    r.resize(&s, &mut d, &opt).unwrap();
    d.buffer().chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn main() {
    let mut rz = fr::Resizer::new();
    println!("resize (triangle, widening when shrinking), best of N, ms; diff vs hand-written (max / mean)");
    for &(sw, sh, dw, dh, reps) in &[
        (2048usize, 2048usize, 512usize, 512usize, 5usize),
        (512, 512, 2048, 2048, 5),
        (2048, 2048, 1365, 1365, 5),
        (200, 150, 64, 48, 200),
        (64, 48, 200, 150, 200),
        (200, 150, 133, 100, 200),
    ] {
        let src = plane(sw, sh);
        let (th, hv) = time(reps, || hand::resize_plane(&src, sw, sh, dw, dh));
        let img = Fimg::from_raw(sw as u32, sh as u32, src.clone()).unwrap();
        let (ti, iv) = time(reps, || {
            image::imageops::resize(&img, dw as u32, dh as u32, image::imageops::FilterType::Triangle)
        });
        let (tf, fv) = time(reps, || fir(&src, sw, sh, dw, dh, &mut rz));
        let (im, ia) = diff(&hv, iv.as_raw());
        let (fm, fa) = diff(&hv, &fv);
        println!(
            "  {sw}x{sh} -> {dw}x{dh}: hand {th:.3}  image {ti:.3} (diff {im:.2e}/{ia:.2e})  fast_image_resize {tf:.3} (diff {fm:.2e}/{fa:.2e})"
        );
    }
    println!("box blur, edges clamped (hand) vs image::fast_blur (3 boxes ~ gaussian) vs smooth; ms");
    for &(w, h, r, reps) in &[(2048usize, 2048usize, 8usize, 3usize), (200, 150, 2, 200), (64, 48, 1, 500)] {
        let src = plane(w, h);
        let (tb, bv) = time(reps, || hand::box_blur(&src, w, h, r));
        let (ts, sv) = time(reps, || hand::smooth(&src, w, h, r as f32));
        let img = Fimg::from_raw(w as u32, h as u32, src.clone()).unwrap();
        let (tf, fv) = time(reps, || image::imageops::fast_blur(&img, r as f32));
        let (tg, gv) = time(reps, || imageproc::filter::gaussian_blur_f32(&img, r as f32));
        let (sm, sa) = diff(&sv, fv.as_raw());
        let (gm, ga) = diff(&sv, gv.as_raw());
        let _ = bv;
        println!(
            "  {w}x{h} r={r}: box_blur {tb:.3}  smooth {ts:.3}  image::fast_blur {tf:.3} (vs smooth {sm:.2e}/{sa:.2e})  imageproc::gaussian_blur_f32 {tg:.3} (vs smooth {gm:.2e}/{ga:.2e})"
        );
    }
    println!(
        "distance inside (chamfer 3-4, hand) vs imageproc euclidean_squared_distance_transform + sqrt; ms"
    );
    for &(w, h, reps) in &[(2048usize, 2048usize, 3usize), (200, 150, 200)] {
        let m = mask(w, h);
        let (th, hv) = time(reps, || hand::distance_inside(&m, w, h));
        // imageproc measures the distance to the nearest nonzero pixel: the outside is the foreground.
        let g = image::GrayImage::from_raw(
            w as u32,
            h as u32,
            m.iter().map(|&v| if v { 0 } else { 255 }).collect(),
        )
        .unwrap();
        let (te, ev) = time(reps, || {
            let d = imageproc::distance_transform::euclidean_squared_distance_transform(&g);
            d.as_raw().iter().map(|v| v.sqrt() as f32).collect::<Vec<f32>>()
        });
        let (em, ea) = diff(&hv, &ev);
        println!("  {w}x{h}: chamfer {th:.3}  imageproc euclidean {te:.3} (diff {em:.3}/{ea:.3} px)");
    }
}
