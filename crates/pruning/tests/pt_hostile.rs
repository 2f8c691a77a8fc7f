//! The `.pt` reader against crafted archives (issue #23): counts and offsets in the file are
//! checked against the archive before anything is allocated, a pickle cannot make the reader
//! copy values without bound, and seeded mutations of real `torch.save` files (the archive's
//! bytes, and the pickle re-packed into a valid archive) give typed errors or tensors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;

use rand::Rng;
use sparsity_fuzz::{campaign, env_or, mutate_bytes};

#[global_allocator]
static ALLOCATOR: sparsity_fuzz::LargestRequest = sparsity_fuzz::LargestRequest;

use sparsity_pruning::PruneError;
use sparsity_pruning::pt::read_pt;

/// A stored (uncompressed) ZIP archive of `entries`, as `torch.save` writes them.
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in entries {
        let local = out.len() as u32;
        out.extend(0x0403_4b50u32.to_le_bytes());
        let crc = crc32fast::hash(data).to_le_bytes();
        out.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date
        out.extend(crc);
        out.extend((data.len() as u32).to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out.extend((name.len() as u16).to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out.extend(name.as_bytes());
        out.extend(*data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // versions .. date
        central.extend(crc);
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

/// The entries of a stored ZIP archive, in order.
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..a.len())
        .map(|i| {
            let mut f = a.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().to_string(), data)
        })
        .collect()
}

#[test]
fn a_storage_byte_flipped_inside_the_archive_fails_its_crc() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pt/dict.pt");
    let mut bytes = std::fs::read(&fixture).unwrap();
    let entries = unzip(&bytes);
    let (_, storage) = entries.iter().find(|(n, _)| n.contains("/data/")).unwrap();
    let at = bytes
        .windows(storage.len())
        .position(|w| w == storage.as_slice())
        .unwrap();
    bytes[at] ^= 0x40;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flipped.pt");
    std::fs::write(&path, &bytes).unwrap();
    let e = read_pt(&path).unwrap_err().to_string();
    assert!(e.contains("CRC-32") && e.contains("flipped.pt"), "{e}");
}

/// 3 000 seeded mutations (`SPARSITY_FUZZ_PT_CASES`) of the three `torch.save` fixtures: half
/// mutate the archive's bytes (truncation, bit flips, rewritten bytes, trailing bytes, chunks
/// deleted or duplicated, 4/8-byte windows set to extreme integers), half mutate the pickle
/// or a storage the same way and re-pack a valid archive, so the pickle machine and the
/// tensor checks see them. Typed error or tensors; never a panic, nothing allocated beyond
/// 4 × the file + 1 MiB.
#[test]
fn mutated_pt_files_give_typed_errors_or_tensors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pt");
    let mut fixtures: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pt"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    fixtures.sort();
    assert_eq!(fixtures.len(), 3);
    let unzipped: Vec<_> = fixtures.iter().map(|f| unzip(f)).collect();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("mutated.pt");
    let cases: usize = env_or("SPARSITY_FUZZ_PT_CASES", 3_000);
    let mut case = 0usize;
    let out = campaign(
        ".pt",
        cases,
        env_or("SPARSITY_FUZZ_SEED", 41),
        |rng| {
            let i = case % fixtures.len();
            case += 1;
            if rng.random_bool(0.5) {
                mutate_bytes(rng, &fixtures[i])
            } else {
                let mut entries = unzipped[i].clone();
                // the pickle most of the time, else a storage or another entry
                let e = if rng.random_bool(0.7) {
                    entries
                        .iter()
                        .position(|(n, _)| n.ends_with("data.pkl"))
                        .unwrap()
                } else {
                    rng.random_range(0..entries.len())
                };
                let (data, _) = mutate_bytes(rng, &entries[e].1);
                entries[e].1 = data;
                let refs: Vec<(&str, &[u8])> = entries
                    .iter()
                    .map(|(n, d)| (n.as_str(), d.as_slice()))
                    .collect();
                (zip(&refs), "entry re-packed")
            }
        },
        |w| 4 * w.len() + (1 << 20),
        |w| {
            std::fs::write(&file, &w).unwrap();
            read_pt(&file)
        },
    );
    assert_eq!(out.accepted + out.rejected, cases);
    assert!(out.accepted > 0 && out.rejected > cases / 2, "{out:?}");
}
