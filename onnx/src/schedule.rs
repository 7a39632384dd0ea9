//! The noise schedule from the bundle, and the DDIM/DDPM update; the
//! diffusers-equivalent DDIM and DPM-Solver++(2M) schedulers, written as one
//! linear update so the CPU loop and the device's step graph share them.

use crate::manifest::{Schedule, Spacing};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    /// ᾱ_t for t = 0..T-1, in f64 so long products stay exact enough.
    pub alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    pub fn from_manifest(s: &Schedule) -> NoiseSchedule {
        let n = s.num_train_timesteps as usize;
        let step = |i: usize| if n > 1 { i as f64 / (n - 1) as f64 } else { 0.0 };
        let betas: Vec<f64> = (0..n)
            .map(|i| match s.beta_schedule.as_str() {
                "scaled_linear" => {
                    let (a, b) = (s.beta_start.sqrt(), s.beta_end.sqrt());
                    let v = a + (b - a) * step(i);
                    v * v
                }
                _ => s.beta_start + (s.beta_end - s.beta_start) * step(i),
            })
            .collect();
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        NoiseSchedule { alphas_cumprod }
    }

    pub fn len(&self) -> usize {
        self.alphas_cumprod.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alphas_cumprod.is_empty()
    }

    /// ᾱ at `t`; `None` (before t = 0) is the clean image, ᾱ = 1.
    pub fn abar(&self, t: Option<usize>) -> f64 {
        t.map_or(1.0, |t| self.alphas_cumprod[t])
    }

    /// The descending timesteps to visit. `steps` is the density of the full
    /// schedule (as in img2img): `strength` in (0, 1] picks the starting noise
    /// level (1 = pure noise) and only `round(steps × strength)` of them run,
    /// evenly spaced from there down (fewer only if the schedule has fewer levels).
    pub fn timesteps(&self, steps: usize, strength: f32) -> Vec<usize> {
        let last = self.len().saturating_sub(1);
        let t_start = ((f64::from(strength.clamp(0.0, 1.0)) * last as f64).round() as usize).min(last);
        let n = ((steps as f64 * f64::from(strength.clamp(0.0, 1.0))).round() as usize).max(1);
        let mut ts: Vec<usize> =
            (1..=n).rev().map(|k| ((t_start as f64) * k as f64 / n as f64).round() as usize).collect();
        ts.dedup();
        if ts.is_empty() {
            ts.push(0);
        }
        ts
    }
}

/// Coefficients of one step from ᾱ_t to ᾱ_prev with DDIM's η (0 = DDIM,
/// 1 = DDPM's posterior variance):
/// x_prev = √ᾱ_prev·x̂0 + c_eps·ε + σ·z, x̂0 = (x − √(1−ᾱ_t)·ε)/√ᾱ_t.
#[derive(Debug, Clone, Copy)]
pub struct StepCoef {
    pub sqrt_abar: f64,
    pub sqrt_one_minus: f64,
    pub sqrt_abar_prev: f64,
    pub c_eps: f64,
    pub sigma: f64,
}

pub fn step_coef(abar_t: f64, abar_prev: f64, eta: f64) -> StepCoef {
    let var = if abar_prev >= 1.0 {
        0.0
    } else {
        ((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)).max(0.0)
    };
    let sigma = eta * var.sqrt();
    StepCoef {
        sqrt_abar: abar_t.sqrt(),
        sqrt_one_minus: (1.0 - abar_t).sqrt(),
        sqrt_abar_prev: abar_prev.sqrt(),
        c_eps: (1.0 - abar_prev - sigma * sigma).max(0.0).sqrt(),
        sigma,
    }
}

/// How each step treats noise (`--sampler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    /// Deterministic (η = 0), x̂0 clamped to [-1, 1].
    #[default]
    Ddim,
    /// Ancestral, DDPM's posterior variance (η = 1) on the same timesteps.
    Ddpm,
}

impl std::str::FromStr for Sampler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Sampler> {
        match s.to_ascii_lowercase().as_str() {
            "ddim" => Ok(Sampler::Ddim),
            "ddpm" => Ok(Sampler::Ddpm),
            _ => Err(Error::bad(format!("unknown sampler {s:?}: use ddim or ddpm"))),
        }
    }
}

/// Which scheduler runs the denoising steps (`--scheduler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum Scheduler {
    /// diffusers' DDIMScheduler: "leading" spacing plus steps_offset,
    /// set_alpha_to_one = False, no clipping; η from `--sampler` (ddim 0, ddpm 1).
    #[default]
    #[serde(rename = "ddim")]
    Ddim,
    /// diffusers' DPMSolverMultistepScheduler: dpmsolver++, order 2,
    /// "linspace" spacing, final sigma 0 (first order on the first and last step).
    #[serde(rename = "dpm++2m")]
    DpmSolver2M,
}

impl std::str::FromStr for Scheduler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Scheduler> {
        match s.to_ascii_lowercase().as_str() {
            "ddim" => Ok(Scheduler::Ddim),
            "dpm++2m" | "dpmpp2m" | "dpm-solver++" => Ok(Scheduler::DpmSolver2M),
            _ => Err(Error::bad(format!("unknown scheduler {s:?}: use ddim or dpm++2m"))),
        }
    }
}

impl Scheduler {
    pub const ALL: [Scheduler; 2] = [Scheduler::Ddim, Scheduler::DpmSolver2M];

    /// Its name on the command line and in the plug-in's arguments.
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Ddim => "ddim",
            Scheduler::DpmSolver2M => "dpm++2m",
        }
    }

    /// Whether concepts of `backbone` can be sampled with it.
    pub fn supported_by(self, backbone: crate::Backbone) -> bool {
        backbone.engine().schedulers().contains(&self)
    }

    /// Whether [`Sampler::Ddpm`]'s fresh noise every step fits its update.
    pub fn takes_fresh_noise(self) -> bool {
        self == Scheduler::Ddim
    }
}

impl std::fmt::Display for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    V,
}

impl Prediction {
    pub fn from_manifest(s: &Schedule) -> Prediction {
        if s.prediction_type == "v_prediction" {
            Prediction::V
        } else {
            Prediction::Epsilon
        }
    }
}

/// One step as a linear update, whatever the scheduler:
///
/// - `out` = the guided model output,
/// - x̂0 = a·x + b·out (the data prediction),
/// - x_next = p·x + q·x̂0 + r·x̂0_prev + s·z (z fresh standard noise),
/// - then, where the image is known: x_next = keep_a·known + keep_n·noise0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearStep {
    /// The timestep fed to the model.
    pub t: i64,
    pub a: f64,
    pub b: f64,
    pub p: f64,
    pub q: f64,
    pub r: f64,
    pub s: f64,
    pub keep_a: f64,
    pub keep_n: f64,
}

impl LinearStep {
    /// The coefficients in the order of the step graph's `coef` input
    /// (guidance first): [g, a, b, p, q, r, s, keep_a, keep_n].
    pub fn coef(&self, guidance: f32) -> [f32; 9] {
        [
            guidance,
            self.a as f32,
            self.b as f32,
            self.p as f32,
            self.q as f32,
            self.r as f32,
            self.s as f32,
            self.keep_a as f32,
            self.keep_n as f32,
        ]
    }
}

/// The steps of one img2img run and the level the start is noised to.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// ᾱ of the first timestep: start = √ᾱ·x0 + √(1−ᾱ)·noise.
    pub abar_start: f64,
    pub steps: Vec<LinearStep>,
}

/// Where a checkpoint's scheduler puts its inference timesteps (diffusers'
/// config: `steps_offset`, `timestep_spacing`, `set_alpha_to_one`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    pub steps_offset: usize,
    /// `None`: each scheduler's default, as diffusers' `from_config` gives it
    /// when the config names none (DDIM leading, DPM-Solver linspace).
    pub spacing: Option<Spacing>,
    /// DDIM's last step lands on ᾱ = 1 instead of ᾱ_0.
    pub set_alpha_to_one: bool,
}

impl Timing {
    pub fn from_manifest(s: &Schedule) -> Timing {
        Timing {
            steps_offset: s.steps_offset.unwrap_or(0) as usize,
            spacing: s.timestep_spacing,
            set_alpha_to_one: s.set_alpha_to_one.unwrap_or(false),
        }
    }
}

/// The timesteps diffusers' DDIMScheduler visits for `n` steps.
pub fn ddim_timesteps(train_steps: usize, n: usize, steps_offset: usize, spacing: Spacing) -> Vec<usize> {
    let n = n.max(1);
    let last = train_steps - 1;
    let ts: Vec<usize> = match spacing {
        Spacing::Leading => {
            let ratio = train_steps / n;
            (0..n).rev().map(|i| i * ratio + steps_offset).collect()
        }
        Spacing::Trailing => trailing(train_steps, n),
        // np.linspace(0, T - 1, n).round()[::-1]
        Spacing::Linspace => {
            let div = (n - 1).max(1) as f64;
            (0..n).rev().map(|i| round_half_even(last as f64 * i as f64 / div) as usize).collect()
        }
    };
    in_range(ts, train_steps)
}

/// The timesteps diffusers' DPMSolverMultistepScheduler visits for `n` steps.
pub fn dpm_timesteps(train_steps: usize, n: usize, steps_offset: usize, spacing: Spacing) -> Vec<usize> {
    let n = n.max(1);
    let last = (train_steps - 1) as f64;
    let ts: Vec<usize> = match spacing {
        // np.linspace(0, T-1, n+1).round()[::-1][:-1]; numpy rounds half to even.
        Spacing::Linspace => {
            (1..=n).rev().map(|i| round_half_even(last * i as f64 / n as f64) as usize).collect()
        }
        // (np.arange(0, n + 1) * (T // (n + 1))).round()[::-1][:-1] + steps_offset
        Spacing::Leading => {
            let ratio = train_steps / (n + 1);
            (1..=n).rev().map(|i| i * ratio + steps_offset).collect()
        }
        Spacing::Trailing => trailing(train_steps, n),
    };
    in_range(ts, train_steps)
}

/// "trailing" spacing, the same for both schedulers: np.round(np.arange(T, 0, -T / n)) - 1,
/// n of them (numpy's float arange can yield one more, past 0).
fn trailing(train_steps: usize, n: usize) -> Vec<usize> {
    let ratio = train_steps as f64 / n as f64;
    (0..n)
        .map(|i| (round_half_even(train_steps as f64 - i as f64 * ratio) as usize).saturating_sub(1))
        .collect()
}

/// Descending timesteps kept below T and without repeats: with as many steps as
/// levels the offset would push the first past the end (diffusers fails there),
/// and rounding can repeat one (a zero-length step would divide by 0).
fn in_range(mut ts: Vec<usize>, train_steps: usize) -> Vec<usize> {
    ts.iter_mut().for_each(|t| *t = (*t).min(train_steps - 1));
    ts.dedup();
    ts
}

fn round_half_even(v: f64) -> f64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - v.signum()
    } else {
        r
    }
}

/// The part of the `n` timesteps that img2img with `strength` runs, as the
/// diffusers pipelines cut it: the last min(floor(n·strength), n) (at least one).
pub fn strength_cut(ts: &[usize], strength: f32) -> &[usize] {
    let n = ts.len();
    // strength is an f32 (0.7 is 0.69999998…): a hair of slack keeps int(10 × 0.7) = 7 as in Python.
    let init = ((n as f64 * f64::from(strength) + 1e-6).floor() as usize).clamp(1, n);
    &ts[n - init..]
}

/// x̂0 = a·x + b·out at ᾱ.
fn data_prediction(abar: f64, pred: Prediction) -> (f64, f64) {
    let (sa, s1) = (abar.sqrt(), (1.0 - abar).sqrt());
    match pred {
        Prediction::Epsilon => (1.0 / sa, -s1 / sa),
        Prediction::V => (sa, -s1),
    }
}

impl NoiseSchedule {
    /// The plan of `scheduler` for `steps` (the density of the whole
    /// schedule) at `strength`, as diffusers' img2img/inpainting pipelines run it.
    pub fn plan(
        &self,
        scheduler: Scheduler,
        pred: Prediction,
        steps: usize,
        strength: f32,
        timing: Timing,
        eta: f64,
    ) -> StepPlan {
        let t_len = self.len();
        let steps = steps.clamp(1, t_len);
        let ac = &self.alphas_cumprod;
        match scheduler {
            Scheduler::Ddim => {
                let all = ddim_timesteps(
                    t_len,
                    steps,
                    timing.steps_offset,
                    timing.spacing.unwrap_or(Spacing::Leading),
                );
                let ts = strength_cut(&all, strength);
                let ratio = t_len / steps;
                let final_abar = if timing.set_alpha_to_one { 1.0 } else { ac[0] };
                let steps = ts
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| {
                        let abar = ac[t];
                        // diffusers steps to t − T/n whatever the spacing, and past 0 to the final ᾱ.
                        let prev = if t >= ratio { ac[t - ratio] } else { final_abar };
                        let var = (1.0 - prev) / (1.0 - abar) * (1.0 - abar / prev);
                        let sigma = eta * var.max(0.0).sqrt();
                        let (a, b) = data_prediction(abar, pred);
                        let p = (1.0 - prev - sigma * sigma).max(0.0).sqrt() / (1.0 - abar).sqrt();
                        let q = prev.sqrt() - p * abar.sqrt();
                        let (keep_a, keep_n) = match ts.get(i + 1) {
                            Some(&n) => (ac[n].sqrt(), (1.0 - ac[n]).sqrt()),
                            None => (1.0, 0.0),
                        };
                        LinearStep { t: t as i64, a, b, p, q, r: 0.0, s: sigma, keep_a, keep_n }
                    })
                    .collect();
                StepPlan { abar_start: ac[ts[0]], steps }
            }
            Scheduler::DpmSolver2M => {
                let all = dpm_timesteps(
                    t_len,
                    steps,
                    timing.steps_offset,
                    timing.spacing.unwrap_or(Spacing::Linspace),
                );
                let ts = strength_cut(&all, strength);
                // α_t = √ᾱ, σ_t = √(1−ᾱ), λ = ln α − ln σ; the last step goes to σ = 0.
                let lambda = |abar: f64| 0.5 * abar.ln() - 0.5 * (1.0 - abar).ln();
                let n = ts.len();
                let steps = (0..n)
                    .map(|i| {
                        let abar = ac[ts[i]];
                        let (a, b) = data_prediction(abar, pred);
                        let (keep_a, keep_n) = match ts.get(i + 1) {
                            Some(&nx) => (ac[nx].sqrt(), (1.0 - ac[nx]).sqrt()),
                            None => (1.0, 0.0),
                        };
                        if i + 1 == n {
                            // Final sigma 0: first order lands on x̂0.
                            return LinearStep {
                                t: ts[i] as i64,
                                a,
                                b,
                                p: 0.0,
                                q: 1.0,
                                r: 0.0,
                                s: 0.0,
                                keep_a,
                                keep_n,
                            };
                        }
                        let next = ac[ts[i + 1]];
                        let h = lambda(next) - lambda(abar);
                        let big_a = next.sqrt() * ((-h).exp() - 1.0);
                        let p = (1.0 - next).sqrt() / (1.0 - abar).sqrt();
                        if i == 0 {
                            LinearStep { t: ts[i] as i64, a, b, p, q: -big_a, r: 0.0, s: 0.0, keep_a, keep_n }
                        } else {
                            let h0 = lambda(abar) - lambda(ac[ts[i - 1]]);
                            let r0 = h0 / h;
                            LinearStep {
                                t: ts[i] as i64,
                                a,
                                b,
                                p,
                                q: -big_a * (1.0 + 0.5 / r0),
                                r: big_a * 0.5 / r0,
                                s: 0.0,
                                keep_a,
                                keep_n,
                            }
                        }
                    })
                    .collect();
                StepPlan { abar_start: ac[ts[0]], steps }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear() -> NoiseSchedule {
        NoiseSchedule::from_manifest(&Schedule {
            kind: "ddpm".into(),
            num_train_timesteps: 1000,
            beta_schedule: "linear".into(),
            beta_start: 1e-4,
            beta_end: 0.02,
            prediction_type: "epsilon".into(),
            steps_offset: None,
            timestep_spacing: None,
            set_alpha_to_one: None,
        })
    }

    #[test]
    fn alphas_cumprod_matches_the_ddpm_reference() {
        let s = linear();
        assert_eq!(s.len(), 1000);
        assert!((s.alphas_cumprod[0] - 0.9999).abs() < 1e-12);
        // torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=float64))[-1]
        assert!((s.alphas_cumprod[999] - 4.0358e-5).abs() < 1e-8, "{}", s.alphas_cumprod[999]);
        assert!(s.alphas_cumprod.windows(2).all(|w| w[1] < w[0]));
        let sl = NoiseSchedule::from_manifest(&Schedule {
            beta_schedule: "scaled_linear".into(),
            beta_start: 0.00085,
            beta_end: 0.012,
            ..Schedule {
                kind: "ddpm".into(),
                num_train_timesteps: 1000,
                beta_schedule: String::new(),
                beta_start: 0.0,
                beta_end: 0.0,
                prediction_type: "epsilon".into(),
                steps_offset: None,
                timestep_spacing: None,
                set_alpha_to_one: None,
            }
        });
        assert!((sl.alphas_cumprod[0] - (1.0 - 0.00085)).abs() < 1e-12);
    }

    #[test]
    fn timesteps_descend_from_the_strength() {
        let s = linear();
        let ts = s.timesteps(50, 1.0);
        assert_eq!(ts.len(), 50);
        assert_eq!(ts[0], 999);
        assert!(ts.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(*ts.last().unwrap(), 20);
        let half = s.timesteps(10, 0.5);
        assert_eq!(half[0], 500);
        assert_eq!(half.len(), 5);
        assert_eq!(s.timesteps(50, 0.7).len(), 35);
        // more steps than levels: no repeats
        let tiny = s.timesteps(2000, 0.01);
        assert!(tiny.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(tiny, (1..=10).rev().collect::<Vec<_>>());
    }

    #[test]
    fn ddim_step_is_exact_for_a_perfect_prediction() {
        let (a_t, a_p) = (0.3, 0.8);
        let c = step_coef(a_t, a_p, 0.0);
        assert_eq!(c.sigma, 0.0);
        let (x0, eps) = (0.25, -1.3);
        let x_t = a_t.sqrt() * x0 + (1.0 - a_t).sqrt() * eps;
        let x0_hat = (x_t - c.sqrt_one_minus * eps) / c.sqrt_abar;
        let prev = c.sqrt_abar_prev * x0_hat + c.c_eps * eps;
        assert!((prev - (a_p.sqrt() * x0 + (1.0 - a_p).sqrt() * eps)).abs() < 1e-12);
        // last step lands on x̂0
        let last = step_coef(a_t, 1.0, 1.0);
        assert_eq!((last.c_eps, last.sigma, last.sqrt_abar_prev), (0.0, 0.0, 1.0));
        // DDPM: variance keeps the marginal
        let d = step_coef(a_t, a_p, 1.0);
        assert!((d.c_eps * d.c_eps + d.sigma * d.sigma - (1.0 - a_p)).abs() < 1e-12);
    }

    fn sd15(pred: &str) -> (NoiseSchedule, Prediction) {
        let s = Schedule {
            kind: "ddpm".into(),
            num_train_timesteps: 1000,
            beta_schedule: "scaled_linear".into(),
            beta_start: 0.00085,
            beta_end: 0.012,
            prediction_type: pred.into(),
            steps_offset: Some(1),
            timestep_spacing: None,
            set_alpha_to_one: None,
        };
        (NoiseSchedule::from_manifest(&s), Prediction::from_manifest(&s))
    }

    /// Values from diffusers 0.42.1 (DDIMScheduler with steps_offset 1,
    /// set_alpha_to_one False; DPMSolverMultistepScheduler dpmsolver++ order 2),
    /// 10 steps at strength 0.7 as the img2img pipelines cut them, on x = [0.3, −1.2, 0.8]
    /// with the model output 0.5·x + 0.001·t − 0.2. (diffusers works in f32, hence 1e-4.)
    #[test]
    fn ddim_and_dpm_solver_match_diffusers() {
        type Case = (Scheduler, &'static str, [usize; 7], [f64; 3], [f64; 3]);
        let cases: [Case; 4] = [
            (
                Scheduler::Ddim,
                "epsilon",
                [601, 501, 401, 301, 201, 101, 1],
                [0.2001766338813883, -1.50428251050758, 0.7683296820110446],
                [0.08826064973872799, -1.6716448011263123, 0.6748958000270747],
            ),
            (
                Scheduler::DpmSolver2M,
                "epsilon",
                [699, 599, 500, 400, 300, 200, 100],
                [0.1458131575467274, -1.6314776849976478, 0.7382433986584226],
                [0.0194862169104385, -1.961411915542293, 0.6797855190048486],
            ),
            (
                Scheduler::Ddim,
                "v_prediction",
                [601, 501, 401, 301, 201, 101, 1],
                [0.2197370980814743, -1.160217205578323, 0.6797218659680735],
                [0.08575024956875407, -0.6464419194108718, 0.32981430589529626],
            ),
            (
                Scheduler::DpmSolver2M,
                "v_prediction",
                [699, 599, 500, 400, 300, 200, 100],
                [0.21917640565472948, -1.1789295944443472, 0.6852116992846584],
                [0.09295960036828474, -0.6445224538317087, 0.3387869093477489],
            ),
        ];
        assert_eq!(
            ddim_timesteps(1000, 10, 1, Spacing::Leading),
            vec![901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
        );
        let dense = dpm_timesteps(1000, 1000, 0, Spacing::Linspace);
        assert!(dense.windows(2).all(|w| w[0] > w[1]));
        let (sched, p) = sd15("epsilon");
        let sd = Timing { steps_offset: 1, ..Timing::default() };
        let plan = sched.plan(Scheduler::DpmSolver2M, p, 1000, 1.0, sd, 0.0);
        assert!(plan.steps.iter().all(|s| [s.a, s.b, s.p, s.q, s.r].iter().all(|v| v.is_finite())));
        let every = ddim_timesteps(1000, 1000, 1, Spacing::Leading);
        assert_eq!((every.len(), every[0], every[998]), (999, 999, 1));
        assert_eq!(
            dpm_timesteps(1000, 10, 1, Spacing::Linspace),
            vec![999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
        );
        for (sch, pred, ts, first, last) in cases {
            let (sched, p) = sd15(pred);
            let plan = sched.plan(sch, p, 10, 0.7, sd, 0.0);
            let got: Vec<usize> = plan.steps.iter().map(|s| s.t as usize).collect();
            assert_eq!(got, ts, "{sch} {pred}");
            let mut x = [0.3f64, -1.2, 0.8];
            let mut x0_prev = [0.0f64; 3];
            for (i, st) in plan.steps.iter().enumerate() {
                let mut x0 = [0.0; 3];
                for k in 0..3 {
                    let out = 0.5 * x[k] + 0.001 * st.t as f64 - 0.2;
                    x0[k] = st.a * x[k] + st.b * out;
                    x[k] = st.p * x[k] + st.q * x0[k] + st.r * x0_prev[k];
                }
                x0_prev = x0;
                let want = if i == 0 {
                    Some(first)
                } else if i + 1 == plan.steps.len() {
                    Some(last)
                } else {
                    None
                };
                if let Some(w) = want {
                    for k in 0..3 {
                        assert!(
                            (x[k] - w[k]).abs() < 1e-4,
                            "{sch} {pred} step {i}: {x:?} vs diffusers {w:?}"
                        );
                    }
                }
            }
            // The known latents are re-imposed at the next step's level, clean after the last.
            let l = plan.steps.last().unwrap();
            assert_eq!((l.keep_a, l.keep_n), (1.0, 0.0));
            assert!((plan.steps[0].keep_a - sched.alphas_cumprod[ts[1]].sqrt()).abs() < 1e-12);
            assert!((plan.abar_start - sched.alphas_cumprod[ts[0]]).abs() < 1e-12);
        }
    }

    /// diffusers 0.42.1, SD 1.5's schedule with steps_offset 1, 10 steps:
    /// DDIMScheduler and DPMSolverMultistepScheduler with each timestep_spacing,
    /// and DDIM at strength 0.7 with set_alpha_to_one False and True (the last
    /// step: x after it, same toy model as above).
    #[test]
    fn spacing_and_alpha_to_one_match_diffusers() {
        use Spacing::*;
        assert_eq!(
            ddim_timesteps(1000, 10, 1, Trailing),
            vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
        );
        assert_eq!(
            ddim_timesteps(1000, 10, 1, Linspace),
            vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
        );
        assert_eq!(
            dpm_timesteps(1000, 10, 1, Leading),
            vec![901, 811, 721, 631, 541, 451, 361, 271, 181, 91]
        );
        assert_eq!(
            dpm_timesteps(1000, 10, 1, Trailing),
            vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
        );
        let cases: [(Spacing, bool, [f64; 3]); 4] = [
            (Leading, false, [0.08826064973872799, -1.6716448011263123, 0.6748958000270747]),
            (Trailing, false, [-0.09000971134312362, -2.1679485344464164, 0.6026365630246409]),
            (Leading, true, [0.09284348398789319, -1.6419987090496575, 0.6711242150004101]),
            (Trailing, true, [-0.08513256815664409, -2.13028841983147, 0.5965860490682982]),
        ];
        let (sched, p) = sd15("epsilon");
        for (spacing, set_alpha_to_one, want) in cases {
            let timing = Timing { steps_offset: 1, spacing: Some(spacing), set_alpha_to_one };
            let plan = sched.plan(Scheduler::Ddim, p, 10, 0.7, timing, 0.0);
            let mut x = [0.3f64, -1.2, 0.8];
            for st in &plan.steps {
                for v in x.iter_mut() {
                    let out = 0.5 * *v + 0.001 * st.t as f64 - 0.2;
                    let x0 = st.a * *v + st.b * out;
                    *v = st.p * *v + st.q * x0;
                }
            }
            for k in 0..3 {
                assert!(
                    (x[k] - want[k]).abs() < 1e-4,
                    "{spacing:?} alpha_to_one {set_alpha_to_one}: {x:?} vs diffusers {want:?}"
                );
            }
        }
    }

    #[test]
    fn strength_cuts_like_the_diffusers_pipelines() {
        let ts: Vec<usize> = (0..10).rev().collect();
        assert_eq!(strength_cut(&ts, 0.7).len(), 7);
        assert_eq!(strength_cut(&ts, 1.0).len(), 10);
        assert_eq!(strength_cut(&ts, 0.01), &[0]);
        assert_eq!(strength_cut(&(0..50).rev().collect::<Vec<_>>(), 0.3).len(), 15);
        assert_eq!("dpm++2m".parse::<Scheduler>().unwrap(), Scheduler::DpmSolver2M);
        assert!("euler".parse::<Scheduler>().is_err());
    }

    #[test]
    fn each_backbone_names_its_schedulers() {
        use crate::Backbone;
        for s in Scheduler::ALL {
            assert_eq!(s.name().parse::<Scheduler>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::from(s.name()));
        }
        let supported =
            |b: Backbone| Scheduler::ALL.into_iter().filter(|s| s.supported_by(b)).collect::<Vec<_>>();
        assert_eq!(supported(Backbone::PixelUnet), [Scheduler::Ddim]);
        assert_eq!(supported(Backbone::Sd), Scheduler::ALL);
        // The default a request falls back to works with every backbone.
        assert!(Backbone::ALL.into_iter().all(|b| Scheduler::default().supported_by(b)));
    }
}
