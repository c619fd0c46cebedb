//! The training objective and loop: Prompt Baking's `KL(teacher ‖ student)` over the reply
//! tokens, minimised with Adam over the adapters only.

use anyhow::{bail, Context as _, Result};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use super::lora::LoraSet;
use super::student::Student;
use super::teacher::Example;

/// A padded batch of trajectories with the teacher's targets.
pub struct Batch {
    /// `batch × seq` token ids (right-padded)
    pub tokens: Tensor,
    /// flattened indices of the positions scored
    pub out_idx: Tensor,
    /// `n × k` teacher top-k ids
    pub ids: Tensor,
    /// `n × k` teacher log-probabilities
    pub logp: Tensor,
    /// `n × 1` log of the teacher's tail mass
    pub tail: Tensor,
    /// positions scored
    pub n: usize,
}

/// Build a batch from examples (all with the same top-k width).
pub fn batch(examples: &[&Example]) -> Result<Batch> {
    let t = examples.iter().map(|e| e.tokens.len()).max().unwrap_or(1);
    let b = examples.len();
    let k = examples.first().map_or(1, |e| e.logp.len() / e.n.max(1));
    let mut tokens = vec![0u32; b * t];
    let (mut out_idx, mut ids, mut logp, mut tail) = (vec![], vec![], vec![], vec![]);
    for (i, e) in examples.iter().enumerate() {
        for (slot, &tok) in tokens[i * t..].iter_mut().zip(&e.tokens) {
            *slot = tok as u32; // candle's index type; token ids are never negative
        }
        out_idx.extend((0..e.n).map(|j| (i * t + e.first + j) as u32));
        ids.extend_from_slice(&e.ids);
        logp.extend_from_slice(&e.logp);
        tail.extend_from_slice(&e.tail);
    }
    let n = out_idx.len();
    let dev = Device::Cpu;
    Ok(Batch {
        tokens: Tensor::from_vec(tokens, (b, t), &dev)?,
        out_idx: Tensor::from_vec(out_idx, n, &dev)?,
        ids: Tensor::from_vec(ids, (n, k), &dev)?,
        logp: Tensor::from_vec(logp, (n, k), &dev)?,
        tail: Tensor::from_vec(tail, (n, 1), &dev)?,
        n,
    })
}

/// Mean per-position `KL(teacher ‖ student)` over the teacher's top-k tokens and its tail.
pub fn kl_loss(logits: &Tensor, b: &Batch) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let lq = shifted.gather(&b.ids, 1)?.broadcast_sub(&lse)?; // n × k
    let q_tail = (1.0 - lq.exp()?.sum_keepdim(D::Minus1)?)?.maximum(1e-12)?;
    let p = b.logp.exp()?;
    let p_tail = b.tail.exp()?;
    let top = (p * (&b.logp - lq)?)?.sum_keepdim(D::Minus1)?;
    let rest = (p_tail * (&b.tail - q_tail.log()?)?)?;
    (top + rest)?.mean_all()
}

/// Mean KL of the student on `examples` (no gradient kept: one layer's activations held at a
/// time), in chunks of `chunk`.
pub fn mean_kl(
    student: &Student,
    lora: &LoraSet,
    examples: &[Example],
    chunk: usize,
) -> Result<f64> {
    let (mut total, mut n) = (0f64, 0usize);
    for c in examples.chunks(chunk.max(1)) {
        let refs: Vec<&Example> = c.iter().collect();
        let b = batch(&refs)?;
        let mut x = student.embed(&b.tokens)?;
        for l in 0..student.config().n_layer {
            x = student.advance(l, &x, lora)?;
        }
        let logits = student.head(&x, &b.out_idx)?.detach();
        let l = kl_loss(&logits, &b)?.to_scalar::<f32>()? as f64;
        total += l * b.n as f64;
        n += b.n;
    }
    Ok(if n > 0 { total / n as f64 } else { 0.0 })
}

/// One point of the training curve.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CurvePoint {
    /// optimizer steps done
    pub step: usize,
    /// seconds since training began
    pub elapsed_s: f64,
    /// mean training loss of the steps since the last point
    pub train_kl: f64,
    /// KL on the validation trajectories
    pub val_kl: f64,
    /// `1 − val_kl / val_kl(base)`: the share of the prompt's effect recovered on them
    pub val_recovery: f64,
}

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// optimizer steps
    pub steps: usize,
    /// trajectories per step
    pub batch: usize,
    /// trajectories per forward and backward pass (a step's gradients are summed over its
    /// passes): bounds the activations held, not what is learned
    /// (`None`: the whole batch at once)
    pub micro_batch: Option<usize>,
    /// recompute each layer's activations from its saved input during the backward pass, so
    /// that a pass holds one layer's instead of every layer's (a second forward pass's time)
    /// (`None`: no; `bake` resolves it from the model's size with
    /// [`super::options::default_recompute`])
    pub recompute: Option<bool>,
    /// Adam learning rate (decays linearly to a tenth over the run)
    pub lr: f64,
    /// validate every this many steps
    pub eval_every: usize,
    /// shuffling seed
    pub seed: u64,
    /// quantization-aware training from this step on (0: from the start)
    pub qat_from: Option<usize>,
    /// refresh the stored matrices every this many steps during quantization-aware training
    pub qat_every: usize,
}

/// Train `lora` on `train` and return the curve (validation on `val`; `val_base` is the
/// unmodified model's KL there, the prompt's effect, and `start_kl` the student's with a zero
/// adapter, which differs from it when training starts from a patched model). `progress(step, loss)` after each step. During quantization-aware
/// training `requantize` refreshes the stored matrices, also before every validation, so the
/// curve then measures the model as it will be written.
#[allow(clippy::too_many_arguments)]
pub fn train(
    student: &Student,
    lora: &LoraSet,
    train: &[Example],
    val: &[Example],
    val_base: f64,
    start_kl: f64,
    opts: &TrainOptions,
    requantize: &mut dyn FnMut() -> Result<()>,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<Vec<CurvePoint>> {
    let qat = |step: usize| opts.qat_from.is_some_and(|f| step >= f);
    let micro = opts.micro_batch.unwrap_or(opts.batch);
    let recompute = opts.recompute.unwrap_or(false);
    let start = std::time::Instant::now();
    let mut opt = AdamW::new(
        lora.vars(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut rng = crate::generate::SplitMix::new(opts.seed);
    let mut order: Vec<usize> = Vec::new();
    let rec = |kl: f64| {
        if val_base > 0.0 {
            1.0 - kl / val_base
        } else {
            0.0
        }
    };
    let mut curve = Vec::new();
    if qat(0) {
        requantize()?;
    }
    // Fresh adapters (B = 0) leave the student as it is: its validation KL is `start_kl`.
    let first = if !qat(0) && lora.is_zero()? {
        start_kl
    } else {
        mean_kl(student, lora, val, micro)?
    };
    curve.push(CurvePoint {
        step: 0,
        elapsed_s: 0.0,
        train_kl: f64::NAN,
        val_kl: first,
        val_recovery: rec(first),
    });
    let (mut sum, mut cnt) = (0f64, 0usize);
    for step in 1..=opts.steps {
        let frac = (step - 1) as f64 / opts.steps.max(1) as f64;
        opt.set_learning_rate(opts.lr * (1.0 - 0.9 * frac));
        let since = opts.qat_from.map_or(0, |f| step - 1 - f.min(step - 1));
        if qat(step - 1) && since % opts.qat_every.max(1) == 0 && !(step == 1 && qat(0)) {
            requantize()?;
        }
        let mut picked = Vec::with_capacity(opts.batch);
        while picked.len() < opts.batch.min(train.len()) {
            if order.is_empty() {
                order = (0..train.len()).collect();
                shuffle(&mut order, &mut rng);
            }
            picked.push(&train[order.pop().expect("non-empty")]);
        }
        let (l, grads) = batch_gradient(student, lora, &picked, micro, recompute)?;
        opt.step(&grads)?;
        sum += l;
        cnt += 1;
        progress(step, l);
        if step % opts.eval_every.max(1) == 0 || step == opts.steps {
            if qat(step) {
                requantize()?;
            }
            let v = mean_kl(student, lora, val, micro)?;
            curve.push(CurvePoint {
                step,
                elapsed_s: start.elapsed().as_secs_f64(),
                train_kl: sum / cnt as f64,
                val_kl: v,
                val_recovery: rec(v),
            });
            (sum, cnt) = (0.0, 0);
        }
    }
    Ok(curve)
}

/// The gradient of the mean loss over `picked` with respect to `lora`'s variables, `micro`
/// trajectories per forward and backward pass: each pass's loss is weighted by its share of
/// the scored positions, so the summed gradient is the whole batch's (right padding changes
/// nothing) while only one pass's activations are held; with `recompute`, only one layer's of
/// one pass ([`layerwise_gradient`]). Returns the mean loss with it.
pub fn batch_gradient(
    student: &Student,
    lora: &LoraSet,
    picked: &[&Example],
    micro: usize,
    recompute: bool,
) -> Result<(f64, GradStore)> {
    let total: usize = picked.iter().map(|e| e.n).sum();
    let vars = lora.vars();
    if picked.is_empty() {
        bail!("no trajectories to take a gradient over");
    }
    let mut sum = GradStore::default();
    let mut loss = 0f64;
    for part in picked.chunks(micro.max(1)) {
        let b = batch(part)?;
        let weight = b.n as f64 / total.max(1) as f64;
        let (l, grads) = if recompute {
            layerwise_gradient(student, lora, &b, weight)?
        } else {
            let logits = student.logits(&b.tokens, &b.out_idx, lora)?;
            let l = (kl_loss(&logits, &b)? * weight)?;
            (l.to_scalar::<f32>()? as f64, l.backward()?)
        };
        loss += l;
        add_gradients(&mut sum, grads, &vars)?;
    }
    Ok((loss, sum))
}

/// `weight ×` the loss of batch `b` and its gradient, one layer's graph at a time: a forward
/// pass without gradients keeps each layer's input (one residual stream), then from the top
/// down each layer is run again from its input and the gradient of its output carried through
/// it to its input. The same gradient as one backward pass over the whole graph.
pub fn layerwise_gradient(
    student: &Student,
    lora: &LoraSet,
    b: &Batch,
    weight: f64,
) -> Result<(f64, GradStore)> {
    let n = student.config().n_layer;
    let mut inputs = Vec::with_capacity(n + 1);
    inputs.push(student.embed(&b.tokens)?.detach());
    for l in 0..n {
        let x = student.advance(l, &inputs[l], lora)?;
        inputs.push(x);
    }
    let top = Var::from_tensor(&inputs.pop().context("no layers")?)?;
    let logits = student.head(top.as_tensor(), &b.out_idx)?;
    let l = (kl_loss(&logits, b)? * weight)?;
    let value = l.to_scalar::<f32>()? as f64;
    let mut grads = l.backward()?;
    drop((l, logits));
    let vars = lora.vars();
    let mut up = grads
        .remove(top.as_tensor())
        .context("the loss does not depend on the last layer")?;
    let mut sum = GradStore::default();
    add_gradients(&mut sum, grads, &vars)?;
    for l in (0..n).rev() {
        let x = Var::from_tensor(&inputs.pop().context("a layer input is missing")?)?;
        let y = student.layer_forward(l, x.as_tensor(), lora)?;
        let mut g = (y * &up)?.sum_all()?.backward()?;
        up = g
            .remove(x.as_tensor())
            .with_context(|| format!("no gradient reached the input of layer {l}"))?
            .detach();
        add_gradients(&mut sum, g, &vars)?;
    }
    Ok((value, sum))
}

/// Add `grads`' gradients of `vars` into `sum`; the rest of `grads` (the gradients of a
/// pass's intermediate tensors) is dropped.
fn add_gradients(sum: &mut GradStore, mut grads: GradStore, vars: &[Var]) -> Result<()> {
    for v in vars {
        let Some(g) = grads.remove(v.as_tensor()) else {
            continue;
        };
        let g = match sum.remove(v.as_tensor()) {
            Some(a) => (a + g)?,
            None => g,
        };
        sum.insert(v.as_tensor(), g);
    }
    Ok(())
}

fn shuffle(v: &mut [usize], rng: &mut crate::generate::SplitMix) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_f64() * (i + 1) as f64) as usize;
        v.swap(i, j.min(i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_loss_is_zero_for_the_teacher_itself_and_positive_otherwise() -> Result<()> {
        // Vocabulary of 4, top-2 kept: teacher p = (0.5, 0.3 | 0.1, 0.1).
        let p = [0.5f32, 0.3, 0.1, 0.1];
        let logits = Tensor::new(&[p.map(|x| x.ln())], &Device::Cpu)?;
        let ex = Example {
            question: String::new(),
            question_index: 0,
            tokens: vec![0, 1],
            first: 0,
            n: 1,
            ids: vec![0, 1],
            logp: vec![0.5f32.ln(), 0.3f32.ln()],
            tail: vec![0.2f32.ln()],
        };
        let b = batch(&[&ex])?;
        let zero = kl_loss(&logits, &b)?.to_scalar::<f32>()?;
        assert!(zero.abs() < 1e-6, "{zero}");
        let other = Tensor::new(&[[0f32, 0., 0., 0.]], &Device::Cpu)?;
        let kl = kl_loss(&other, &b)?.to_scalar::<f32>()?;
        // Σ p log(p/q) with q = (.25, .25 | .5 tail)
        let want =
            0.5 * (0.5f32 / 0.25).ln() + 0.3 * (0.3f32 / 0.25).ln() + 0.2 * (0.2f32 / 0.5).ln();
        assert!((kl - want).abs() < 1e-5, "{kl} vs {want}");
        Ok(())
    }
}
