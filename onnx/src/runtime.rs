//! Initialising the ONNX Runtime library (found by [`crate::locations`]), and choosing the device.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use once_cell::sync::OnceCell;
use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use crate::locations::{Context, ORT_VERSION};
use crate::{Error, Result};

pub use crate::device::Device;

/// The loaded library.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeInfo {
    pub library: PathBuf,
    pub version: String,
    /// Whether the library was built with the CUDA execution provider.
    pub has_cuda_ep: bool,
}

struct Loaded {
    env: Environment,
    info: RuntimeInfo,
}

static RUNTIME: OnceCell<Loaded> = OnceCell::new();
/// The reason `auto` fell back to the CPU, reported once per process.
static FALLBACK_SAID: Mutex<bool> = Mutex::new(false);

/// Loads the library once per process.
pub fn init() -> Result<RuntimeInfo> {
    Ok(loaded()?.info.clone())
}

fn loaded() -> Result<&'static Loaded> {
    RUNTIME.get_or_try_init(|| {
        let path = Context::current().ort_library()?.path;
        // A library that is not what it says (wrong symbols, a broken API
        // table) makes ort panic; to the user that is a missing runtime.
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(&path)));
        std::panic::set_hook(quiet);
        r.unwrap_or_else(|_| {
            Err(Error::Unavailable(format!(
                "the ONNX Runtime library {} is broken (it failed while loading); reinstall it with `bash build/onnxruntime.sh cpu` \
                 or set ORT_DYLIB_PATH to a working ONNX Runtime {ORT_VERSION}",
                path.display()
            )))
        })
    })
}

fn load(path: &std::path::Path) -> Result<Loaded> {
    {
        let path = path.to_path_buf();
        let builder = ort::init_from(&path).map_err(|e| {
            Error::Unavailable(format!("cannot load the ONNX Runtime library {}: {e}", path.display()))
        })?;
        let env = builder.with_name("pie").build().map_err(|e| {
            Error::Unavailable(format!("cannot initialise ONNX Runtime ({}): {e}", path.display()))
        })?;
        let version = ort::info()
            .split(',')
            .find_map(|kv| kv.trim().strip_prefix("git-branch=rel-").map(str::to_string))
            .unwrap_or_else(|| ORT_VERSION.to_string());
        let has_cuda_ep = ep::CUDA::is_available().unwrap_or(false);
        Ok(Loaded { env, info: RuntimeInfo { library: path, version, has_cuda_ep } })
    }
}

/// Threads for one inference: all cores but one, so GIMP stays responsive.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).saturating_sub(1).max(1)
}

/// The most ONNX Runtime threads pie starts: more only cost memory and
/// switching, and an unbounded count would let one option exhaust the machine.
pub fn max_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).saturating_mul(4).min(256)
}

/// A session on the device that is really used, and why.
pub struct Denoiser {
    pub session: Session,
    pub device: Device,
    /// Set when `auto` fell back to the CPU: the reason, for the user.
    pub note: Option<String>,
}

fn builder(threads: usize) -> Result<ort::session::builder::SessionBuilder> {
    let env = &loaded()?.env;
    let ie = |e: ort::Error| Error::internal(format!("ONNX Runtime session options: {e}"));
    Session::builder(env)
        .map_err(ie)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| ie(e.into()))?
        .with_intra_threads(threads)
        .map_err(|e| ie(e.into()))?
        .with_inter_threads(1)
        .map_err(|e| ie(e.into()))
}

/// Whether CUDA works here, and if not, why (without loading a model).
pub fn probe_cuda() -> Result<std::result::Result<(), String>> {
    let info = init()?;
    if !info.has_cuda_ep {
        return Ok(Err(format!(
            "the ONNX Runtime library {} is a CPU-only build (use the CUDA build: `bash build/onnxruntime.sh cuda`)",
            info.library.display()
        )));
    }
    preload_cuda_libraries();
    let b = builder(1)?;
    match b.with_execution_providers([ep::CUDA::default().with_device_id(0).build().error_on_failure()]) {
        Ok(_) => Ok(Ok(())),
        Err(e) => Ok(Err(format!("the CUDA execution provider failed to start: {}", trimmed(&e)))),
    }
}

/// Where a graph comes from: a file of a bundle, or bytes pie wrote itself.
#[derive(Clone, Copy)]
pub enum ModelSource<'a> {
    File(&'a Path),
    /// The bytes and a name for messages.
    Bytes(&'a [u8], &'a str),
}

impl ModelSource<'_> {
    fn label(&self) -> String {
        match self {
            ModelSource::File(p) => p.display().to_string(),
            ModelSource::Bytes(_, name) => name.to_string(),
        }
    }

    fn commit(&self, b: &mut ort::session::builder::SessionBuilder) -> ort::Result<Session> {
        match self {
            ModelSource::File(p) => b.commit_from_file(p),
            ModelSource::Bytes(bytes, _) => b.commit_from_memory(bytes),
        }
    }
}

/// Opens the model on `device`. `Cuda` fails if CUDA cannot be used;
/// `Auto` falls back to the CPU and says why in `note` (once per process).
pub fn open(model: &Path, device: Device, threads: Option<usize>) -> Result<Denoiser> {
    open_with(ModelSource::File(model), device, threads, None)
}

/// [`open`] for any [`ModelSource`]. `cuda_graph: Some(dims)` asks the CUDA
/// execution provider to capture the graph on its first runs and replay it after
/// (every input and output must then be bound to fixed device memory); `dims`
/// fixes the model's free dimensions by name (e.g. `("N", 2)`), so ONNX Runtime
/// folds the shape computations it would otherwise keep on the CPU: a CUDA graph
/// can only hold CUDA nodes.
pub fn open_with(
    model: ModelSource<'_>,
    device: Device,
    threads: Option<usize>,
    cuda_graph: Option<&[(&str, i64)]>,
) -> Result<Denoiser> {
    let threads = threads.unwrap_or_else(default_threads).max(1);
    let cpu_load = |b: &mut ort::session::builder::SessionBuilder| {
        model
            .commit(b)
            .map_err(|e| Error::internal(format!("ONNX Runtime cannot load {}: {e}", model.label())))
    };
    if device == Device::Cpu {
        return Ok(Denoiser { session: cpu_load(&mut builder(threads)?)?, device: Device::Cpu, note: None });
    }
    let why = match probe_cuda()? {
        Err(why) => why,
        Ok(()) => match cuda_session(model, threads, cuda_graph)? {
            Ok(session) => return Ok(Denoiser { session, device: Device::Cuda, note: None }),
            Err(why) => why,
        },
    };
    if device == Device::Cuda {
        return Err(Error::CudaUnavailable(why));
    }
    let mut said = FALLBACK_SAID.lock().unwrap_or_else(|p| p.into_inner());
    let note = (!*said).then(|| format!("running on the CPU: {why}"));
    *said = true;
    Ok(Denoiser { session: cpu_load(&mut builder(threads)?)?, device: Device::Cpu, note })
}

/// [`open_with`] for a graph that is best captured in a CUDA graph, fixing
/// `dims`: `Some(true)` insists (as `open_with` would), `Some(false)` never
/// captures, `None` captures where the session runs on CUDA and ONNX Runtime
/// accepts the graph for capture, and otherwise opens it without (on CUDA
/// still), saying why in the note. Returns whether it is captured.
pub fn open_captured(
    model: ModelSource<'_>,
    device: Device,
    threads: Option<usize>,
    dims: &[(&str, i64)],
    want: Option<bool>,
) -> Result<(Denoiser, bool)> {
    match want {
        Some(false) => Ok((open_with(model, device, threads, None)?, false)),
        Some(true) => {
            let d = open_with(model, device, threads, Some(dims))?;
            let on = d.device == Device::Cuda;
            Ok((d, on))
        }
        None => {
            if device == Device::Cpu || probe_cuda()?.is_err() {
                return Ok((open_with(model, device, threads, None)?, false));
            }
            let n = threads.unwrap_or_else(default_threads).max(1);
            match cuda_session(model, n, Some(dims))? {
                Ok(session) => Ok((Denoiser { session, device: Device::Cuda, note: None }, true)),
                Err(why) => {
                    let mut d = open_with(model, device, threads, None)?;
                    if d.device == Device::Cuda {
                        d.note = Some(format!("no CUDA graph for {}: {why}", model.label()));
                    }
                    Ok((d, false))
                }
            }
        }
    }
}

/// A CUDA session, or why there is none.
fn cuda_session(
    model: ModelSource<'_>,
    threads: usize,
    cuda_graph: Option<&[(&str, i64)]>,
) -> Result<std::result::Result<Session, String>> {
    let cuda = ep::CUDA::default()
        .with_device_id(0)
        .with_cuda_graph(cuda_graph.is_some())
        .build()
        .error_on_failure();
    // No `session.disable_cpu_ep_fallback`: ONNX Runtime itself puts the small
    // shape computations of a real exported UNet (Shape, Gather, Concat on int64)
    // on the CPU, and that flag refuses such a graph outright. "cuda" still means
    // the CUDA provider runs the model or the command fails; it never falls back
    // to a whole-CPU session.
    let mut b = match builder(threads)?.with_execution_providers([cuda]) {
        Ok(b) => b,
        Err(e) => return Ok(Err(format!("the CUDA execution provider failed to start: {}", trimmed(&e)))),
    };
    for (name, size) in cuda_graph.unwrap_or_default() {
        b = match b.with_dimension_override(*name, *size) {
            Ok(b) => b,
            Err(e) => return Ok(Err(format!("cannot fix the dimension {name} to {size}: {}", trimmed(&e)))),
        };
    }
    Ok(model.commit(&mut b).map_err(|e| format!("cannot run {} on CUDA: {}", model.label(), trimmed(&e))))
}

/// ONNX Runtime's messages end in a newline; ours continue after them.
fn trimmed(e: &dyn std::fmt::Display) -> String {
    e.to_string().trim().to_string()
}

static CUDA_PRELOAD: OnceCell<Option<String>> = OnceCell::new();

/// Where the CUDA 13 and cuDNN 9 libraries were preloaded from, if anywhere.
pub fn cuda_libraries() -> Option<String> {
    CUDA_PRELOAD.get().cloned().flatten()
}

/// The CUDA provider needs cuBLAS/cudart 13 and cuDNN 9. A machine with a GPU
/// often has them only inside the trainer's PyTorch environment (the
/// `nvidia-*-cu13` wheels): load them from there before the provider looks,
/// so the GPU works without LD_LIBRARY_PATH (where: [`Context::cuda_library_dirs`]).
fn preload_cuda_libraries() {
    CUDA_PRELOAD.get_or_init(|| {
        let dirs = Context::current().cuda_library_dirs().map(|(d, _)| d).unwrap_or_default();
        let mut from: Vec<String> = Vec::new();
        // Each one that is there; one that is missing is named by the provider itself, later.
        for name in ep::cuda::CUDA_DYLIBS.iter().chain(ep::cuda::CUDNN_DYLIBS) {
            let Some(p) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) else { continue };
            let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else { continue };
            // SAFETY: dlopen of a shared library by path; the handle is kept for the
            // life of the process, as the provider will link against it.
            let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if !h.is_null() {
                let dir = p.parent().map(|d| d.display().to_string()).unwrap_or_default();
                if !from.contains(&dir) {
                    from.push(dir);
                }
            }
        }
        (!from.is_empty()).then(|| from.join(", "))
    });
}

/// A session output as an array of exactly the shape `expect`; the shape it
/// has when that is another.
pub(crate) fn shaped<'v, D: ndarray::Dimension>(
    v: ndarray::ArrayViewD<'v, f32>,
    expect: &[usize],
) -> std::result::Result<ndarray::ArrayView<'v, f32, D>, Vec<usize>> {
    if v.shape() != expect {
        return Err(v.shape().to_vec());
    }
    v.into_dimensionality::<D>().map_err(|_| expect.to_vec())
}
