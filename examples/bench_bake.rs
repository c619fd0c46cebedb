//! Times one bake training step on a model, split into forward, loss and backward, for a
//! batch of synthetic trajectories: `cargo run --release --example bench_bake -- MODEL [B] [T] [N]`.

use candle_core::{Device, Tensor};
use gguf_sleep::bake::{lora::LoraSet, student::Student, train};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: bench_bake MODEL [B] [T] [N]");
    let b: usize = args.get(2).map_or(8, |s| s.parse().unwrap());
    let t: usize = args.get(3).map_or(110, |s| s.parse().unwrap());
    let n: usize = args.get(4).map_or(60, |s| s.parse().unwrap());
    if std::env::var_os("NO_RETAIN").is_none() {
        gguf_sleep::engine::retain_freed_memory();
    }
    let file = gguf::GgufFile::open(path)?;
    let student = Student::load(&file)?;
    let mut lora = LoraSet::default();
    for l in 0..student.config().n_layer {
        for kind in gguf_sleep::bake::Targets::All.kinds() {
            let (o, i) = student.matrix_shape(l, kind)?;
            lora.add_fresh(&format!("blk.{l}.{kind}.weight"), o, i, 8, l as u64)?;
        }
    }
    let tokens: Vec<u32> = (0..b * t)
        .map(|i| (i * 7919 % 40000) as u32 + 100)
        .collect();
    let tokens = Tensor::from_vec(tokens, (b, t), &Device::Cpu)?;
    let idx: Vec<u32> = (0..b)
        .flat_map(|i| (0..n).map(move |j| (i * t + t - n - 1 + j) as u32))
        .collect();
    let idx = Tensor::from_vec(idx, b * n, &Device::Cpu)?;
    let k = 256;
    let ids = Tensor::from_vec(
        (0..b * n * k)
            .map(|i| (i % 49000) as u32)
            .collect::<Vec<_>>(),
        (b * n, k),
        &Device::Cpu,
    )?;
    let logp = Tensor::from_vec(vec![-8f32; b * n * k], (b * n, k), &Device::Cpu)?;
    let tail = Tensor::from_vec(vec![-0.2f32; b * n], (b * n, 1), &Device::Cpu)?;
    let batch = train::Batch {
        tokens: tokens.clone(),
        out_idx: idx.clone(),
        ids,
        logp,
        tail,
        n: b * n,
    };
    for rep in 0..3 {
        let t0 = Instant::now();
        let logits = student.logits(&tokens, &idx, &lora)?;
        let t1 = Instant::now();
        let loss = train::kl_loss(&logits, &batch)?;
        let t2 = Instant::now();
        let grads = loss.backward()?;
        let t3 = Instant::now();
        drop(grads);
        let t4 = Instant::now();
        let _ = student.logits(&tokens, &idx, &LoraSet::default())?;
        let t5 = Instant::now();
        println!(
            "rep {rep}: forward {:.2}s loss {:.2}s backward {:.2}s | forward without adapters {:.2}s",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            (t5 - t4).as_secs_f64()
        );
    }
    Ok(())
}
