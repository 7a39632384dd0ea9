//! One denoising step after the UNet, as a tiny ONNX graph, so it runs on
//! the same device as the UNet and the latents never leave it between steps:
//! classifier-free guidance, the scheduler's linear update
//! ([`crate::schedule::LinearStep`]), the known latents re-imposed outside
//! the mask, and the next UNet input (the batch of two, with an inpainting
//! UNet's extra channels). [`reference`] is the same step in Rust.

use crate::onnxfile::write::{model, node, node_attrs, tensor_i64, value_info, Msg};
use crate::onnxfile::FLOAT;

/// The shapes the step graph is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepShape {
    /// UNet batch: 2 with guidance (negative, prompt), else 1.
    pub batch: usize,
    /// Latent channels (noise_pred's).
    pub latent: usize,
    /// The UNet's input channels: `latent`, or 2·latent+1 for inpainting.
    pub unet_in: usize,
    pub h: usize,
    pub w: usize,
}

impl StepShape {
    pub fn cond_channels(&self) -> usize {
        self.unet_in - self.latent
    }
}

/// Names of the coefficients in `coef`, in order (see `LinearStep::coef`).
const COEF: [&str; 9] = ["g", "a", "b", "p", "q", "r", "s", "ka", "kn"];

/// The step graph. Inputs: `noise_pred[B,lc,h,w]`, `x`, `x0_prev`, `z`,
/// `known`, `noise0` (each `[1,lc,h,w]`), `keep[1,1,h,w]` (1 = known),
/// `cond[1,C−lc,h,w]` (inpainting only), `coef[9]`. Outputs: `x_next`,
/// `x0` (`[1,lc,h,w]`) and `sample[B,C,h,w]`, the next UNet input.
pub fn graph(s: &StepShape) -> Vec<u8> {
    let (b, lc, h, w) = (s.batch as i64, s.latent as i64, s.h as i64, s.w as i64);
    let lat = |n: &str| value_info(n, FLOAT, &[(1, ""), (lc, ""), (h, ""), (w, "")]);
    let mut nodes: Vec<Msg> = Vec::new();
    let mut inits: Vec<Msg> = Vec::new();
    for (i, c) in COEF.iter().enumerate() {
        let idx = format!("idx_{c}");
        inits.push(tensor_i64(&idx, &[], &[i as i64]));
        nodes.push(node("Gather", &["coef", &idx], &[c]));
    }
    if s.batch == 2 {
        nodes.push(node("Split", &["noise_pred"], &["uncond", "cond_pred"]));
        nodes.push(node("Sub", &["cond_pred", "uncond"], &["diff"]));
        nodes.push(node("Mul", &["diff", "g"], &["gdiff"]));
        nodes.push(node("Add", &["uncond", "gdiff"], &["out"]));
    } else {
        nodes.push(node("Identity", &["noise_pred"], &["out"]));
    }
    for (a, b_, o) in [
        ("a", "x", "ax"),
        ("b", "out", "bo"),
        ("p", "x", "px"),
        ("q", "x0", "qx0"),
        ("r", "x0_prev", "rx1"),
        ("s", "z", "sz"),
        ("ka", "known", "kk"),
        ("kn", "noise0", "kz"),
    ] {
        nodes.push(node("Mul", &[a, b_], &[o]));
    }
    nodes.push(node("Add", &["ax", "bo"], &["x0"]));
    nodes.push(node("Add", &["px", "qx0"], &["t1"]));
    nodes.push(node("Add", &["t1", "rx1"], &["t2"]));
    nodes.push(node("Add", &["t2", "sz"], &["xn"]));
    nodes.push(node("Add", &["kk", "kz"], &["kt"]));
    nodes.push(node("Sub", &["kt", "xn"], &["kd"]));
    nodes.push(node("Mul", &["keep", "kd"], &["kdm"]));
    nodes.push(node("Add", &["xn", "kdm"], &["x_next"]));
    let one = if s.cond_channels() > 0 {
        nodes.push(node_attrs("Concat", &["x_next", "cond"], &["one"], &[("axis", 1)]));
        "one"
    } else {
        "x_next"
    };
    if s.batch == 2 {
        nodes.push(node_attrs("Concat", &[one, one], &["sample"], &[("axis", 0)]));
    } else {
        nodes.push(node("Identity", &[one], &["sample"]));
    }
    let mut inputs = vec![
        value_info("noise_pred", FLOAT, &[(b, ""), (lc, ""), (h, ""), (w, "")]),
        lat("x"),
        lat("x0_prev"),
        lat("z"),
        lat("known"),
        lat("noise0"),
        value_info("keep", FLOAT, &[(1, ""), (1, ""), (h, ""), (w, "")]),
    ];
    if s.cond_channels() > 0 {
        inputs.push(value_info("cond", FLOAT, &[(1, ""), (s.cond_channels() as i64, ""), (h, ""), (w, "")]));
    }
    inputs.push(value_info("coef", FLOAT, &[(COEF.len() as i64, "")]));
    let outputs = [
        lat("x_next"),
        lat("x0"),
        value_info("sample", FLOAT, &[(b, ""), (s.unet_in as i64, ""), (h, ""), (w, "")]),
    ];
    model(&nodes, &inits, &inputs, &outputs)
}

/// The step graph's arithmetic in Rust (f32, as the graph), for tests.
/// Returns (x_next, x0).
#[allow(clippy::too_many_arguments)]
pub fn reference(
    noise_pred: &[f32],
    batch: usize,
    x: &[f32],
    x0_prev: &[f32],
    z: &[f32],
    known: &[f32],
    noise0: &[f32],
    keep: &[f32],
    coef: &[f32; 9],
) -> (Vec<f32>, Vec<f32>) {
    let n = x.len();
    let plane = keep.len();
    let [g, a, b, p, q, r, s, ka, kn] = *coef;
    let mut xn = vec![0.0; n];
    let mut x0 = vec![0.0; n];
    for i in 0..n {
        let out =
            if batch == 2 { noise_pred[i] + g * (noise_pred[n + i] - noise_pred[i]) } else { noise_pred[i] };
        x0[i] = a * x[i] + b * out;
        let v = p * x[i] + q * x0[i] + r * x0_prev[i] + s * z[i];
        let k = ka * known[i] + kn * noise0[i];
        xn[i] = v + keep[i % plane] * (k - v);
    }
    (xn, x0)
}
