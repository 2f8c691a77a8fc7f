//! Safetensors files as ndarray arrays, and atomic safetensors output.
//!
//! Reading converts every numeric dtype: to `f32` ([`decode_f32`]: exact for f32, f16, bf16,
//! bool and integers up to 24 bits; f64 and wider integers are rounded to the nearest f32) and
//! to `f64` ([`decode_f64`]: exact for every float dtype and integers up to 53 bits). The
//! header is validated once on open (offsets, lengths, the total size against the file), so a
//! tensor's data is always inside the file and no read allocates more than the file's size.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayD, IxDyn};
pub use safetensors::Dtype;
use safetensors::SafeTensors;
use safetensors::tensor::TensorInfo;

use crate::atomic::write_atomic;
use crate::error::{IoError, Result};

/// Whether `dtype` is a floating-point type this crate reads (F16, BF16, F32, F64).
pub fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

/// Whether `dtype` is an integer or boolean type this crate reads (a mask, token ids, counts).
pub fn is_integer(dtype: Dtype) -> bool {
    matches!(
        dtype,
        Dtype::BOOL
            | Dtype::U8
            | Dtype::I8
            | Dtype::I16
            | Dtype::U16
            | Dtype::I32
            | Dtype::U32
            | Dtype::I64
            | Dtype::U64
    )
}

fn words<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| {
        let mut b = [0u8; N];
        b.copy_from_slice(c);
        b
    })
}

macro_rules! decode {
    ($raw:expr, $dtype:expr, $t:ty) => {{
        let raw: &[u8] = $raw;
        Some(match $dtype {
            Dtype::F32 => words::<4>(raw)
                .map(|b| f32::from_le_bytes(b) as $t)
                .collect(),
            Dtype::F64 => words::<8>(raw)
                .map(|b| f64::from_le_bytes(b) as $t)
                .collect(),
            Dtype::F16 => words::<2>(raw)
                .map(|b| half::f16::from_le_bytes(b).to_f32() as $t)
                .collect(),
            Dtype::BF16 => words::<2>(raw)
                .map(|b| half::bf16::from_le_bytes(b).to_f32() as $t)
                .collect(),
            Dtype::BOOL | Dtype::U8 => raw.iter().map(|&v| v as $t).collect(),
            Dtype::I8 => raw.iter().map(|&v| v as i8 as $t).collect(),
            Dtype::I16 => words::<2>(raw)
                .map(|b| i16::from_le_bytes(b) as $t)
                .collect(),
            Dtype::U16 => words::<2>(raw)
                .map(|b| u16::from_le_bytes(b) as $t)
                .collect(),
            Dtype::I32 => words::<4>(raw)
                .map(|b| i32::from_le_bytes(b) as $t)
                .collect(),
            Dtype::U32 => words::<4>(raw)
                .map(|b| u32::from_le_bytes(b) as $t)
                .collect(),
            Dtype::I64 => words::<8>(raw)
                .map(|b| i64::from_le_bytes(b) as $t)
                .collect(),
            Dtype::U64 => words::<8>(raw)
                .map(|b| u64::from_le_bytes(b) as $t)
                .collect(),
            _ => return None,
        })
    }};
}

/// Little-endian tensor bytes of `dtype` as f32 values; `None` for dtypes without a numeric
/// reading here (fp8, fp4/fp6, complex).
pub fn decode_f32(raw: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    decode!(raw, dtype, f32)
}

/// Little-endian tensor bytes of `dtype` as f64 values; `None` as for [`decode_f32`].
pub fn decode_f64(raw: &[u8], dtype: Dtype) -> Option<Vec<f64>> {
    decode!(raw, dtype, f64)
}

/// The name, dtype and shape of one tensor of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
}

/// The dtype and shape of every tensor of a safetensors file, from its header alone (the data
/// is not read): for estimating the memory a run will need before it loads anything. The
/// header length is checked against the file's size (and 100 MB, the `safetensors` crate's own
/// limit) before it is read.
pub fn read_header(path: &Path) -> Result<BTreeMap<String, TensorMeta>> {
    use std::io::Read;
    let bad = |reason: String| IoError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let mut f = std::fs::File::open(path).map_err(|e| IoError::io(path, e))?;
    let len = f.metadata().map_err(|e| IoError::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| bad(format!("{len} bytes: too short for a safetensors header")))?;
    let n = u64::from_le_bytes(n);
    if n > 100_000_000 || n.saturating_add(8) > len {
        return Err(bad(format!(
            "header length {n} does not fit the {len}-byte file"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| IoError::io(path, e))?;
    let doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, v) in doc {
        if name == "__metadata__" {
            continue;
        }
        let dtype: Dtype = v
            .get("dtype")
            .cloned()
            .and_then(|d| serde_json::from_value(d).ok())
            .ok_or_else(|| bad(format!("tensor `{name}`: no valid dtype")))?;
        let shape: Vec<usize> = v
            .get("shape")
            .cloned()
            .and_then(|d| serde_json::from_value(d).ok())
            .ok_or_else(|| bad(format!("tensor `{name}`: no valid shape")))?;
        out.insert(name, TensorMeta { dtype, shape });
    }
    Ok(out)
}

/// A safetensors file held in memory, its header parsed and validated once.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
    infos: BTreeMap<String, TensorInfo>,
    metadata: HashMap<String, String>,
}

impl SafetensorsFile {
    /// Reads `path` and validates its header.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| IoError::io(path, e))?;
        Self::from_bytes(path, bytes)
    }

    /// Validates `bytes` as a safetensors file; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let (n, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| IoError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let infos = meta
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            data_start: 8 + n,
            infos,
            metadata,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.infos.keys().cloned().collect()
    }

    /// The `__metadata__` string map of the header (empty if none).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Whether a tensor is present.
    pub fn contains(&self, name: &str) -> bool {
        self.infos.contains_key(name)
    }

    /// Dtype and shape of tensor `name`.
    pub fn meta(&self, name: &str) -> Result<TensorMeta> {
        let info = self.info(name)?;
        Ok(TensorMeta {
            dtype: info.dtype,
            shape: info.shape.clone(),
        })
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.infos.get(name).ok_or_else(|| {
            let mut shown: Vec<&str> = self.infos.keys().map(String::as_str).take(20).collect();
            if self.infos.len() > 20 {
                shown.push("...");
            }
            IoError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                available: shown.join(", "),
            }
        })
    }

    /// The raw little-endian bytes of tensor `name` with its dtype and shape.
    pub fn raw(&self, name: &str) -> Result<(TensorMeta, &[u8])> {
        let info = self.info(name)?;
        let (start, end) = info.data_offsets;
        let data = self
            .data_start
            .checked_add(start)
            .zip(self.data_start.checked_add(end))
            .and_then(|(s, e)| self.bytes.get(s..e))
            .ok_or_else(|| IoError::Format {
                path: self.path.clone(),
                reason: format!("data of tensor `{name}` lies outside the file"),
            })?;
        Ok((
            TensorMeta {
                dtype: info.dtype,
                shape: info.shape.clone(),
            },
            data,
        ))
    }

    fn unsupported(&self, name: &str, dtype: Dtype, target: &'static str) -> IoError {
        IoError::UnsupportedDtype {
            path: self.path.clone(),
            tensor: name.to_string(),
            dtype: format!("{dtype:?}"),
            target,
        }
    }

    fn shaped<T>(&self, name: &str, shape: Vec<usize>, values: Vec<T>) -> Result<ArrayD<T>> {
        ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| IoError::WrongShape {
            path: self.path.clone(),
            tensor: name.to_string(),
            shape: shape.clone(),
            expected: format!("as many elements as the data holds ({e})"),
        })
    }

    /// Tensor `name` as f32 (see [`decode_f32`] for the conversions).
    pub fn array_f32(&self, name: &str) -> Result<ArrayD<f32>> {
        let (meta, raw) = self.raw(name)?;
        let values =
            decode_f32(raw, meta.dtype).ok_or_else(|| self.unsupported(name, meta.dtype, "f32"))?;
        self.shaped(name, meta.shape, values)
    }

    /// Tensor `name` as f64 (see [`decode_f64`]).
    pub fn array_f64(&self, name: &str) -> Result<ArrayD<f64>> {
        let (meta, raw) = self.raw(name)?;
        let values =
            decode_f64(raw, meta.dtype).ok_or_else(|| self.unsupported(name, meta.dtype, "f64"))?;
        self.shaped(name, meta.shape, values)
    }

    /// Tensor `name` as a 2-D f32 array; any other rank is a [`IoError::WrongShape`].
    pub fn array2_f32(&self, name: &str) -> Result<Array2<f32>> {
        let a = self.array_f32(name)?;
        let shape = a.shape().to_vec();
        a.into_dimensionality().map_err(|_| IoError::WrongShape {
            path: self.path.clone(),
            tensor: name.to_string(),
            shape,
            expected: "a 2-D matrix".into(),
        })
    }
}

/// One tensor to write.
#[derive(Debug, Clone)]
pub enum OutTensor {
    /// f32 data with its shape.
    F32(ArrayD<f32>),
    /// f64 data with its shape.
    F64(ArrayD<f64>),
    /// u8 data with its shape.
    U8(ArrayD<u8>),
    /// i64 data with its shape (token ids).
    I64(ArrayD<i64>),
}

impl OutTensor {
    fn raw(&self) -> (Dtype, Vec<usize>, Vec<u8>) {
        fn le<T: Copy, const N: usize>(a: &ArrayD<T>, f: fn(T) -> [u8; N]) -> Vec<u8> {
            let mut out = Vec::with_capacity(a.len() * N);
            for &v in a.iter() {
                out.extend_from_slice(&f(v));
            }
            out
        }
        match self {
            Self::F32(a) => (Dtype::F32, a.shape().to_vec(), le(a, f32::to_le_bytes)),
            Self::F64(a) => (Dtype::F64, a.shape().to_vec(), le(a, f64::to_le_bytes)),
            Self::U8(a) => (Dtype::U8, a.shape().to_vec(), a.iter().copied().collect()),
            Self::I64(a) => (Dtype::I64, a.shape().to_vec(), le(a, i64::to_le_bytes)),
        }
    }
}

/// Serialises `tensors` (name → tensor) and string `metadata` to safetensors bytes; `path`
/// names the target in errors.
pub fn serialize(
    path: &Path,
    tensors: &[(String, OutTensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    type Raw = (Dtype, Vec<usize>, Vec<u8>);
    let raw: Vec<(&String, Raw)> = tensors.iter().map(|(n, t)| (n, t.raw())).collect();
    let mut views = Vec::with_capacity(raw.len());
    for (name, (dtype, shape, data)) in &raw {
        let v = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).map_err(|e| {
            IoError::Serialize {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                reason: e.to_string(),
            }
        })?;
        views.push((name.to_string(), v));
    }
    safetensors::serialize(views, metadata).map_err(|e| IoError::Serialize {
        path: path.to_path_buf(),
        tensor: String::new(),
        reason: e.to_string(),
    })
}

/// Writes `tensors` and `metadata` to `path` as safetensors, atomically ([`write_atomic`]).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, OutTensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    write_atomic(path, &serialize(path, tensors, metadata)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(dtype: Dtype, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), data);
        match view {
            Ok(v) => safetensors::serialize([("t", v)], None).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    #[test]
    fn every_dtype_converts() -> Result<()> {
        let p = Path::new("mem");
        let cases: Vec<(Dtype, Vec<u8>, Vec<f64>)> = vec![
            (
                Dtype::F32,
                [1.5f32, -2.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![1.5, -2.0],
            ),
            (
                Dtype::F64,
                [0.1f64, -3.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![0.1, -3.0],
            ),
            (
                Dtype::F16,
                [half::f16::from_f32(0.5), half::f16::from_f32(-1.0)]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![0.5, -1.0],
            ),
            (
                Dtype::BF16,
                [half::bf16::from_f32(2.0), half::bf16::from_f32(-0.25)]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![2.0, -0.25],
            ),
            (Dtype::BOOL, vec![1, 0], vec![1.0, 0.0]),
            (Dtype::U8, vec![255, 3], vec![255.0, 3.0]),
            (Dtype::I8, vec![0xff, 7], vec![-1.0, 7.0]),
            (
                Dtype::I16,
                [-300i16, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![-300.0, 2.0],
            ),
            (
                Dtype::U16,
                [60000u16, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![60000.0, 2.0],
            ),
            (
                Dtype::I32,
                [-7i32, 9].iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![-7.0, 9.0],
            ),
            (
                Dtype::U32,
                [7u32, 9].iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![7.0, 9.0],
            ),
            (
                Dtype::I64,
                [-5i64, 1 << 40]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![-5.0, (1u64 << 40) as f64],
            ),
            (
                Dtype::U64,
                [5u64, 6].iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![5.0, 6.0],
            ),
        ];
        for (dtype, data, want) in cases {
            let f = SafetensorsFile::from_bytes(p, bytes(dtype, &[2], &data))?;
            let got64 = f.array_f64("t")?;
            assert_eq!(got64.iter().copied().collect::<Vec<_>>(), want, "{dtype:?}");
            let got32 = f.array_f32("t")?;
            let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            assert_eq!(
                got32.iter().copied().collect::<Vec<_>>(),
                want32,
                "{dtype:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn errors_name_the_tensor() {
        let p = Path::new("mem");
        let f = SafetensorsFile::from_bytes(p, bytes(Dtype::F32, &[2, 2], &[0; 16]));
        let Ok(f) = f else {
            panic!("valid file rejected");
        };
        let missing = f.array_f32("nope");
        assert!(
            matches!(missing, Err(IoError::MissingTensor { ref tensor, .. }) if tensor == "nope")
        );
        let fp8 = SafetensorsFile::from_bytes(p, bytes(Dtype::F8_E4M3, &[2], &[0, 0]));
        assert!(matches!(
            fp8.map(|f| f.array_f32("t")),
            Ok(Err(IoError::UnsupportedDtype { .. }))
        ));
        let three_d = SafetensorsFile::from_bytes(p, bytes(Dtype::F32, &[1, 1, 1], &[0; 4]));
        assert!(matches!(
            three_d.map(|f| f.array2_f32("t")),
            Ok(Err(IoError::WrongShape { .. }))
        ));
        let mut truncated = bytes(Dtype::F32, &[2, 2], &[0; 16]);
        truncated.pop();
        assert!(matches!(
            SafetensorsFile::from_bytes(p, truncated),
            Err(IoError::Format { .. })
        ));
    }

    #[test]
    fn roundtrip_keeps_metadata() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| IoError::io(Path::new("."), e))?;
        let path = dir.path().join("x.safetensors");
        let a = ArrayD::from_shape_vec(IxDyn(&[3]), vec![1i64, -2, 3]).unwrap_or_default();
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_safetensors(
            &path,
            &[("ids".into(), OutTensor::I64(a.clone()))],
            Some(meta),
        )?;
        let f = SafetensorsFile::open(&path)?;
        assert_eq!(f.metadata().get("format").map(String::as_str), Some("pt"));
        assert_eq!(f.meta("ids")?.dtype, Dtype::I64);
        assert_eq!(f.array_f64("ids")?.mapv(|v| v as i64), a);
        Ok(())
    }
}

/// Writes f32 tensors `(name, shape, values)` as a safetensors file at `path`, streamed: the
/// header, then each tensor's little-endian bytes through a buffered writer, into a temporary
/// file renamed over `path` (atomic as [`crate::write_atomic`]). Unlike [`serialize`] nothing is
/// copied in memory, so a model of several GB is written with no extra allocation. A name
/// given twice or a shape that does not match its values is an error naming the tensor.
pub fn write_f32_streaming(
    path: &Path,
    tensors: &[(&str, &[usize], &[f32])],
    metadata: Option<&HashMap<String, String>>,
) -> Result<()> {
    use std::io::Write;
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), serde_json::json!(m));
    }
    let mut offset = 0usize;
    for (name, shape, values) in tensors {
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel != Some(values.len()) {
            return Err(IoError::Serialize {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                reason: format!("shape {shape:?} does not hold {} values", values.len()),
            });
        }
        if header.contains_key(*name) || *name == "__metadata__" {
            return Err(IoError::Serialize {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                reason: "name given twice (or reserved)".into(),
            });
        }
        let end = offset + 4 * values.len();
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| IoError::Serialize {
        path: path.to_path_buf(),
        tensor: String::new(),
        reason: e.to_string(),
    })?;
    // the data starts 8-byte aligned, as safetensors writes it
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    crate::atomic::write_atomic_with(path, |file| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(&json)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for (_, _, values) in tensors {
            for chunk in values.chunks(1 << 14) {
                buf.clear();
                for v in chunk {
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                w.write_all(&buf)?;
            }
        }
        w.flush()
    })
}

#[cfg(test)]
mod streaming_tests {
    use super::*;

    #[test]
    fn streamed_file_reads_back_and_bad_input_is_named() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("t.safetensors");
        let a = [1.0f32, -2.5, 3.25, 0.0, 5.0, 6.0];
        let b = [7.0f32];
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_f32_streaming(&path, &[("a", &[2, 3], &a), ("b", &[1], &b)], Some(&meta))
            .unwrap_or_else(|e| panic!("{e}"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let ta = st.tensor("a").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ta.shape(), &[2, 3]);
        assert_eq!(decode_f32(ta.data(), Dtype::F32), Some(a.to_vec()));
        let tb = st.tensor("b").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decode_f32(tb.data(), Dtype::F32), Some(b.to_vec()));
        let e = write_f32_streaming(&path, &[("bad", &[4], &a)], None).unwrap_err();
        assert!(e.to_string().contains("bad"), "{e}");
        let e = write_f32_streaming(&path, &[("a", &[1], &b), ("a", &[1], &b)], None).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        // the earlier file is untouched by the failed writes
        assert_eq!(std::fs::read(&path).unwrap_or_default(), bytes);
    }
}
