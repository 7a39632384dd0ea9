//! Where pie's things live on disk, and what chose each place: the concept
//! library, the build cache, the ONNX Runtime library, the trainer's Python
//! and the CUDA libraries. The one module that reads the environment
//! variables naming them; `runtime` and `train` ask here.
//!
//! Every answer is worked out from a [`Context`], a snapshot of those
//! variables and of the executable's folder, so the precedence rules are
//! plain functions that tests can give their own snapshot.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Error, Result};

/// The ONNX Runtime version this pie is built for (the `api-31` feature
/// refuses older). Written once, in `build/ort-version`, which the set-up
/// scripts read too.
pub const ORT_VERSION: &str = include_str!("../../build/ort-version").trim_ascii();

/// The variables a [`Context`] takes from the process environment.
const VARS: &[&str] = &[
    "HOME",
    "PIE_HOME",
    "XDG_DATA_HOME",
    "PIE_CACHE",
    "XDG_CACHE_HOME",
    "ORT_DYLIB_PATH",
    "PIE_TRAINER_PYTHON",
    "PIE_TRAINER_PATH",
    "PIE_CUDA_LIBS",
    "PIE_PRECISION",
];

/// The repair for an installed pie whose own files went missing.
pub const REINSTALL: &str = "Run pie's install.sh again from the pie source folder";

/// What chose a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A command-line option, such as `--library`.
    Option(&'static str),
    /// An environment variable naming the place itself.
    Var(&'static str),
    /// The default under another variable (`$XDG_CACHE_HOME/pie`, `~/.cache/pie`).
    Under(&'static str),
    /// The ONNX Runtime library lying beside the executable (as in the plug-in's folder).
    BesideExecutable,
    /// What install.sh put under `<prefix>/lib/pie`, next to `<prefix>/bin/pie`.
    Installed,
    /// What the build scripts put in the cache (`bash build/...`).
    BuildCache,
    /// The CUDA libraries of the trainer's PyTorch environment.
    TrainerEnvironment,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Option(o) => write!(f, "{o}"),
            Origin::Var(v) => write!(f, "{v}"),
            Origin::Under(v) => write!(f, "default under {v}"),
            Origin::BesideExecutable => f.write_str("beside the executable"),
            Origin::Installed => f.write_str("installed"),
            Origin::BuildCache => f.write_str("build cache"),
            Origin::TrainerEnvironment => f.write_str("the trainer's environment"),
        }
    }
}

impl Origin {
    /// Why this place, as a phrase: "from PIE_CACHE", "the default under HOME".
    pub fn reason(&self) -> String {
        match self {
            Origin::Option(n) | Origin::Var(n) => format!("from {n}"),
            Origin::Under(v) => format!("the default under {v}"),
            other => other.to_string(),
        }
    }
}

impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A place and what chose it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Located {
    pub path: PathBuf,
    pub from: Origin,
}

impl Located {
    fn new(path: PathBuf, from: Origin) -> Located {
        Located { path, from }
    }
}

/// How the trainer was found, for `pie doctor` and error messages.
#[derive(Debug, Clone, Serialize)]
pub struct TrainerEnv {
    pub python: PathBuf,
    /// What chose it: PIE_TRAINER_PYTHON, installed, build cache.
    pub source: Origin,
    /// `$PIE_TRAINER_PATH`: the trainer's source folder, put first on `sys.path`;
    /// without it the environment's installed `pie_trainer` runs.
    pub pythonpath: Option<PathBuf>,
}

impl TrainerEnv {
    /// The Python environment the interpreter belongs to (`<venv>/bin/python`).
    pub fn venv(&self) -> Option<&Path> {
        self.python.parent()?.parent()
    }

    /// How to repair this environment when it cannot run the trainer.
    pub fn repair(&self) -> String {
        match self.source {
            Origin::Installed => format!("{REINSTALL}: it gives the installed pie its own trainer environment"),
            Origin::Var(v) => format!(
                "Point {v} at the python of a working trainer environment (`bash build/trainer-env.sh` prints one), \
                 or unset it"
            ),
            _ => "Run `bash build/trainer-env.sh` from the pie source folder and set PIE_TRAINER_PATH to its \
                  trainer/ folder, or install pie with install.sh"
                .into(),
        }
    }
}

/// The environment variables and executable folder locations come from.
#[derive(Debug, Clone, Default)]
pub struct Context {
    vars: Vec<(&'static str, OsString)>,
    exe_dir: Option<PathBuf>,
}

impl Context {
    /// This process's variables and executable.
    pub fn current() -> Context {
        let vars = VARS.iter().filter_map(|&k| Some((k, std::env::var_os(k)?))).collect();
        let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
        Context { vars, exe_dir }
    }

    /// A made-up environment (tests): only `vars` are set.
    pub fn with(vars: &[(&'static str, &str)], exe_dir: Option<&Path>) -> Context {
        Context {
            vars: vars.iter().map(|&(k, v)| (k, OsString::from(v))).collect(),
            exe_dir: exe_dir.map(Path::to_path_buf),
        }
    }

    /// A variable's value; an empty one counts as unset.
    fn var(&self, k: &str) -> Option<PathBuf> {
        self.vars.iter().find(|(n, v)| *n == k && !v.is_empty()).map(|(_, v)| PathBuf::from(v))
    }

    /// `$PIE_PRECISION`: which denoiser graph a pixel-unet Add runs (see [`crate::precision`]).
    pub fn precision(&self) -> Option<String> {
        self.var("PIE_PRECISION").map(|v| v.to_string_lossy().into_owned())
    }

    /// `explicit` (`--library`), else `$PIE_HOME`, else `$XDG_DATA_HOME/pie`,
    /// else `~/.local/share/pie`. The folder need not exist yet.
    pub fn library(&self, explicit: Option<&Path>) -> Option<Located> {
        explicit
            .map(|p| Located::new(p.to_path_buf(), Origin::Option("--library")))
            .or_else(|| self.var("PIE_HOME").map(|p| Located::new(p, Origin::Var("PIE_HOME"))))
            .or_else(|| {
                self.var("XDG_DATA_HOME").map(|d| Located::new(d.join("pie"), Origin::Under("XDG_DATA_HOME")))
            })
            .or_else(|| {
                self.var("HOME").map(|h| Located::new(h.join(".local/share/pie"), Origin::Under("HOME")))
            })
    }

    /// `$PIE_CACHE`, else `$XDG_CACHE_HOME/pie`, else `~/.cache/pie`: where
    /// the build scripts (build/common.sh, the same rule) put ONNX Runtime
    /// and the trainer's environment. An installed pie never needs it.
    pub fn cache(&self) -> Option<Located> {
        self.var("PIE_CACHE")
            .map(|p| Located::new(p, Origin::Var("PIE_CACHE")))
            .or_else(|| {
                self.var("XDG_CACHE_HOME")
                    .map(|d| Located::new(d.join("pie"), Origin::Under("XDG_CACHE_HOME")))
            })
            .or_else(|| self.var("HOME").map(|h| Located::new(h.join(".cache/pie"), Origin::Under("HOME"))))
    }

    /// `<prefix>/lib/pie` for an executable in `<prefix>/bin`: install.sh's libraries and venv.
    pub fn installed_dir(&self) -> Option<PathBuf> {
        let prefix = self.exe_dir.as_deref()?.parent()?;
        Some(prefix.join("lib/pie"))
    }

    /// Where pie looks for the ONNX Runtime library, in order.
    pub fn ort_candidates(&self) -> Vec<Located> {
        let file = format!("libonnxruntime.so.{ORT_VERSION}");
        let mut c = Vec::new();
        if let Some(p) = self.var("ORT_DYLIB_PATH") {
            c.push(Located::new(p, Origin::Var("ORT_DYLIB_PATH")));
        }
        if let Some(dir) = &self.exe_dir {
            c.push(Located::new(dir.join(&file), Origin::BesideExecutable));
        }
        if let Some(dir) = self.installed_dir() {
            c.push(Located::new(dir.join(&file), Origin::Installed));
        }
        if let Some(cache) = self.cache() {
            for flavour in ["cuda", "cpu"] {
                let dir = cache.path.join(format!("onnxruntime/{flavour}-{ORT_VERSION}"));
                c.push(Located::new(dir.join(&file), Origin::BuildCache));
            }
        }
        c
    }

    /// The first candidate that is a file; `ORT_DYLIB_PATH`, when set, or an error.
    pub fn ort_library(&self) -> Result<Located> {
        let c = self.ort_candidates();
        if let Some(p) = self.var("ORT_DYLIB_PATH") {
            // An explicit choice that is wrong should not be silently replaced by another library.
            return if p.is_file() {
                Ok(Located::new(p, Origin::Var("ORT_DYLIB_PATH")))
            } else {
                Err(Error::Unavailable(format!("ORT_DYLIB_PATH is {}, which is not a file", p.display())))
            };
        }
        c.iter().find(|l| l.path.is_file()).cloned().ok_or_else(|| Error::Missing {
            what: format!(
                "the ONNX Runtime {ORT_VERSION} library was not found (looked at: {})",
                c.iter().map(|l| l.path.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
            fix: "Run `bash build/onnxruntime.sh cpu` (or `cuda`) from the pie source folder, or install pie with \
                  install.sh, or set ORT_DYLIB_PATH"
                .into(),
        })
    }

    /// `$PIE_TRAINER_PYTHON`, else the installed venv (`<prefix>/lib/pie/venv`),
    /// else the newest completed build-cache venv. An installed venv that is
    /// there but broken is an error that says so, never passed over for another.
    pub fn trainer(&self) -> Result<TrainerEnv> {
        let pythonpath = self.var("PIE_TRAINER_PATH");
        if let Some(p) = self.var("PIE_TRAINER_PYTHON") {
            if !p.is_file() {
                return Err(Error::Unavailable(format!(
                    "PIE_TRAINER_PYTHON is {}, which is not a file",
                    p.display()
                )));
            }
            return Ok(TrainerEnv { python: p, source: Origin::Var("PIE_TRAINER_PYTHON"), pythonpath });
        }
        let mut tried = Vec::new();
        if let Some(dir) = self.installed_dir() {
            let venv = dir.join("venv");
            let python = venv.join("bin/python");
            if python.is_file() {
                return Ok(TrainerEnv { python, source: Origin::Installed, pythonpath });
            }
            if let Some(why) = broken_venv(&venv) {
                return Err(Error::Missing {
                    what: format!("the installed trainer environment {} is broken: {why}", venv.display()),
                    fix: format!("{REINSTALL}: it gives the installed pie its own trainer environment"),
                });
            }
            tried.push(python.display().to_string());
        }
        if let Some(cache) = self.cache() {
            if let Some(v) = newest_cache_venv(&cache.path) {
                return Ok(TrainerEnv {
                    python: v.join("bin/python"),
                    source: Origin::BuildCache,
                    pythonpath,
                });
            }
            tried.push(cache.path.join("venv-*/bin/python").display().to_string());
        }
        Err(Error::Missing {
            what: format!("the trainer's Python environment was not found (looked at: {})", tried.join(", ")),
            fix: "Run `bash build/trainer-env.sh` from the pie source folder, or install pie with install.sh, or set \
                  PIE_TRAINER_PYTHON"
                .into(),
        })
    }

    /// The folders the CUDA 13 and cuDNN 9 libraries are loaded from:
    /// `PIE_CUDA_LIBS=cuda_dir:cudnn_dir`, else the `nvidia-*-cu13` wheels
    /// of the trainer's PyTorch environment. None when there is neither.
    pub fn cuda_library_dirs(&self) -> Option<(Vec<PathBuf>, Origin)> {
        if let Some(v) = self.var("PIE_CUDA_LIBS") {
            let dirs = std::env::split_paths(v.as_os_str()).collect();
            return Some((dirs, Origin::Var("PIE_CUDA_LIBS")));
        }
        let trainer = self.trainer().ok()?;
        let lib = std::fs::read_dir(trainer.venv()?.join("lib")).ok()?;
        let nvidia =
            lib.filter_map(|e| e.ok()).map(|e| e.path().join("site-packages/nvidia")).find(|p| p.is_dir())?;
        // cu13/ holds most of CUDA 13; older layouts have one folder per library.
        let mut d = vec![nvidia.join("cu13/lib"), nvidia.join("cudnn/lib")];
        if let Ok(rd) = std::fs::read_dir(&nvidia) {
            let mut rest: Vec<PathBuf> =
                rd.filter_map(|e| e.ok()).map(|e| e.path().join("lib")).filter(|p| p.is_dir()).collect();
            rest.sort();
            for r in rest {
                if !d.contains(&r) {
                    d.push(r);
                }
            }
        }
        Some((d, Origin::TrainerEnvironment))
    }

    /// Everything above, for `pie doctor`.
    pub fn report(&self, explicit_library: Option<&Path>) -> Report {
        let place = |l: Located| Place { exists: l.path.exists(), path: l.path, from: l.from };
        let chosen = self.ort_library().ok();
        Report {
            library: self.library(explicit_library).map(place),
            cache: self.cache().map(place),
            onnxruntime: self
                .ort_candidates()
                .into_iter()
                .map(|l| Candidate { chosen: chosen.as_ref() == Some(&l), place: place(l) })
                .collect(),
            trainer: self.trainer().map_err(|e| e.to_string()),
            cuda_libraries: self.cuda_library_dirs().map(|(dirs, from)| CudaDirs {
                dirs: dirs.into_iter().map(|d| Dir { exists: d.is_dir(), path: d }).collect(),
                from,
            }),
        }
    }
}

/// Why a venv that is (or is linked) there cannot run, or None when there is none at all.
fn broken_venv(venv: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(venv).ok()?;
    if meta.file_type().is_symlink() && !venv.exists() {
        let to = std::fs::read_link(venv).map(|t| t.display().to_string()).unwrap_or_default();
        return Some(format!(
            "it is a link to {to}, which no longer exists (an older install.sh linked it into the build cache, \
             which has been cleared or rebuilt since)"
        ));
    }
    let python = venv.join("bin/python");
    Some(match std::fs::read_link(&python) {
        // A venv's python is a link into the Python it was made with.
        Ok(to) if !python.exists() => {
            format!("its bin/python links to {}, which no longer exists", to.display())
        }
        _ => "it has no bin/python".into(),
    })
}

/// The newest `venv-*` of the build cache that build/python-env.sh finished.
fn newest_cache_venv(cache: &Path) -> Option<PathBuf> {
    let mut venvs: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("venv-") && !n.ends_with(".partial")
            }) && p.join(".complete").exists()
                && p.join("bin/python").is_file()
        })
        .collect();
    // Newest first, so a rebuilt environment wins over an old one.
    venvs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).and_then(|m| m.modified()).ok()));
    venvs.into_iter().next()
}

/// A place as `pie doctor` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Place {
    pub path: PathBuf,
    pub from: Origin,
    pub exists: bool,
}

/// One place the ONNX Runtime library is looked for.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    #[serde(flatten)]
    pub place: Place,
    /// The one pie loads.
    pub chosen: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dir {
    pub path: PathBuf,
    pub exists: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CudaDirs {
    /// Each folder, in the order they are looked in.
    pub dirs: Vec<Dir>,
    pub from: Origin,
}

/// Where everything is, found without loading or running any of it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub library: Option<Place>,
    pub cache: Option<Place>,
    pub onnxruntime: Vec<Candidate>,
    #[serde(serialize_with = "ok_or_error")]
    pub trainer: std::result::Result<TrainerEnv, String>,
    pub cuda_libraries: Option<CudaDirs>,
}

fn ok_or_error<S: serde::Serializer>(
    r: &std::result::Result<TrainerEnv, String>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match r {
        Ok(t) => t.serialize(s),
        Err(e) => {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry("error", e)?;
            m.end()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(l: Option<Located>) -> (String, String) {
        let l = l.expect("a location");
        (l.path.display().to_string(), l.from.to_string())
    }

    #[test]
    fn the_version_file_holds_just_a_version() {
        assert!(!ORT_VERSION.is_empty());
        assert!(
            ORT_VERSION.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
            "{ORT_VERSION:?}"
        );
        // The trainer checks its exports with the Python wheel of the same version.
        let req = include_str!("../../trainer/requirements.txt");
        assert!(
            req.lines().any(|l| l.trim() == format!("onnxruntime=={ORT_VERSION}")),
            "trainer/requirements.txt"
        );
    }

    #[test]
    fn the_library_is_the_option_then_pie_home_then_xdg_data_home_then_home() {
        let all = [("PIE_HOME", "/ph"), ("XDG_DATA_HOME", "/xd"), ("HOME", "/h")];
        let c = Context::with(&all, None);
        assert_eq!(at(c.library(Some(Path::new("/opt")))), ("/opt".into(), "--library".into()));
        assert_eq!(at(c.library(None)), ("/ph".into(), "PIE_HOME".into()));
        let c = Context::with(&[("PIE_HOME", ""), ("XDG_DATA_HOME", "/xd"), ("HOME", "/h")], None);
        assert_eq!(at(c.library(None)), ("/xd/pie".into(), "default under XDG_DATA_HOME".into()));
        let c = Context::with(&[("HOME", "/h")], None);
        assert_eq!(at(c.library(None)), ("/h/.local/share/pie".into(), "default under HOME".into()));
        assert!(Context::with(&[], None).library(None).is_none());
    }

    #[test]
    fn the_cache_is_pie_cache_then_xdg_cache_home_then_home() {
        let c = Context::with(&[("PIE_CACHE", "/pc"), ("XDG_CACHE_HOME", "/xc"), ("HOME", "/h")], None);
        assert_eq!(at(c.cache()), ("/pc".into(), "PIE_CACHE".into()));
        let c = Context::with(&[("PIE_CACHE", ""), ("XDG_CACHE_HOME", "/xc"), ("HOME", "/h")], None);
        assert_eq!(at(c.cache()), ("/xc/pie".into(), "default under XDG_CACHE_HOME".into()));
        let c = Context::with(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")], None);
        assert_eq!(at(c.cache()), ("/h/.cache/pie".into(), "default under HOME".into()));
        assert!(Context::with(&[], None).cache().is_none());
    }

    #[test]
    fn onnx_runtime_is_looked_for_in_order_and_an_explicit_path_is_never_replaced() {
        let d = tempfile::tempdir().unwrap();
        let file = format!("libonnxruntime.so.{ORT_VERSION}");
        let exe = d.path().join("prefix/bin");
        let cache = d.path().join("xdg");
        let c = Context::with(&[("XDG_CACHE_HOME", cache.to_str().unwrap())], Some(&exe));
        let names: Vec<(PathBuf, String)> =
            c.ort_candidates().into_iter().map(|l| (l.path, l.from.to_string())).collect();
        assert_eq!(
            names,
            vec![
                (exe.join(&file), "beside the executable".into()),
                (d.path().join("prefix/lib/pie").join(&file), "installed".into()),
                (cache.join(format!("pie/onnxruntime/cuda-{ORT_VERSION}")).join(&file), "build cache".into()),
                (cache.join(format!("pie/onnxruntime/cpu-{ORT_VERSION}")).join(&file), "build cache".into()),
            ]
        );
        let e = c.ort_library().unwrap_err();
        assert!(matches!(e, Error::Missing { .. }) && e.to_string().contains("looked at"), "{e}");
        // The cache's CPU build, then the installed copy, win as they appear.
        let cpu = cache.join(format!("pie/onnxruntime/cpu-{ORT_VERSION}")).join(&file);
        std::fs::create_dir_all(cpu.parent().unwrap()).unwrap();
        std::fs::write(&cpu, b"").unwrap();
        assert_eq!(c.ort_library().unwrap(), Located::new(cpu.clone(), Origin::BuildCache));
        let installed = d.path().join("prefix/lib/pie").join(&file);
        std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
        std::fs::write(&installed, b"").unwrap();
        assert_eq!(c.ort_library().unwrap(), Located::new(installed.clone(), Origin::Installed));
        let wrong = d.path().join("nowhere.so");
        let c = Context::with(
            &[("XDG_CACHE_HOME", cache.to_str().unwrap()), ("ORT_DYLIB_PATH", wrong.to_str().unwrap())],
            Some(&exe),
        );
        assert_eq!(c.ort_candidates()[0], Located::new(wrong.clone(), Origin::Var("ORT_DYLIB_PATH")));
        let e = c.ort_library().unwrap_err().to_string();
        assert!(e.contains("ORT_DYLIB_PATH is") && e.contains("not a file"), "{e}");
        let c = Context::with(&[("ORT_DYLIB_PATH", cpu.to_str().unwrap())], Some(&exe));
        assert_eq!(c.ort_library().unwrap(), Located::new(cpu, Origin::Var("ORT_DYLIB_PATH")));
    }

    fn venv(dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/python"), b"").unwrap();
        std::fs::write(dir.join(".complete"), b"").unwrap();
        dir.join("bin/python")
    }

    #[test]
    fn the_trainer_is_pie_trainer_python_then_the_installed_venv_then_the_build_cache() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("prefix/bin");
        let cache = d.path().join("cache");
        let cached = venv(&cache.join("venv-0123"));
        venv(&cache.join("venv-4567.partial"));
        let vars = [("PIE_CACHE", cache.to_str().unwrap()), ("PIE_TRAINER_PATH", "/src/trainer")];
        let c = Context::with(&vars, Some(&exe));
        let t = c.trainer().unwrap();
        assert_eq!((t.python, t.source), (cached.clone(), Origin::BuildCache));
        assert_eq!(t.pythonpath.as_deref(), Some(Path::new("/src/trainer")));
        let installed = venv(&d.path().join("prefix/lib/pie/venv"));
        let t = c.trainer().unwrap();
        assert_eq!((t.python.clone(), t.source), (installed.clone(), Origin::Installed));
        assert_eq!(t.venv(), Some(d.path().join("prefix/lib/pie/venv").as_path()));
        assert!(t.repair().contains("install.sh again"), "{}", t.repair());
        let c = Context::with(&[("PIE_TRAINER_PYTHON", cached.to_str().unwrap())], Some(&exe));
        let t = c.trainer().unwrap();
        assert_eq!((t.python, t.source, t.pythonpath), (cached, Origin::Var("PIE_TRAINER_PYTHON"), None));
        let c = Context::with(&[("PIE_TRAINER_PYTHON", "/no/python")], Some(&exe));
        assert!(c.trainer().unwrap_err().to_string().contains("PIE_TRAINER_PYTHON is /no/python"));
        let c = Context::with(
            &[("PIE_CACHE", d.path().join("empty").to_str().unwrap())],
            Some(&d.path().join("x/bin")),
        );
        let e = c.trainer().unwrap_err();
        assert!(matches!(e, Error::Missing { .. }) && e.to_string().contains("was not found"), "{e}");
    }

    #[test]
    fn an_installed_venv_that_is_gone_is_reported_with_its_repair_not_passed_over() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("prefix/bin");
        let cache = d.path().join("cache");
        venv(&cache.join("venv-0123"));
        let lib = d.path().join("prefix/lib/pie");
        std::fs::create_dir_all(&lib).unwrap();
        // What an older install.sh left, after `rm -rf ~/.cache/pie`.
        std::os::unix::fs::symlink(d.path().join("cleared/venv-89ab"), lib.join("venv")).unwrap();
        let c = Context::with(&[("PIE_CACHE", cache.to_str().unwrap())], Some(&exe));
        let e = c.trainer().unwrap_err();
        let Error::Missing { what, fix } = &e else { panic!("{e:?}") };
        assert!(
            what.contains("installed trainer environment") && what.contains("no longer exists"),
            "{what}"
        );
        assert!(fix.contains("install.sh again"), "{fix}");
        std::fs::remove_file(lib.join("venv")).unwrap();
        std::fs::create_dir_all(lib.join("venv/bin")).unwrap();
        std::os::unix::fs::symlink("/gone/python3", lib.join("venv/bin/python")).unwrap();
        let e = c.trainer().unwrap_err().to_string();
        assert!(e.contains("its bin/python links to /gone/python3") && e.contains("install.sh again"), "{e}");
    }

    #[test]
    fn cuda_libraries_come_from_pie_cuda_libs_else_the_trainers_wheels() {
        let d = tempfile::tempdir().unwrap();
        let c = Context::with(&[("PIE_CUDA_LIBS", "/a:/b")], None);
        assert_eq!(
            c.cuda_library_dirs(),
            Some((vec![PathBuf::from("/a"), PathBuf::from("/b")], Origin::Var("PIE_CUDA_LIBS")))
        );
        let py = venv(&d.path().join("v"));
        let nvidia = d.path().join("v/lib/python3.11/site-packages/nvidia");
        std::fs::create_dir_all(nvidia.join("cu13/lib")).unwrap();
        std::fs::create_dir_all(nvidia.join("nccl/lib")).unwrap();
        let c = Context::with(&[("PIE_TRAINER_PYTHON", py.to_str().unwrap())], None);
        let (dirs, from) = c.cuda_library_dirs().unwrap();
        assert_eq!(from, Origin::TrainerEnvironment);
        assert_eq!(&dirs[..2], &[nvidia.join("cu13/lib"), nvidia.join("cudnn/lib")]);
        assert!(dirs.contains(&nvidia.join("nccl/lib")), "{dirs:?}");
        assert_eq!(dirs.iter().filter(|d| **d == nvidia.join("cu13/lib")).count(), 1, "{dirs:?}");
        assert!(Context::with(&[], None).cuda_library_dirs().is_none());
    }
}
