//! The `.pt` reader against crafted archives (issue #23): counts and offsets in the file are
//! checked against the archive before anything is allocated, and a pickle cannot make the
//! reader copy values without bound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sparsity_pruning::PruneError;
use sparsity_pruning::pt::read_pt;

/// A stored (uncompressed) ZIP archive of `entries`, as `torch.save` writes them.
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in entries {
        let local = out.len() as u32;
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date, crc
        out.extend((data.len() as u32).to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out.extend((name.len() as u16).to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out.extend(name.as_bytes());
        out.extend(*data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // versions .. crc
        central.extend((data.len() as u32).to_le_bytes());
        central.extend((data.len() as u32).to_le_bytes());
        central.extend((name.len() as u16).to_le_bytes());
        central.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // extra, comment, disk, attrs
        central.extend(local.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    let n = entries.len() as u16;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend(n.to_le_bytes());
    out.extend(n.to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

fn string(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend((s.len() as u32).to_le_bytes());
    v.extend(s.as_bytes());
    v
}

/// LONG1 of a non-negative integer.
fn long(x: u64) -> Vec<u8> {
    let mut v = vec![0x8a, 8];
    v.extend(x.to_le_bytes());
    v
}

/// The pickle of a bare float tensor `torch.save` would write, with the given 1-D size.
fn tensor_pickle(size: u64, storage_numel: u64) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.push(b'(');
    p.extend(string("storage"));
    p.extend(b"ctorch\nFloatStorage\n");
    p.extend(string("0"));
    p.extend(string("cpu"));
    p.extend(long(storage_numel));
    p.extend(b"tQK\x00(");
    p.extend(long(size));
    p.extend(b"t(K\x01t\x89N");
    p.extend(b"tR.");
    p
}

fn write(dir: &std::path::Path, name: &str, pickle: &[u8], storage: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    let bytes = zip(&[("archive/data.pkl", pickle), ("archive/data/0", storage)]);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_valid_crafted_tensor_reads() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Vec<u8> = [1.5f32, -2.0, 0.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let path = write(dir.path(), "ok.pt", &tensor_pickle(4, 4), &storage);
    let t = read_pt(&path).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].1.values.as_slice().unwrap(), &[1.5, -2.0, 0.0, 4.0]);
}

#[test]
fn a_pickle_declaring_2_pow_40_elements_is_rejected_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "huge.pt",
        &tensor_pickle(1 << 40, 1 << 40),
        &[0; 16],
    );
    let started = std::time::Instant::now();
    let e = read_pt(&path).unwrap_err();
    assert!(started.elapsed().as_secs_f64() < 1.0);
    assert!(matches!(e, PruneError::File { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("huge.pt") && msg.contains("1099511627776"),
        "{msg}"
    );
    // Sizes whose product overflows, and an offset past the storage, are errors too.
    let mut p = tensor_pickle(4, 4);
    let at = p.windows(2).position(|w| w == b"K\x00").unwrap();
    p[at + 1] = 9; // storage offset 9 of a 4-element storage
    let path = write(dir.path(), "offset.pt", &p, &[0; 16]);
    assert!(
        read_pt(&path)
            .unwrap_err()
            .to_string()
            .contains("outside the storage")
    );
}

#[test]
fn memo_references_cannot_copy_without_bound() {
    // [] PUT 0, then 40 × (GET 0, GET 0, TUPLE2, PUT 0): 2^40 values if copied.
    let mut p = vec![0x80, 2, b']', b'q', 0];
    for _ in 0..40 {
        p.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
    }
    p.push(b'.');
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "laughs.pt", &p, &[]);
    let started = std::time::Instant::now();
    let e = read_pt(&path).unwrap_err();
    assert!(started.elapsed().as_secs_f64() < 1.0);
    assert!(e.to_string().contains("memo copies"), "{e}");
}
