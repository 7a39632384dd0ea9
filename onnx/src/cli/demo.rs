//! `pie demo`: everything end to end on pictures drawn here, so it needs
//! no photos and no network.

use std::path::Path;

use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use pie::{AddRequest, Device, Error, Library, Result, TrainOptions};
use serde_json::json;

use super::progress::CliProgress;

/// A small deterministic hash for texture, so the demo is the same everywhere.
fn hash(x: u32, y: u32) -> f32 {
    let mut h = x.wrapping_mul(374_761_393) ^ y.wrapping_mul(668_265_263);
    h = (h ^ (h >> 13)).wrapping_mul(1_274_126_177);
    (h ^ (h >> 16)) as f32 / u32::MAX as f32
}

/// A meadow under an evening sky, with a low hill line.
fn scene() -> RgbImage {
    let (w, h) = (256u32, 176u32);
    RgbImage::from_fn(w, h, |x, y| {
        let fx = x as f32 / w as f32;
        let horizon = 90.0 + 10.0 * (fx * 6.0).sin() + 6.0 * (fx * 17.0).cos();
        let n = hash(x, y) - 0.5;
        let c = if (y as f32) < horizon {
            let t = y as f32 / horizon;
            [60.0 + 150.0 * t, 110.0 + 90.0 * t, 200.0 - 20.0 * t]
        } else {
            let d = (y as f32 - horizon) / (h as f32 - horizon);
            let stripe = ((y as f32 * 0.9 + (x as f32 * 0.2).sin() * 3.0).sin() * 0.5 + 0.5) * 25.0;
            [70.0 + 40.0 * d + stripe * 0.4, 120.0 + 30.0 * d + stripe, 50.0 + 10.0 * d]
        };
        Rgb(c.map(|v| (v + n * 30.0).clamp(0.0, 255.0) as u8))
    })
}

/// A red ball with a highlight, and its mask.
fn subject() -> (RgbaImage, GrayImage) {
    let s = 96u32;
    let mut mask = GrayImage::new(s, s);
    let img = RgbaImage::from_fn(s, s, |x, y| {
        let (dx, dy) = ((x as f32 - 47.5) / 40.0, (y as f32 - 47.5) / 40.0);
        let r2 = dx * dx + dy * dy;
        if r2 > 1.0 {
            return Rgba([90, 140, 60, 255]);
        }
        mask.put_pixel(x, y, Luma([255]));
        let light = (1.0 - ((dx + 0.35).powi(2) + (dy + 0.35).powi(2)).sqrt()).max(0.0);
        let shade = 0.55 + 0.45 * (1.0 - r2).sqrt();
        let hi = 150.0 * light * light;
        let [r, g, b] = [200.0 * shade + 55.0 * light, 30.0 * shade + hi, 30.0 * shade + hi]
            .map(|v: f32| v.clamp(0.0, 255.0) as u8);
        Rgba([r, g, b, 255])
    });
    (img, mask)
}

/// A feathered rectangle on the meadow.
fn selection(w: u32, h: u32) -> GrayImage {
    let (x0, y0, x1, y1) = (110.0f32, 104.0f32, 174.0f32, 168.0f32);
    GrayImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
        let d = (fx - x0).min(x1 - fx).min(fy - y0).min(y1 - fy);
        Luma([((d / 4.0).clamp(0.0, 1.0) * 255.0) as u8])
    })
}

pub fn run(out: &Path, device: Device, trainer_args: &[String], json: bool) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io("cannot create the demo folder", out, e))?;
    let save = |img: &dyn Fn(&Path) -> image::ImageResult<()>, name: &str| -> Result<std::path::PathBuf> {
        let p = out.join(name);
        img(&p).map_err(|e| Error::bad(format!("cannot write {}: {e}", p.display())))?;
        Ok(p)
    };
    let sc = scene();
    let (sub, sub_mask) = subject();
    let sel = selection(sc.width(), sc.height());
    let scene_p = save(&|p| sc.save(p), "scene.png")?;
    let subject_p = save(&|p| sub.save(p), "subject.png")?;
    let mask_p = save(&|p| sub_mask.save(p), "subject-mask.png")?;
    let sel_p = save(&|p| sel.save(p), "selection.png")?;

    // Its own library, so the demo never touches the user's concepts.
    let lib = Library::open(Some(out.join("library")))?;
    let topts = TrainOptions {
        quick: true,
        device,
        force: true,
        extra_args: trainer_args.to_vec(),
        ..Default::default()
    };
    let mut p = CliProgress::new(json, "demo: scene");
    p.note("learning the demo scene (quick)");
    pie::train::learn_scene(&lib, &scene_p, "demo-scene", &topts, &mut p)?;
    p.finish();
    let mut p = CliProgress::new(json, "demo: subject");
    p.note("learning the demo subject (quick)");
    pie::train::learn_subject(&lib, &subject_p, "demo-scene", "demo-ball", Some(&mask_p), &topts, &mut p)?;
    p.finish();
    let request = AddRequest { variants: 3, device, ..Default::default() };
    let outs = super::add(&lib, &scene_p, &sel_p, "demo-ball", &out.join("result.png"), &request, json)?;
    let files: Vec<_> = outs.iter().map(|o| o.path.clone()).collect();
    let list = files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    super::say(
        json,
        &format!(
            "demo done: {list}\n(inputs: {}, {}, {}; concepts in {})",
            scene_p.display(),
            subject_p.display(),
            sel_p.display(),
            lib.path().display()
        ),
        json!({"event": "done", "outputs": files, "folder": out}),
    );
    Ok(())
}
