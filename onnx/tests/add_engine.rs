//! `pie::add` through the library API, on synthetic bundles whose denoiser
//! is exact, with the real ONNX Runtime.

mod common;

use common::*;
use image::{DynamicImage, GrayImage, Luma};
use pie::{add, AddRequest, Device, ErrorKind, Library, NoProgress, Opt, Progress, Sampler};

fn opts(seed: u64) -> AddRequest {
    AddRequest {
        seed,
        steps: Some(12),
        strength: Some(0.8),
        threads: Some(1),
        device: Device::Cpu,
        ..Default::default()
    }
}

fn setup() -> (tempfile::TempDir, Library) {
    ort();
    let d = synthetic_library();
    let l = Library::open(Some(d.path().to_path_buf())).unwrap();
    (d, l)
}

fn assert_outside_identical(a: &DynamicImage, b: &DynamicImage, mask: &GrayImage) {
    assert_eq!(a.color(), b.color());
    assert_eq!(a.dimensions_pair(), b.dimensions_pair());
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let per_px = ab.len() / (a.width() * a.height()) as usize;
    for (i, m) in mask.as_raw().iter().enumerate() {
        if *m == 0 {
            assert_eq!(
                &ab[i * per_px..(i + 1) * per_px],
                &bb[i * per_px..(i + 1) * per_px],
                "pixel {i} outside the selection changed"
            );
        }
    }
}

trait Dims {
    fn dimensions_pair(&self) -> (u32, u32);
}
impl Dims for DynamicImage {
    fn dimensions_pair(&self) -> (u32, u32) {
        (self.width(), self.height())
    }
}

#[test]
fn outside_is_bit_identical_and_inside_moves_toward_the_subject() {
    let (_d, lib) = setup();
    let b = lib.load("ball").unwrap();
    let scene = DynamicImage::ImageRgb8(scene_rgb8(160, 120));
    let mask = rect_mask(160, 120, 50, 30, 48, 48, 6);
    let out = add(&b, &scene, &mask, &opts(1), &mut NoProgress).unwrap();
    assert_eq!(out.len(), 1);
    let o = &out[0];
    assert_eq!(o.device, Device::Cpu);
    assert_outside_identical(&scene, &o.image, &mask);
    assert_eq!((o.changed.x, o.changed.y, o.changed.w, o.changed.h), (50, 30, 48, 48));
    let subject = SUBJECT_RGB.map(|v| f64::from(v) * 255.0);
    let before = mean_inside(&scene.to_rgb8(), &mask);
    let after = mean_inside(&o.image.to_rgb8(), &mask);
    // The subject stands inside the selection's feathered edge with room below for its shadow,
    // so it covers about two thirds of it.
    assert!(
        dist(after, subject) < 0.7 * dist(before, subject),
        "inside mean {after:?} did not move toward the subject {subject:?} from {before:?}"
    );
    assert!(o.stats.runtime <= o.stats.total);
}

#[test]
fn same_seed_same_result_and_different_seeds_differ() {
    let (_d, lib) = setup();
    let b = lib.load("ball").unwrap();
    let scene = DynamicImage::ImageRgb8(scene_rgb8(96, 80));
    let mask = rect_mask(96, 80, 30, 20, 32, 32, 0);
    let a = add(&b, &scene, &mask, &opts(7), &mut NoProgress).unwrap();
    let again = add(&b, &scene, &mask, &opts(7), &mut NoProgress).unwrap();
    assert!(a[0].image.as_bytes() == again[0].image.as_bytes(), "same seed, different images");
    // Seeds are the same whether asked one by one or as variants.
    let v = add(&b, &scene, &mask, &AddRequest { variants: 2, ..opts(6) }, &mut NoProgress).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].seed, v[1].seed), (6, 7));
    assert!(v[1].image.as_bytes() == a[0].image.as_bytes(), "variant 2 differs from seed 7 alone");
    assert!(v[0].image.as_bytes() != v[1].image.as_bytes(), "different seeds gave the same image");
    // DDPM reproduces too
    let p = AddRequest { sampler: Sampler::Ddpm, ..opts(3) };
    let d1 = add(&b, &scene, &mask, &p, &mut NoProgress).unwrap();
    let d2 = add(&b, &scene, &mask, &p, &mut NoProgress).unwrap();
    assert!(d1[0].image.as_bytes() == d2[0].image.as_bytes(), "DDPM: same seed, different images");
}

#[test]
fn gray_16bit_and_alpha_inputs_keep_their_type() {
    let (_d, lib) = setup();
    let b = lib.load("ball").unwrap();
    let rgb = scene_rgb8(80, 64);
    let mask = rect_mask(80, 64, 20, 16, 32, 32, 4);
    let alpha = image::RgbaImage::from_fn(80, 64, |x, y| {
        let p = rgb.get_pixel(x, y).0;
        image::Rgba([p[0], p[1], p[2], ((x * 3 + y) % 256) as u8])
    });
    let inputs = [
        DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(rgb.clone()).to_luma8()),
        DynamicImage::ImageLumaA8(DynamicImage::ImageRgba8(alpha.clone()).to_luma_alpha8()),
        DynamicImage::ImageRgb16(DynamicImage::ImageRgb8(rgb.clone()).to_rgb16()),
        DynamicImage::ImageLuma16(DynamicImage::ImageRgb8(rgb.clone()).to_luma16()),
        DynamicImage::ImageRgba8(alpha.clone()),
        DynamicImage::ImageRgba16(DynamicImage::ImageRgba8(alpha.clone()).to_rgba16()),
    ];
    for scene in inputs {
        let out = add(&b, &scene, &mask, &opts(2), &mut NoProgress).unwrap();
        let img = &out[0].image;
        assert_eq!(img.color(), scene.color());
        assert_outside_identical(&scene, img, &mask);
        assert!(img.as_bytes() != scene.as_bytes(), "{:?}: nothing changed", scene.color());
        if scene.color().has_alpha() {
            let (a, o) = (scene.to_rgba16(), img.to_rgba16());
            assert!(a.pixels().zip(o.pixels()).all(|(p, q)| p.0[3] == q.0[3]), "alpha changed");
        }
    }
}

#[test]
fn a_scene_bundle_fills_the_selection_with_scene() {
    let (_d, lib) = setup();
    let b = lib.load("meadow").unwrap();
    let mut scene = scene_rgb8(96, 80);
    for y in 30..50 {
        for x in 30..50 {
            scene.put_pixel(x, y, image::Rgb([255, 255, 0]));
        }
    }
    let scene = DynamicImage::ImageRgb8(scene);
    let mask = rect_mask(96, 80, 26, 26, 28, 28, 0);
    let out =
        add(&b, &scene, &mask, &AddRequest { strength: Some(1.0), ..opts(0) }, &mut NoProgress).unwrap();
    let after = mean_inside(&out[0].image.to_rgb8(), &mask);
    let sc = SCENE_RGB.map(|v| f64::from(v) * 255.0);
    assert!(dist(after, sc) < 20.0, "{after:?} vs scene {sc:?}");
}

#[test]
fn bad_selections_have_specific_errors() {
    let (_d, lib) = setup();
    let b = lib.load("ball").unwrap();
    let scene = DynamicImage::ImageRgb8(scene_rgb8(64, 48));
    let check = |mask: GrayImage, want: &str| {
        let e = add(&b, &scene, &mask, &opts(0), &mut NoProgress).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
        assert!(e.to_string().contains(want), "{e} should say {want:?}");
    };
    check(GrayImage::new(64, 47), "must be the same size");
    check(GrayImage::new(64, 48), "empty");
    check(GrayImage::from_pixel(64, 48, Luma([255])), "whole image");
    check(GrayImage::from_pixel(64, 48, Luma([1])), "whole image");
    check(rect_mask(64, 48, 10, 10, 3, 20, 0), "selection is 3x20");
    let mask = rect_mask(64, 48, 10, 10, 20, 20, 0);
    for (o, want, cli) in [
        (AddRequest { steps: Some(0), ..opts(0) }, Opt::Steps, "--steps 0 is out of range (1 to 1000)"),
        (AddRequest { strength: Some(0.0), ..opts(0) }, Opt::Strength, "--strength 0 is out of range"),
        (AddRequest { strength: Some(1.5), ..opts(0) }, Opt::Strength, "--strength 1.5 is out of range"),
        (AddRequest { guidance: Some(f32::NAN), ..opts(0) }, Opt::Guidance, "--guidance NaN"),
        (AddRequest { variants: 0, ..opts(0) }, Opt::Variants, "--variants 0"),
        (AddRequest { threads: Some(0), ..opts(0) }, Opt::Threads, "--threads 0 is out of range (1 to"),
    ] {
        let e = add(&b, &scene, &mask, &o, &mut NoProgress).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput);
        // Structured, so that the plug-in can name the option by its own label.
        assert!(matches!(e, pie::Error::OutOfRange { option, .. } if option == want), "{e:?}");
        assert!(e.to_string().contains(cli), "{e}");
    }
}

#[test]
fn cuda_where_there_is_none_fails_clearly() {
    let (_d, lib) = setup();
    if pie::runtime::probe_cuda().map(|r| r.is_ok()).unwrap_or(false) {
        eprintln!("SKIP: CUDA works on this machine");
        return;
    }
    let b = lib.load("ball").unwrap();
    let scene = DynamicImage::ImageRgb8(scene_rgb8(64, 48));
    let mask = rect_mask(64, 48, 10, 10, 20, 20, 0);
    let e =
        add(&b, &scene, &mask, &AddRequest { device: Device::Cuda, ..opts(0) }, &mut NoProgress).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.to_string().contains("--device cuda: CUDA cannot be used here"), "{e}");
    // auto falls back and says so, or runs on the CPU without a word when asked for it
    let out =
        add(&b, &scene, &mask, &AddRequest { device: Device::Auto, ..opts(0) }, &mut NoProgress).unwrap();
    assert_eq!(out[0].device, Device::Cpu);
}

struct CancelAt(usize, usize);
impl Progress for CancelAt {
    fn update(&mut self, _f: f64, _t: &str) {
        self.1 += 1;
    }
    fn cancelled(&self) -> bool {
        self.1 >= self.0
    }
}

#[test]
fn cancelling_stops_between_steps() {
    let (_d, lib) = setup();
    let b = lib.load("ball").unwrap();
    let scene = DynamicImage::ImageRgb8(scene_rgb8(64, 48));
    let mask = rect_mask(64, 48, 10, 10, 20, 20, 0);
    let e = add(&b, &scene, &mask, &opts(0), &mut CancelAt(4, 0)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
}

#[test]
fn a_small_selection_in_a_large_photo_works_on_a_small_crop() {
    let (_d, lib) = setup();
    let b = lib.load("ball").unwrap();
    let scene = DynamicImage::ImageRgb8(scene_rgb8(2400, 1600));
    let mask = rect_mask(2400, 1600, 1200, 800, 160, 160, 10);
    let out = add(&b, &scene, &mask, &opts(0), &mut NoProgress).unwrap();
    let s = out[0].stats;
    assert!(s.work_w <= 128 && s.work_h <= 128, "worked at {}x{}", s.work_w, s.work_h);
    assert_outside_identical(&scene, &out[0].image, &mask);
}

/// Mean |horizontal gradient| inside the selection: how sharp it is.
fn sharpness(img: &image::RgbImage, mask: &GrayImage) -> f64 {
    let (mut s, mut n) = (0.0, 0.0);
    for y in 0..img.height() {
        for x in 1..img.width() {
            if mask.get_pixel(x, y).0[0] == 255 && mask.get_pixel(x - 1, y).0[0] == 255 {
                s += (f64::from(img.get_pixel(x, y).0[1]) - f64::from(img.get_pixel(x - 1, y).0[1])).abs();
                n += 1.0;
            }
        }
    }
    s / n
}

#[test]
fn detail_is_put_back_below_one_to_one() {
    let (_d, lib) = setup();
    let b = lib.load("meadow").unwrap();
    let scene = DynamicImage::ImageRgb8(scene_rgb8(1200, 800));
    let mask = rect_mask(1200, 800, 500, 300, 200, 200, 0);
    let with = add(&b, &scene, &mask, &AddRequest { detail: Some(1.0), ..opts(0) }, &mut NoProgress).unwrap();
    let without =
        add(&b, &scene, &mask, &AddRequest { detail: Some(0.0), ..opts(0) }, &mut NoProgress).unwrap();
    assert!(with[0].stats.work_w < 400, "expected sampling below 1:1");
    let (sw, so, ss) = (
        sharpness(&with[0].image.to_rgb8(), &mask),
        sharpness(&without[0].image.to_rgb8(), &mask),
        sharpness(&scene.to_rgb8(), &mask),
    );
    assert!(sw > 2.0 * so && sw > 0.5 * ss, "sharpness with detail {sw}, without {so}, scene {ss}");
}

/// Where CUDA works (a GPU machine with the CUDA build of ONNX Runtime):
/// it really runs there, and agrees with the CPU.
#[test]
fn cuda_where_there_is_one_matches_the_cpu() {
    let (_d, lib) = setup();
    if !pie::runtime::probe_cuda().map(|r| r.is_ok()).unwrap_or(false) {
        eprintln!("SKIP: CUDA is not usable here");
        return;
    }
    let b = lib.load("ball").unwrap();
    let scene = DynamicImage::ImageRgb8(scene_rgb8(160, 120));
    let mask = rect_mask(160, 120, 50, 30, 48, 48, 6);
    let gpu =
        add(&b, &scene, &mask, &AddRequest { device: Device::Cuda, ..opts(4) }, &mut NoProgress).unwrap();
    let gpu2 =
        add(&b, &scene, &mask, &AddRequest { device: Device::Cuda, ..opts(4) }, &mut NoProgress).unwrap();
    let cpu = add(&b, &scene, &mask, &opts(4), &mut NoProgress).unwrap();
    assert_eq!(gpu[0].device, Device::Cuda);
    assert_outside_identical(&scene, &gpu[0].image, &mask);
    assert!(gpu[0].image.as_bytes() == gpu2[0].image.as_bytes(), "CUDA: same seed, different images");
    let diff: f64 = gpu[0]
        .image
        .as_bytes()
        .iter()
        .zip(cpu[0].image.as_bytes())
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / gpu[0].image.as_bytes().len() as f64;
    assert!(diff < 1.0, "CUDA and CPU differ by {diff} per sample on average");
}

#[test]
fn add_each_hands_over_each_variant_as_it_is_made_and_stops_on_a_sink_error() {
    let (_d, lib) = setup();
    let b = lib.load("ball").unwrap();
    let scene = DynamicImage::ImageRgb8(scene_rgb8(96, 72));
    let mask = rect_mask(96, 72, 30, 20, 32, 32, 4);
    let o = AddRequest { variants: 3, steps: Some(4), ..opts(5) };
    let all = add(&b, &scene, &mask, &o, &mut NoProgress).unwrap();
    let mut seen = Vec::new();
    pie::add_each(&b, &scene, &mask, &o, &mut NoProgress, &mut |out| {
        seen.push((out.seed, out.image));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [5, 6, 7]);
    assert!(seen.iter().zip(&all).all(|(s, a)| s.1 == a.image), "add_each and add disagree");
    // a sink that fails (a full disk) stops the work at once
    let mut calls = 0;
    let e = pie::add_each(&b, &scene, &mask, &o, &mut NoProgress, &mut |_| {
        calls += 1;
        Err(pie::Error::bad("disk full"))
    })
    .unwrap_err();
    assert_eq!((calls, e.to_string()), (1, "disk full".to_string()));
}

/// A wide selection: the ball (a disc, 3:4) fits its height, centred, and
/// leaves the selection's sides to the scene.
/// The look (light, grain, shadow) is off, so the subject's own pixels can be checked.
fn wide_ball_add(seed: u64, strength: f32) -> (DynamicImage, GrayImage, DynamicImage) {
    let (_d, lib) = setup();
    let b = lib.load("ball").unwrap();
    let scene = DynamicImage::ImageRgb8(scene_rgb8(200, 124));
    let mask = rect_mask(200, 124, 40, 30, 120, 64, 0);
    let look = pie::Look { harmonize: 0.0, shadow: 0.0, grain: false };
    let out =
        add(&b, &scene, &mask, &AddRequest { strength: Some(strength), look, ..opts(seed) }, &mut NoProgress)
            .unwrap();
    (scene, mask, out.into_iter().next().unwrap().image)
}

#[test]
fn with_a_subject_only_its_footprint_and_a_thin_ring_change() {
    let (scene, mask, out) = wide_ball_add(3, 0.8);
    assert_outside_identical(&scene, &out, &mask);
    let (s, o) = (scene.to_rgb8(), out.to_rgb8());
    // The disc is 47 px wide (x 77..124); the ring and its fade are 6% of the
    // selection's short side (about 4 px). The rest of the selection is kept.
    let mut changed = 0;
    for y in 30..94 {
        for x in 40..160 {
            if s.get_pixel(x, y) != o.get_pixel(x, y) {
                changed += 1;
                assert!((70..132).contains(&x), "pixel ({x}, {y}) changed, far from the subject");
            }
        }
    }
    assert!(changed > 47 * 64 / 2, "only {changed} pixels changed");
    // The subject's inside keeps the subject's own pixels (the model only
    // redraws where subject and scene meet).
    let want = SUBJECT_RGB.map(|v| (v * 255.0).round() as i32);
    for (x, y) in [(100, 62), (96, 56), (104, 68)] {
        let p = o.get_pixel(x, y).0.map(i32::from);
        assert!(
            p.iter().zip(want).all(|(a, b)| (a - b).abs() <= 2),
            "({x}, {y}) is {p:?}, not the subject's {want:?}"
        );
    }
}
