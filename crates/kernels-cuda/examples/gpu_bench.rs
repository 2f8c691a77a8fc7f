//! The GPU benchmark without the xtask driver (lighter to build on the GPU machine):
//! `CUDARC_CUDA_VERSION=13000 cargo run --release -p sparsity-kernels-cuda --features cuda
//! --example gpu_bench -- OUT.json`. Dense and masked (0, 0.25, 0.5, 0.75, 0.9) on 4096×4096,
//! 11008×4096 and 4096×11008, bf16 and f32, weights rotated over 1 GiB.

use half::bf16;
use sparsity_kernels_cuda::{bench_gpu, cuda_client, device_copy_bandwidth, format_table};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "gpu_bench.json".into());
    let client = cuda_client(0)?;
    let copy_gbps = device_copy_bandwidth(&client, 1 << 30, 5)?;
    println!("device copy bandwidth (1 GiB buffers): {copy_gbps:.0} GB/s");
    let sparsities = [0.0, 0.25, 0.5, 0.75, 0.9];
    let mut rows = Vec::new();
    for (o, i) in [(4096, 4096), (11008, 4096), (4096, 11008)] {
        rows.extend(bench_gpu::<bf16>(
            &client,
            o,
            i,
            &sparsities,
            1 << 30,
            200,
            0,
        )?);
        rows.extend(bench_gpu::<f32>(
            &client,
            o,
            i,
            &sparsities,
            1 << 30,
            200,
            0,
        )?);
    }
    print!("{}", format_table(&rows, copy_gbps));
    let json = serde_json::json!({ "device": "cuda:0", "copy_gbps": copy_gbps, "rows": rows });
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&json)?)?;
    std::fs::rename(&tmp, &out)?;
    println!("wrote {out}");
    Ok(())
}
