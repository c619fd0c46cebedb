//! Trainable low-rank adapters: `ΔW = B·A` on chosen weight matrices, `A` (`r × in`) and `B`
//! (`out × r`) as candle variables. `B` starts at zero, so a fresh adapter is the identity.
//! Optionally also trainable bias changes on the projections that write into the residual
//! stream: a merged model stores them exactly, in F32, where a 4-bit grid rounds most of `B·A`.

use anyhow::{bail, Context as _, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::BTreeMap;

/// Which projections get an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Targets {
    /// `attn_q`, `attn_k`, `attn_v`, `attn_output`
    Attn,
    /// `ffn_gate`, `ffn_up`, `ffn_down`
    Mlp,
    /// both
    All,
}

impl Targets {
    /// The tensor kinds (`blk.N.KIND.weight`) this selects.
    pub fn kinds(self) -> &'static [&'static str] {
        const ATTN: &[&str] = &["attn_q", "attn_k", "attn_v", "attn_output"];
        const MLP: &[&str] = &["ffn_gate", "ffn_up", "ffn_down"];
        const ALL: &[&str] = &[
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ];
        match self {
            Targets::Attn => ATTN,
            Targets::Mlp => MLP,
            Targets::All => ALL,
        }
    }

    /// Name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Targets::Attn => "attn",
            Targets::Mlp => "mlp",
            Targets::All => "all",
        }
    }
}

/// One adapter: `ΔW = B·A`.
pub struct Adapter {
    /// `r × in`
    pub a: Var,
    /// `out × r`
    pub b: Var,
}

impl Adapter {
    /// Rank of the adapter.
    pub fn rank(&self) -> usize {
        self.a.dim(0).unwrap_or(0)
    }

    /// The change `B·A` as its factors, multiplied out only where the matrix is stored.
    pub fn factors(&self) -> Result<crate::store::Change> {
        Ok(crate::store::Change::Product {
            b: self.b.as_tensor().flatten_all()?.to_vec1::<f32>()?,
            a: self.a.as_tensor().flatten_all()?.to_vec1::<f32>()?,
            rank: self.rank(),
        })
    }
}

/// The adapters of a model, by weight tensor name (`blk.3.ffn_down.weight`).
#[derive(Default)]
pub struct LoraSet {
    /// adapters by tensor name
    pub adapters: BTreeMap<String, Adapter>,
    /// changes to biases (added to the file's own, if any), by bias tensor name
    /// (`blk.3.ffn_down.bias`)
    pub biases: BTreeMap<String, Var>,
}

impl LoraSet {
    /// A fresh adapter (`B = 0`, `A` uniform in ±1/√in, seeded) on `name`, of shape `out × in`.
    pub fn add_fresh(
        &mut self,
        name: &str,
        n_out: usize,
        n_in: usize,
        rank: usize,
        seed: u64,
    ) -> Result<()> {
        let bound = 1.0 / (n_in as f32).sqrt();
        let mut rng = crate::generate::SplitMix::new(seed);
        let a: Vec<f32> = (0..rank * n_in)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * bound)
            .collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (rank, n_in), &Device::Cpu)?)?;
        let b = Var::zeros((n_out, rank), DType::F32, &Device::Cpu)?;
        self.adapters.insert(name.to_string(), Adapter { a, b });
        Ok(())
    }

    /// An adapter on `name` from given factors (`a`: `r × in`, `b`: `out × r`, row-major).
    pub fn add_init(&mut self, name: &str, a: Tensor, b: Tensor) -> Result<()> {
        if a.dim(0)? != b.dim(1)? {
            bail!("adapter factors of {name} disagree on the rank");
        }
        self.adapters.insert(
            name.to_string(),
            Adapter {
                a: Var::from_tensor(&a)?,
                b: Var::from_tensor(&b)?,
            },
        );
        Ok(())
    }

    /// A trainable bias change of `n` values on `name` (`blk.3.ffn_down.bias`), starting at zero.
    pub fn add_bias(&mut self, name: &str, n: usize) -> Result<()> {
        let v = Var::zeros(n, DType::F32, &Device::Cpu)?;
        self.biases.insert(name.to_string(), v);
        Ok(())
    }

    /// The bias change on `name`, if any.
    pub fn bias(&self, name: &str) -> Option<&Tensor> {
        self.biases.get(name).map(Var::as_tensor)
    }

    /// The adapter on `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Adapter> {
        self.adapters.get(name)
    }

    /// All trainable variables.
    pub fn vars(&self) -> Vec<Var> {
        self.adapters
            .values()
            .flat_map(|a| [a.a.clone(), a.b.clone()])
            .chain(self.biases.values().cloned())
            .collect()
    }

    /// Whether every adapter is the identity (`B = 0`, no bias change).
    pub fn is_zero(&self) -> Result<bool> {
        let changes = self
            .adapters
            .values()
            .map(|a| a.b.as_tensor())
            .chain(self.biases.values().map(Var::as_tensor));
        for t in changes {
            if t.abs()?.max_all()?.to_scalar::<f32>()? != 0.0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Number of trainable parameters.
    pub fn n_params(&self) -> usize {
        self.adapters
            .values()
            .map(|a| a.a.elem_count() + a.b.elem_count())
            .sum::<usize>()
            + self.biases.values().map(|b| b.elem_count()).sum::<usize>()
    }

    /// `x·Aᵀ·Bᵀ` for the adapter on `name` (None when it has none).
    pub fn apply(&self, name: &str, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(ad) = self.adapters.get(name) else {
            return Ok(None);
        };
        let dims = x.dims().to_vec();
        let n_in = *dims.last().context("scalar input")?;
        let x2 = x.reshape((x.elem_count() / n_in, n_in))?;
        let h = x2.matmul(&ad.a.as_tensor().t()?)?;
        let y = h.matmul(&ad.b.as_tensor().t()?)?;
        let mut out = dims;
        *out.last_mut().context("scalar input")? = ad.b.dim(0)?;
        Ok(Some(y.reshape(out)?))
    }
}

/// Read a LoRA adapter GGUF (`W.lora_a` `[in, r]`, `W.lora_b` `[r, out]`, F32) back into
/// adapters, llama.cpp's scale `alpha / r` (1 when alpha is 0) folded into `B`.
pub fn read_adapter(path: &std::path::Path) -> Result<LoraSet> {
    let f = gguf::GgufFile::open(path)?;
    let alpha = f
        .header()
        .metadata
        .get_f64("adapter.lora.alpha")
        .unwrap_or(0.0);
    let mut set = LoraSet::default();
    for t in &f.header().tensors {
        let Some(name) = t.name.strip_suffix(".lora_a") else {
            continue;
        };
        let b = f
            .header()
            .tensor(&format!("{name}.lora_b"))
            .with_context(|| format!("{} has no {name}.lora_b", path.display()))?;
        if t.dims.len() != 2 || b.dims.len() != 2 {
            bail!("{name}: LoRA factors must be matrices");
        }
        let (n_in, r, n_out) = (t.dims[0] as usize, t.dims[1] as usize, b.dims[1] as usize);
        let av = crate::engine::dequantize(t.ggml_type, f.tensor_data(t), t.n_elements())?;
        let bv = crate::engine::dequantize(b.ggml_type, f.tensor_data(b), b.n_elements())?;
        let scale = if alpha == 0.0 { 1.0 } else { alpha / r as f64 };
        let bt = (Tensor::from_vec(bv, (n_out, r), &Device::Cpu)? * scale)?;
        set.add_init(name, Tensor::from_vec(av, (r, n_in), &Device::Cpu)?, bt)?;
    }
    Ok(set)
}
