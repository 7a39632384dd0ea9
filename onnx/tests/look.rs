//! What makes the added subject look photographed there, through the
//! library API with the real ONNX Runtime: its shadow falls on the ground
//! under it, it takes on the scene's light, its outline stays as sharp as
//! the photo's at any size, and Blend works on a subject the user placed.

mod common;

use common::*;
use image::{DynamicImage, GrayImage, Rgb, RgbImage};
use pie::{AddRequest, Device, Library, Look, NoProgress};

fn opts() -> AddRequest {
    AddRequest {
        seed: 1,
        steps: Some(10),
        strength: Some(0.3),
        threads: Some(1),
        device: Device::Cpu,
        ..Default::default()
    }
}

fn lib() -> (tempfile::TempDir, Library) {
    ort();
    let d = synthetic_library();
    let l = Library::open(Some(d.path().to_path_buf())).unwrap();
    (d, l)
}

fn luma(p: &Rgb<u8>) -> f32 {
    0.299 * f32::from(p.0[0]) + 0.587 * f32::from(p.0[1]) + 0.114 * f32::from(p.0[2])
}

/// Rows of the ball (its footprint: pixels much redder than the scene).
fn ball_rows(o: &RgbImage) -> (u32, u32) {
    let red: Vec<u32> =
        o.enumerate_pixels().filter(|(_, _, p)| p.0[0] > 150 && p.0[2] < 90).map(|(_, y, _)| y).collect();
    (*red.iter().min().expect("the ball is there"), *red.iter().max().unwrap())
}

#[test]
fn the_shadow_darkens_the_ground_under_the_subject_inside_the_selection_and_nothing_above_it() {
    let (_d, l) = lib();
    let b = l.load("ball").unwrap();
    let scene = DynamicImage::ImageRgb8(scene_rgb8(160, 140));
    let mask = rect_mask(160, 140, 30, 20, 100, 100, 0);
    let run = |shadow: f32| {
        let look = Look { shadow, ..Look::default() };
        pie::add(&b, &scene, &mask, &AddRequest { look, ..opts() }, &mut NoProgress)
            .unwrap()
            .remove(0)
            .image
            .to_rgb8()
    };
    let (lit, shaded) = (run(0.0), run(1.0));
    let (top, bottom) = ball_rows(&shaded);
    let s = scene.to_rgb8();
    // Under the footprint, just below its base: darker than without a shadow.
    let (cx, mut darker) = (80u32, 0);
    for y in bottom + 1..(bottom + 5).min(119) {
        for x in cx - 10..cx + 10 {
            if luma(shaded.get_pixel(x, y)) < luma(lit.get_pixel(x, y)) - 8.0 {
                darker += 1;
            }
        }
    }
    assert!(darker > 30, "only {darker} pixels under the ball got darker (base at row {bottom})");
    // Above the subject (and the ring around it the model redraws) nothing
    // differs from the shadowless result, and outside the selection nothing at all.
    for y in 0..top.saturating_sub(8) {
        for x in 0..160 {
            assert_eq!(shaded.get_pixel(x, y), lit.get_pixel(x, y), "({x}, {y}) above the subject changed");
        }
    }
    for (x, y, p) in shaded.enumerate_pixels() {
        if mask.get_pixel(x, y).0[0] == 0 {
            assert_eq!(p, s.get_pixel(x, y), "({x}, {y}) outside the selection changed");
        }
    }
}

#[test]
fn the_subject_takes_on_the_scenes_light_in_part_and_keeps_its_own_colour() {
    let (_d, l) = lib();
    let b = l.load("ball").unwrap();
    // a warm, dim scene; the ball is a cool studio red
    let scene = DynamicImage::ImageRgb8(RgbImage::from_fn(160, 140, |x, y| {
        let t = ((x * 7 + y * 13) % 17) as u8;
        Rgb([60 + t, 38 + t, 15 + t])
    }));
    let mask = rect_mask(160, 140, 30, 20, 100, 100, 0);
    let run = |harmonize: f32| {
        let look = Look { harmonize, shadow: 0.0, grain: false };
        pie::add(&b, &scene, &mask, &AddRequest { look, ..opts() }, &mut NoProgress)
            .unwrap()
            .remove(0)
            .image
            .to_rgb8()
    };
    let (own, lit) = (run(0.0), run(0.5));
    let mean = |o: &RgbImage| {
        let ps: Vec<[f32; 3]> = (50..90)
            .flat_map(|y| (70..90).map(move |x| (x, y)))
            .map(|(x, y)| o.get_pixel(x, y).0.map(f32::from))
            .collect();
        [0, 1, 2].map(|c| ps.iter().map(|p| p[c]).sum::<f32>() / ps.len() as f32)
    };
    let (a, b) = (mean(&own), mean(&lit));
    let bright = |p: [f32; 3]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    assert!(bright(b) < bright(a) - 5.0, "not dimmed: {a:?} -> {b:?}");
    assert!(b[0] > b[1] + 40.0, "no longer red: {b:?}");
}

/// Sharpest step of the red channel across a row segment.
fn max_step(o: &RgbImage, y: u32, xs: std::ops::Range<u32>) -> f32 {
    xs.map(|x| (f32::from(o.get_pixel(x + 1, y).0[0]) - f32::from(o.get_pixel(x, y).0[0])).abs())
        .fold(0.0, f32::max)
}

#[test]
fn on_a_large_photo_the_outline_is_as_sharp_as_a_paste_at_the_photos_resolution() {
    let (_d, l) = lib();
    let b = l.load("ball").unwrap();
    // 1200 px: the synthetic concept works at 64 px, so far below 1:1
    let (w, h) = (1200u32, 900u32);
    let scene = DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |_, _| Rgb([51, 128, 204])));
    let mask = rect_mask(w, h, 300, 150, 600, 600, 0);
    let look = Look { harmonize: 0.0, shadow: 0.0, grain: false };
    let added =
        pie::add(&b, &scene, &mask, &AddRequest { look, ..opts() }, &mut NoProgress).unwrap().remove(0);
    // the small cut-out blown up to 600 px: the user is told it will look soft
    assert!(added.enlarged.is_some_and(|f| f > pie::SOFT_ENLARGEMENT), "{:?}", added.enlarged);
    let out = added.image.to_rgb8();
    // the ball's left and right edges on its middle row: one pixel's step, as a paste's
    let (top, bottom) = ball_rows(&out);
    let y = (top + bottom) / 2;
    let row: Vec<u32> = (300..900).filter(|&x| out.get_pixel(x, y).0[0] > 150).collect();
    let (left, right) = (row[0], *row.last().unwrap());
    let full = 230.0 - 51.0;
    for (edge, name) in [(left, "left"), (right, "right")] {
        let step = max_step(&out, y, edge.saturating_sub(3)..edge + 3);
        assert!(step > 0.6 * full, "{name} edge at x {edge}: sharpest step {step} of {full}");
    }
}

#[test]
fn blend_fits_a_pasted_subject_and_changes_only_it_and_the_scene_just_around_and_under_it() {
    let (_d, l) = lib();
    let b = l.load("meadow").unwrap();
    let (w, h) = (160u32, 140u32);
    let scene = scene_rgb8(w, h);
    // the user pasted a blue-lit red square at x 60..100, y 40..90
    let mut pasted = scene.clone();
    let mut m = GrayImage::new(w, h);
    for y in 40..90 {
        for x in 60..100 {
            pasted.put_pixel(x, y, Rgb([200, 60, 120]));
            m.put_pixel(x, y, image::Luma([255]));
        }
    }
    let pasted = DynamicImage::ImageRgb8(pasted);
    let mut outs = Vec::new();
    pie::blend_each(&b, &pasted, &m, &opts(), &mut NoProgress, &mut |o| {
        // the user scaled it themselves: nothing to say about its resolution
        assert_eq!(o.enlarged, None);
        outs.push(o);
        Ok(())
    })
    .unwrap();
    let out = outs.remove(0).image.to_rgb8();
    let p = pasted.to_rgb8();
    let mut inside_changed = 0;
    for (x, y, px) in out.enumerate_pixels() {
        let near = (50..110).contains(&x) && (30..108).contains(&y);
        if !near {
            assert_eq!(px, p.get_pixel(x, y), "({x}, {y}) far from the subject changed");
        } else if m.get_pixel(x, y).0[0] > 0 && px != p.get_pixel(x, y) {
            inside_changed += 1;
        }
    }
    assert!(inside_changed > 40 * 50 / 2, "the subject was hardly adapted: {inside_changed} pixels");
    // and it is still there, still reddish
    let c = out.get_pixel(80, 65).0;
    assert!(c[0] > c[1] + 30, "{c:?}");
    // a mask with nothing in it, or of another size, is refused
    for bad in [GrayImage::new(w, h), GrayImage::new(10, 10)] {
        let e = pie::blend_each(&b, &pasted, &bad, &opts(), &mut NoProgress, &mut |_| Ok(())).unwrap_err();
        assert_eq!(e.kind(), pie::ErrorKind::BadInput, "{e}");
    }
}
