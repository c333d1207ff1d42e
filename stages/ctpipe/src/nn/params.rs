//! Parameters: created deterministically from a seed or loaded by name, and handed to model
//! code through candle's `VarBuilder`, so layers read like candle-examples
//! (`linear(vb.pp("map_layer0"), ..)`) while every initial value comes from a ChaCha stream
//! keyed by the parameter's name (candle's own initialisers draw from an unseeded generator).

use crate::rng;
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Inner {
    seed: u64,
    /// Salts the init streams (`init:<namespace>:<name>`).
    namespace: String,
    vars: BTreeMap<String, Var>,
    /// Values to load instead of initialising (a checkpoint, an init model).
    source: Option<HashMap<String, Tensor>>,
    /// Hand the network detached views of the values (see [`ParamStore::frozen`]).
    frozen: bool,
}

impl Inner {
    /// What the network gets for a parameter: the variable itself, or a detached view of it.
    fn hand_out(&self, var: &Var) -> Tensor {
        if self.frozen { var.as_tensor().detach() } else { var.as_tensor().clone() }
    }
}

/// A set of trainable parameters by name.
#[derive(Clone, Default)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
}

impl ParamStore {
    /// Parameters initialised from `seed` as the model asks for them.
    pub fn seeded(seed: u64) -> ParamStore {
        ParamStore::seeded_in(seed, "")
    }

    /// Like [`ParamStore::seeded`], with init streams salted by `namespace`.
    pub fn seeded_in(seed: u64, namespace: &str) -> ParamStore {
        ParamStore { inner: Arc::new(Mutex::new(Inner { seed, namespace: namespace.to_string(), ..Inner::default() })) }
    }

    /// Parameters taken from `tensors` by name; the model must ask for exactly these.
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> ParamStore {
        ParamStore { inner: Arc::new(Mutex::new(Inner { source: Some(tensors), ..Inner::default() })) }
    }

    /// Like [`ParamStore::from_tensors`] for a network that is only evaluated (sampling,
    /// evaluation, a distillation teacher): the network gets detached views of the values, so
    /// candle records no graph through it and frees each activation once the next layer has
    /// used it, as PyTorch's `no_grad` does. With variables, every intermediate of a forward
    /// pass stays alive until its output is dropped: the peak memory of a training step's
    /// forward, for a pass that needs none of it.
    pub fn frozen(tensors: HashMap<String, Tensor>) -> ParamStore {
        ParamStore { inner: Arc::new(Mutex::new(Inner { source: Some(tensors), frozen: true, ..Inner::default() })) }
    }

    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// Every parameter, sorted by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.inner.lock().expect("param lock").vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn num_params(&self) -> usize {
        self.inner.lock().expect("param lock").vars.values().map(|v| v.elem_count()).sum()
    }

    /// Current values by name (detached copies share storage; fine for saving).
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.inner.lock().expect("param lock").vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect()
    }

    /// After building a model from loaded values: every loaded tensor must have been used.
    pub fn check_all_used(&self) -> anyhow::Result<()> {
        let inner = self.inner.lock().expect("param lock");
        if let Some(src) = &inner.source {
            let mut unused: Vec<&String> = src.keys().filter(|k| !inner.vars.contains_key(*k)).collect();
            unused.sort();
            if !unused.is_empty() {
                anyhow::bail!(
                    "{} stored tensors are not parameters of this network (first: {}); the weights belong to another architecture",
                    unused.len(),
                    unused[0]
                );
            }
        }
        Ok(())
    }

    /// Overwrite every parameter with the values in `tensors` (same names and shapes).
    pub fn assign_from(&self, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
        let inner = self.inner.lock().expect("param lock");
        for (name, var) in &inner.vars {
            let t = tensors.get(name).ok_or_else(|| anyhow::anyhow!("missing tensor `{name}`"))?;
            if t.dims() != var.dims() {
                anyhow::bail!("tensor `{name}` has shape {:?}, expected {:?}", t.dims(), var.dims());
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

fn init_value(seed: u64, namespace: &str, name: &str, shape: &Shape, init: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
    let purpose = if namespace.is_empty() { format!("init:{name}") } else { format!("init:{namespace}:{name}") };
    let mut r = rng::stream(seed, &purpose, 0);
    let t = match init {
        Init::Const(v) => Tensor::full(v as f32, shape, dev)?,
        Init::Randn { mean, stdev } => ((rng::normal(&mut r, shape.clone(), DType::F32, dev)? * stdev)? + mean)?,
        Init::Uniform { lo, up } => ((rng::uniform(&mut r, shape.clone(), DType::F32, dev)? * (up - lo))? + lo)?,
        Init::Kaiming { dist, fan, non_linearity } => {
            let dims = shape.dims();
            let receptive: usize = dims.iter().skip(2).product();
            let fan_in = dims.get(1).copied().unwrap_or(1) * receptive;
            let fan_out = dims.first().copied().unwrap_or(1) * receptive;
            let fan = match fan {
                candle_nn::init::FanInOut::FanIn => fan_in,
                candle_nn::init::FanInOut::FanOut => fan_out,
            };
            let std = non_linearity.gain() / (fan as f64).sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Normal => (rng::normal(&mut r, shape.clone(), DType::F32, dev)? * std)?,
                candle_nn::init::NormalOrUniform::Uniform => {
                    let b = 3f64.sqrt() * std;
                    ((rng::uniform(&mut r, shape.clone(), DType::F32, dev)? * (2.0 * b))? - b)?
                }
            }
        }
    };
    t.to_dtype(dtype)
}

impl SimpleBackend for ParamStore {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut inner = self.inner.lock().expect("param lock");
        if let Some(v) = inner.vars.get(name) {
            if v.shape() != &s {
                candle_core::bail!("parameter `{name}` requested as {s:?} but exists as {:?}", v.shape());
            }
            return Ok(inner.hand_out(v));
        }
        let value = match &inner.source {
            Some(src) => {
                let t = src.get(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() })?;
                if t.shape() != &s {
                    candle_core::bail!("stored tensor `{name}` has shape {:?}, the network expects {s:?}", t.shape());
                }
                t.to_dtype(dtype)?.to_device(dev)?
            }
            None => init_value(inner.seed, &inner.namespace, name, &s, h, dtype, dev)?,
        };
        let var = Var::from_tensor(&value)?;
        let t = inner.hand_out(&var);
        inner.vars.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let inner = self.inner.lock().expect("param lock");
        inner
            .vars
            .get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        let inner = self.inner.lock().expect("param lock");
        inner.vars.contains_key(name) || inner.source.as_ref().is_some_and(|s| s.contains_key(name))
    }
}
