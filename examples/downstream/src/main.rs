//! One real call per sparsity-lab library crate, each checked against a value known
//! independently of the crate (a closed form, a hand count, or `transformers`' recorded logits).
//!
//! Usage: `sparsity-downstream-check <gpt2 model directory with expected.safetensors>`
//! (`.ci/run` passes the workspace's `crates/models/tests/fixtures/hf/gpt2-tiny`).
//! Exits non-zero, naming the crate, on the first check that fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ndarray::{Array1, Array2, ArrayD, IxDyn, array};

type Check = Result<String, Box<dyn std::error::Error>>;

fn ensure(ok: bool, what: impl Into<String>) -> Result<(), Box<dyn std::error::Error>> {
    if ok { Ok(()) } else { Err(what.into().into()) }
}

/// A deterministic pseudo-random f32 in (-1, 1) (SplitMix64): no RNG crate needed.
fn noise(i: u64) -> f32 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn io(dir: &Path) -> Check {
    use sparsity_io::tensors::{OutTensor, SafetensorsFile, write_safetensors};
    let w = ArrayD::from_shape_fn(IxDyn(&[3, 5]), |i| noise((i[0] * 5 + i[1]) as u64));
    let path = dir.join("w.safetensors");
    write_safetensors(&path, &[("w".to_string(), OutTensor::F32(w.clone()))], None)?;
    let back = SafetensorsFile::open(&path)?.array_f32("w")?;
    ensure(back == w, "safetensors round trip changed the tensor")?;
    Ok("safetensors round trip of a 3x5 f32 tensor is bit-exact".into())
}

fn plot(dir: &Path) -> Check {
    use plotters::prelude::*;
    let path = dir.join("line.png");
    sparsity_plot::png_atomic(&path, (160, 120), |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption("y = x", (sparsity_plot::FONT, 12))
            .build_cartesian_2d(0f64..1.0, 0f64..1.0)
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], &BLUE))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    })?;
    let bytes = std::fs::read(&path)?;
    ensure(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG file")?;
    Ok(format!("PNG written ({} bytes)", bytes.len()))
}

fn stats() -> Check {
    // Published table value: q_0.95(k = 3, df = 10) = 3.877.
    let q = sparsity_stats::qtukey(0.95, 3.0, 10.0)?;
    ensure((q - 3.877).abs() < 1e-3, format!("qtukey(0.95, 3, 10) = {q}"))?;
    Ok(format!("qtukey(0.95, 3, 10) = {q:.4} (table: 3.877)"))
}

fn metrics() -> Check {
    // One active neuron of four: Gini (n-1)/n = 0.75, Hoyer 1.
    let v = array![0.0, 0.0, 0.0, 2.5];
    let g = sparsity_metrics::gini_sparsity(v.view())?.gini_coefficient;
    let h = sparsity_metrics::hoyer_sparsity(v.view())?;
    ensure((g - 0.75).abs() < 1e-12, format!("Gini {g}"))?;
    ensure((h - 1.0).abs() < 1e-12, format!("Hoyer {h}"))?;
    Ok(format!("Gini {g}, Hoyer {h} of a one-hot vector"))
}

fn pruning() -> Check {
    use sparsity_pruning::{LayerPruner, Method, Pattern};
    let (rows, cols) = (16, 64);
    let w = Array2::from_shape_fn((rows, cols), |(i, j)| noise((i * cols + j) as u64));
    let calib = ndarray::Array3::from_shape_fn((2, 8, cols), |(b, t, j)| {
        noise(10_000 + (b * 8 * cols + t * cols + j) as u64)
    });
    let mut pruner =
        LayerPruner::new("fc", [rows, cols], Method::Wanda, Pattern::Unstructured(0.5))?;
    pruner.add_batch(calib.view().into_dyn())?;
    let pruned = pruner.prune(w.view())?;
    // Wanda compares within each output row (mask: 1 = pruned): every row keeps exactly half its weights, and
    // every kept weight scores at least as high as every pruned one of its row.
    let norms: Vec<f32> = (0..cols)
        .map(|j| calib.slice(ndarray::s![.., .., j]).iter().map(|x| x * x).sum::<f32>().sqrt())
        .collect();
    for (i, row) in pruned.mask.rows().into_iter().enumerate() {
        let kept = row.iter().filter(|&&m| m == 0).count();
        ensure(kept == cols / 2, format!("row {i} keeps {kept} of {cols}"))?;
        let score = |j: usize| w[[i, j]].abs() * norms[j];
        let min_kept = (0..cols).filter(|&j| row[j] == 0).map(score).fold(f32::INFINITY, f32::min);
        let max_pruned = (0..cols).filter(|&j| row[j] == 1).map(score).fold(0.0, f32::max);
        ensure(min_kept >= max_pruned * (1.0 - 1e-5), format!("row {i}: a pruned weight outscores a kept one"))?;
    }
    Ok(format!("Wanda 50 % of a {rows}x{cols} layer: every row keeps its {} best |W|·‖X‖", cols / 2))
}

fn clustering() -> Check {
    use sparsity_clustering::{Binarize, BinaryMatrix, FeatureAxis, hamming};
    // Columns 0..4 of W; column 0 differs from 1 in one bit, from 2 in two, from 3 in four.
    let w = array![
        [1.0f32, 1.0, 1.0, 0.0],
        [1.0, 1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0, 0.0],
    ];
    let bits = BinaryMatrix::from_dense(w.view(), Binarize::NonZero, FeatureAxis::Columns)?;
    let nn = hamming::nearest_neighbours(&bits, 0, 3)?;
    ensure(nn.indices == vec![1, 2, 3], format!("neighbours {:?}", nn.indices))?;
    ensure(nn.counts == vec![1, 2, 4], format!("counts {:?}", nn.counts))?;
    Ok("Hamming top-3 neighbours of column 0: [1, 2, 3] at [1, 2, 4] bits".into())
}

fn kernels() -> Check {
    let (out, inp) = (24, 40);
    let w_t = Array2::from_shape_fn((inp, out), |(i, o)| noise((i * out + o) as u64));
    let x = Array1::from_shape_fn(inp, |i| noise(5_000 + i as u64));
    let tau = 0.5f32;
    let y = sparsity_kernels::gemv_masked(w_t.view(), x.view(), tau)?;
    let mut skipped = 0;
    for o in 0..out {
        let mut want = 0.0f64;
        for i in 0..inp {
            if x[i].abs() > tau {
                want += f64::from(w_t[[i, o]]) * f64::from(x[i]);
            } else if o == 0 {
                skipped += 1;
            }
        }
        let got = f64::from(y[o]);
        ensure((got - want).abs() < 1e-4, format!("output {o}: {got} vs {want}"))?;
    }
    Ok(format!("masked GEMV {out}x{inp} equals the f64 reference ({skipped} of {inp} inputs skipped)"))
}

fn kernels_cuda() -> Check {
    // Built without its `cuda` feature, as a default dependency is: nothing touches a GPU.
    ensure(!sparsity_kernels_cuda::ENABLED, "cuda enabled without the feature")?;
    Ok("builds without CUDA; ENABLED = false".into())
}

fn models_and_users(model_dir: &Path, dir: &Path) -> Result<Vec<(&'static str, String)>, Box<dyn std::error::Error>> {
    use sparsity_models::{Batch, Capture, CausalLm, Edit, cpu_device, util::tensor_to_vec};
    let device = cpu_device();
    let model = CausalLm::load_dir(model_dir, &device)?;
    let expected = sparsity_io::tensors::SafetensorsFile::open(&model_dir.join("expected.safetensors"))?;
    let ids_f = expected.array_f64("input_ids")?;
    let shape = ids_f.shape().to_vec();
    let ids: Vec<i64> = ids_f.iter().map(|&v| v as i64).collect();
    let want = expected.array_f32("logits")?;
    let out = model.forward(&Batch::from_ids(&ids, shape[0], shape[1], &device)?, &Capture::none(), None)?;
    let got = tensor_to_vec(&out.logits)?;
    let worst = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    ensure(got.len() == want.len() && worst < 1e-4, format!("logits differ by {worst}"))?;
    let mut done = vec![("sparsity-models", format!("GPT-2 fixture forward equals transformers' logits (max |Δ| {worst:.1e})"))];

    // Token-by-token decoding on the kernels' GEMV equals the batched forward's last position.
    let seq: Vec<u32> = ids[..shape[1]].iter().map(|&v| v as u32).collect();
    let mut decoder = sparsity_decoding::decode::Decoder::new(&model, None)?;
    let mut last = Vec::new();
    for &t in &seq {
        last = decoder.step(t)?;
    }
    let vocab = want.shape()[2];
    let row = &got[(shape[1] - 1) * vocab..shape[1] * vocab];
    let d = last.iter().zip(row).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    ensure(d < 1e-3, format!("decoder differs from forward by {d}"))?;
    done.push(("sparsity-decoding", format!("{}-token KV-cache decode equals the forward (max |Δ| {d:.1e})", seq.len())));

    // Zeroing one MLP neuron: KL ≥ 0, and an identity edit changes nothing.
    let site = sparsity_analysis::neuron_site(&model, 0);
    let ids0: Vec<i64> = ids[..shape[1]].to_vec();
    let zero = sparsity_analysis::causal::single_neuron_impacts(&model, &ids0, &site, &[0, 1, 2], &|_| Ok(Edit::Zero), 3, &device)?;
    let same = sparsity_analysis::causal::single_neuron_impacts(&model, &ids0, &site, &[0], &|_| Ok(Edit::Scale(1.0)), 1, &device)?;
    ensure(zero.iter().all(|(kl, _)| *kl >= 0.0) && zero.iter().any(|(kl, _)| *kl > 0.0), format!("KL {zero:?}"))?;
    ensure(same[0].0.abs() < 1e-9, format!("identity edit has KL {}", same[0].0))?;
    done.push(("sparsity-analysis", format!("KL of zeroing {site} neurons 0..3: {:.2e} {:.2e} {:.2e}", zero[0].0, zero[1].0, zero[2].0)));

    // The demo corpus is a pure function of its seed.
    let texts = sparsity_demo::corpus::generate(7, 10);
    ensure(texts == sparsity_demo::corpus::generate(7, 10) && texts != sparsity_demo::corpus::generate(8, 10), "corpus not seeded")?;
    done.push(("sparsity-demo", format!("seeded corpus: {} texts, first {:?}", texts.len(), texts[0])));

    // A results-store row set reads back exactly.
    use sparsity_experiments::results::{RunMeta, append_rows, read_rows};
    let meta = RunMeta::new("downstream", &serde_json::json!({ "max_abs_logit_diff": worst }))?;
    let rows = vec![meta.row("gpt2-tiny", None, "logits", "forward", "max_abs_diff", f64::from(worst))];
    let path = append_rows(dir, &rows)?;
    ensure(read_rows(&path)? == rows, "results store changed a row")?;
    done.push(("sparsity-experiments", format!("results store round trip ({})", path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())));
    Ok(done)
}

fn main() -> ExitCode {
    let Some(model_dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: sparsity-downstream-check <gpt2 model directory with expected.safetensors>");
        return ExitCode::from(2);
    };
    let dir = std::env::temp_dir().join(format!("sparsity-downstream-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let mut results: Vec<(&str, Check)> = vec![
        ("sparsity-io", io(&dir)),
        ("sparsity-plot", plot(&dir)),
        ("sparsity-stats", stats()),
        ("sparsity-metrics", metrics()),
        ("sparsity-pruning", pruning()),
        ("sparsity-clustering", clustering()),
        ("sparsity-kernels", kernels()),
        ("sparsity-kernels-cuda", kernels_cuda()),
    ];
    match models_and_users(&model_dir, &dir) {
        Ok(done) => results.extend(done.into_iter().map(|(c, s)| (c, Ok(s)))),
        Err(e) => results.push(("sparsity-models and its users", Err(e))),
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut failed = false;
    for (krate, r) in &results {
        match r {
            Ok(s) => println!("ok   {krate:<22} {s}"),
            Err(e) => {
                failed = true;
                println!("FAIL {krate:<22} {e}");
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
