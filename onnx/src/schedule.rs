//! The noise schedule from the bundle, and the DDIM/DDPM update.

use crate::manifest::Schedule;

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
        let mut ts: Vec<usize> = (1..=n).rev().map(|k| ((t_start as f64) * k as f64 / n as f64).round() as usize).collect();
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
        let sl = NoiseSchedule::from_manifest(&Schedule { beta_schedule: "scaled_linear".into(), beta_start: 0.00085, beta_end: 0.012, ..Schedule {
            kind: "ddpm".into(), num_train_timesteps: 1000, beta_schedule: String::new(), beta_start: 0.0, beta_end: 0.0, prediction_type: "epsilon".into() } });
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
}
