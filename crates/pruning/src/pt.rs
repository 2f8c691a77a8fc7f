//! PyTorch `.pt` tensors without Python: the original mask study saved every pruned weight
//! with `torch.save(W)` as a bare tensor (burn's `pytorch-reader` only accepts a dictionary at
//! the root), named `layer{N}-{component}-{indices}-{sparsity}.pt`.
//!
//! A `.pt` file (PyTorch ≥ 1.6) is a ZIP archive with stored (uncompressed) entries:
//! `<root>/data.pkl` is a pickle that rebuilds the tensor with
//! `torch._utils._rebuild_tensor_v2(persistent_load(('storage', torch.FloatStorage, key,
//! device, numel)), offset, size, stride, ...)` and `<root>/data/<key>` holds the raw
//! little-endian storage. This module reads that subset: the ZIP central directory, a small
//! pickle machine (protocols 2–5 opcodes torch emits), tensors (also wrapped in
//! `_rebuild_parameter`) at the root or as values of a dictionary.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{Array2, ArrayD, IxDyn};

use crate::error::{PruneError, Result};

fn err(path: &Path, reason: impl Into<String>) -> PruneError {
    PruneError::File {
        file: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Entry name → byte range of its (stored) data, read with the `zip` crate. Every entry must be
/// stored (torch.save writes no compressed entries; the crate is built without decompressors),
/// lie inside the archive and match its CRC-32, so a corrupted storage is an error rather than
/// wrong weights.
fn zip_entries(path: &Path, b: &[u8]) -> Result<HashMap<String, (usize, usize)>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(b)).map_err(|e| {
        err(
            path,
            format!("not a readable ZIP archive (a PyTorch >= 1.6 .pt is one): {e}"),
        )
    })?;
    let mut entries = HashMap::new();
    for i in 0..archive.len() {
        let f = archive
            .by_index_raw(i)
            .map_err(|e| err(path, format!("ZIP entry {i}: {e}")))?;
        let name = f.name().to_string();
        if f.compression() != zip::CompressionMethod::Stored {
            return Err(err(
                path,
                format!(
                    "entry `{name}` is compressed ({}); torch.save stores entries",
                    f.compression()
                ),
            ));
        }
        let range = f
            .data_start()
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| {
                let size = usize::try_from(f.compressed_size()).ok()?;
                Some((s, s.checked_add(size)?))
            })
            .filter(|&(_, e)| e <= b.len())
            .ok_or_else(|| err(path, format!("entry `{name}` lies outside the archive")))?;
        if crc32fast::hash(&b[range.0..range.1]) != f.crc32() {
            return Err(err(
                path,
                format!("entry `{name}` fails its CRC-32 check (the file is corrupt)"),
            ));
        }
        entries.insert(name, range);
    }
    Ok(entries)
}

#[derive(Debug, Clone)]
enum Val {
    None,
    Bool,
    Int(i64),
    Float,
    Str(String),
    Tuple(Vec<Val>),
    Dict(Vec<(Val, Val)>),
    Global(String, String),
    PersId(Box<Val>),
    Call(Box<Val>, Box<Val>),
    Mark,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        let s = self.take(4)?;
        Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn line(&mut self) -> Option<String> {
        let rest = self.b.get(self.pos..)?;
        let end = rest.iter().position(|&c| c == b'\n')?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Some(s)
    }
}

fn pop_mark(stack: &mut Vec<Val>) -> Option<Vec<Val>> {
    let m = stack.iter().rposition(|v| matches!(v, Val::Mark))?;
    let items = stack.split_off(m + 1);
    stack.pop();
    Some(items)
}

/// Most containers (tuples, lists, dicts, calls) one pickle may build: a tensor file holds a
/// few per tensor; the cap bounds nesting depth (and so recursion) for hostile input.
const MAX_CONTAINERS: usize = 4096;
/// Most values memo PUT/GET may copy in all: bounds the exponential growth a pickle can make
/// by referring to its own memo ("billion laughs").
const MAX_COPIED_VALUES: usize = 1 << 16;

/// Number of values in `v` (itself and everything inside).
fn values_in(v: &Val) -> usize {
    1 + match v {
        Val::Tuple(items) => items.iter().map(values_in).sum(),
        Val::Dict(items) => items.iter().map(|(k, v)| values_in(k) + values_in(v)).sum(),
        Val::PersId(v) => values_in(v),
        Val::Call(f, a) => values_in(f) + values_in(a),
        _ => 0,
    }
}

/// Interprets the pickle opcodes `torch.save` writes (protocol 2: PROTO, FRAME, GLOBAL,
/// STACK_GLOBAL, PUT/GET/MEMOIZE, MARK, tuples, lists, dicts and their appends/setitems,
/// strings and bytes, ints, LONG1 up to 64 bits, None, bools, floats (skipped), REDUCE /
/// NEWOBJ, BUILD, BINPERSID, STOP). Nothing is executed: GLOBAL only records a name and REDUCE
/// a call record, which [`build_tensor`] recognises for `torch._utils._rebuild_tensor_v2` and
/// `_rebuild_parameter`; any other opcode is an error. Container count and memo copies are
/// bounded ([`MAX_CONTAINERS`], [`MAX_COPIED_VALUES`]).
fn unpickle(path: &Path, b: &[u8]) -> Result<Val> {
    let mut r = Reader { b, pos: 0 };
    let mut stack: Vec<Val> = Vec::new();
    let mut memo: HashMap<u32, Val> = HashMap::new();
    let bad = |what: &str| err(path, format!("unsupported or corrupt pickle ({what})"));
    let (mut containers, mut copied) = (0usize, 0usize);
    loop {
        let op = r.u8().ok_or_else(|| bad("truncated"))?;
        if matches!(
            op,
            b')' | b't' | 0x85..=0x87 | b']' | b'}' | b'R' | 0x81 | b'Q'
        ) {
            containers += 1;
            if containers > MAX_CONTAINERS {
                return Err(bad(&format!("more than {MAX_CONTAINERS} containers")));
            }
        }
        match op {
            0x80 => {
                r.u8();
            }
            0x95 => {
                r.take(8);
            }
            b'c' => {
                let m = r.line().ok_or_else(|| bad("GLOBAL"))?;
                let n = r.line().ok_or_else(|| bad("GLOBAL"))?;
                stack.push(Val::Global(m, n));
            }
            0x93 => {
                let n = stack.pop();
                let m = stack.pop();
                match (m, n) {
                    (Some(Val::Str(m)), Some(Val::Str(n))) => stack.push(Val::Global(m, n)),
                    _ => return Err(bad("STACK_GLOBAL")),
                }
            }
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => r.u8().map(u32::from),
                    b'r' => r.u32(),
                    _ => Some(memo.len() as u32),
                }
                .ok_or_else(|| bad("PUT"))?;
                let top = stack.last().ok_or_else(|| bad("PUT on empty stack"))?;
                copied += values_in(top);
                if copied > MAX_COPIED_VALUES {
                    return Err(bad("memo copies exceed the limit"));
                }
                memo.insert(key, top.clone());
            }
            b'h' | b'j' => {
                let key = if op == b'h' {
                    r.u8().map(u32::from)
                } else {
                    r.u32()
                }
                .ok_or_else(|| bad("GET"))?;
                let v = memo.get(&key).ok_or_else(|| bad("GET of unknown memo"))?;
                copied += values_in(v);
                if copied > MAX_COPIED_VALUES {
                    return Err(bad("memo copies exceed the limit"));
                }
                stack.push(v.clone());
            }
            b'(' => stack.push(Val::Mark),
            b')' => stack.push(Val::Tuple(Vec::new())),
            b't' => {
                let items = pop_mark(&mut stack).ok_or_else(|| bad("TUPLE"))?;
                stack.push(Val::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(bad("TUPLEn"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Val::Tuple(items));
            }
            b']' => stack.push(Val::Tuple(Vec::new())),
            b'a' => {
                let v = stack.pop().ok_or_else(|| bad("APPEND"))?;
                if let Some(Val::Tuple(l)) = stack.last_mut() {
                    l.push(v);
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack).ok_or_else(|| bad("APPENDS"))?;
                if let Some(Val::Tuple(l)) = stack.last_mut() {
                    l.extend(items);
                }
            }
            b'}' => stack.push(Val::Dict(Vec::new())),
            b's' => {
                let v = stack.pop().ok_or_else(|| bad("SETITEM"))?;
                let k = stack.pop().ok_or_else(|| bad("SETITEM"))?;
                if let Some(Val::Dict(d)) = stack.last_mut() {
                    d.push((k, v));
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack).ok_or_else(|| bad("SETITEMS"))?;
                if let Some(Val::Dict(d)) = stack.last_mut() {
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.push((k, v));
                    }
                }
            }
            b'X' | 0x8c | 0x8d | b'B' | b'C' | 0x8e => {
                let n = match op {
                    0x8c | b'C' => r.u8().map(|v| v as usize),
                    0x8d | 0x8e => r.take(8).map(|s| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(s);
                        u64::from_le_bytes(a) as usize
                    }),
                    _ => r.u32().map(|v| v as usize),
                }
                .ok_or_else(|| bad("string length"))?;
                let s = r.take(n).ok_or_else(|| bad("string"))?;
                stack.push(Val::Str(String::from_utf8_lossy(s).into_owned()));
            }
            b'J' => {
                let v = r.u32().ok_or_else(|| bad("BININT"))? as i32;
                stack.push(Val::Int(v as i64));
            }
            b'K' => stack.push(Val::Int(r.u8().ok_or_else(|| bad("BININT1"))? as i64)),
            b'M' => {
                let s = r.take(2).ok_or_else(|| bad("BININT2"))?;
                stack.push(Val::Int(u16::from_le_bytes([s[0], s[1]]) as i64));
            }
            0x8a => {
                let n = r.u8().ok_or_else(|| bad("LONG1"))? as usize;
                let s = r.take(n).ok_or_else(|| bad("LONG1"))?;
                if n > 8 {
                    return Err(bad("LONG1 wider than 64 bits"));
                }
                let mut v: i64 = 0;
                for (i, &byte) in s.iter().enumerate() {
                    v |= (byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && s[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Val::Int(v));
            }
            b'N' => stack.push(Val::None),
            0x88 => stack.push(Val::Bool),
            0x89 => stack.push(Val::Bool),
            b'G' => {
                // Values of floats (e.g. in metadata) are not needed, only their place.
                r.take(8).ok_or_else(|| bad("BINFLOAT"))?;
                stack.push(Val::Float);
            }
            b'R' | 0x81 => {
                let args = stack.pop().ok_or_else(|| bad("REDUCE"))?;
                let f = stack.pop().ok_or_else(|| bad("REDUCE"))?;
                stack.push(Val::Call(Box::new(f), Box::new(args)));
            }
            b'b' => {
                stack.pop().ok_or_else(|| bad("BUILD"))?;
            }
            b'Q' => {
                let pid = stack.pop().ok_or_else(|| bad("BINPERSID"))?;
                stack.push(Val::PersId(Box::new(pid)));
            }
            b'.' => return stack.pop().ok_or_else(|| bad("empty stack at STOP")),
            other => return Err(bad(&format!("opcode 0x{other:02x}"))),
        }
    }
}

fn as_usize(v: &Val) -> Option<usize> {
    match v {
        Val::Int(i) if *i >= 0 => Some(*i as usize),
        _ => None,
    }
}

fn as_usizes(v: &Val) -> Option<Vec<usize>> {
    match v {
        Val::Tuple(items) => items.iter().map(as_usize).collect(),
        _ => None,
    }
}

/// Converts the little-endian bytes of one element to f32.
type ElemToF32 = fn(&[u8]) -> f32;

/// (element size, converter to f32) for a legacy storage class name.
fn storage_kind(name: &str) -> Option<(usize, ElemToF32)> {
    Some(match name {
        "FloatStorage" => (4, |s| f32::from_le_bytes([s[0], s[1], s[2], s[3]])),
        "DoubleStorage" => (8, |s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&s[..8]);
            f64::from_le_bytes(a) as f32
        }),
        "HalfStorage" => (2, |s| half::f16::from_le_bytes([s[0], s[1]]).to_f32()),
        "BFloat16Storage" => (2, |s| half::bf16::from_le_bytes([s[0], s[1]]).to_f32()),
        "BoolStorage" | "ByteStorage" => (1, |s| s[0] as f32),
        "CharStorage" => (1, |s| s[0] as i8 as f32),
        "ShortStorage" => (2, |s| i16::from_le_bytes([s[0], s[1]]) as f32),
        "IntStorage" => (4, |s| i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f32),
        "LongStorage" => (8, |s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&s[..8]);
            i64::from_le_bytes(a) as f32
        }),
        _ => return None,
    })
}

/// A tensor read from a `.pt` file, converted to f32, with whether its storage was an
/// integer/bool type (a mask) rather than floating point (weights).
#[derive(Debug, Clone)]
pub struct PtTensor {
    /// Values in f32.
    pub values: ArrayD<f32>,
    /// True for bool/integer storages.
    pub integer: bool,
}

fn build_tensor(
    path: &Path,
    v: &Val,
    bytes: &[u8],
    entries: &HashMap<String, (usize, usize)>,
    root: &str,
) -> Result<Option<PtTensor>> {
    let Val::Call(f, args) = v else {
        return Ok(None);
    };
    let (Val::Global(module, name), Val::Tuple(args)) = (f.as_ref(), args.as_ref()) else {
        return Ok(None);
    };
    if module == "torch._utils" && name == "_rebuild_parameter" {
        // A parameter wraps its tensor once; deeper nesting is not something torch writes.
        return match args.first() {
            Some(inner @ Val::Call(f, _)) if !matches!(f.as_ref(), Val::Global(m, n) if m == "torch._utils" && n == "_rebuild_parameter") => {
                build_tensor(path, inner, bytes, entries, root)
            }
            Some(_) => Err(err(path, "malformed tensor record: nested parameter")),
            None => Ok(None),
        };
    }
    if !(module == "torch._utils" && name == "_rebuild_tensor_v2") {
        return Ok(None);
    }
    let bad = |what: &str| err(path, format!("malformed tensor record: {what}"));
    let Some(Val::PersId(pid)) = args.first() else {
        return Err(bad("storage"));
    };
    let Val::Tuple(p) = pid.as_ref() else {
        return Err(bad("persistent id"));
    };
    let (Some(Val::Global(_, class)), Some(Val::Str(key))) = (p.get(1), p.get(2)) else {
        return Err(bad("storage class / key"));
    };
    let (elem, conv) = storage_kind(class)
        .ok_or_else(|| err(path, format!("unsupported storage type {class}")))?;
    let offset = args
        .get(1)
        .and_then(as_usize)
        .ok_or_else(|| bad("offset"))?;
    let size = args.get(2).and_then(as_usizes).ok_or_else(|| bad("size"))?;
    let stride = args
        .get(3)
        .and_then(as_usizes)
        .ok_or_else(|| bad("stride"))?;
    if size.len() != stride.len() {
        return Err(bad("size and stride ranks differ"));
    }
    let entry = format!("{root}/data/{key}");
    let &(s, e) = entries
        .get(&entry)
        .ok_or_else(|| err(path, format!("storage entry `{entry}` missing")))?;
    let storage = bytes
        .get(s..e)
        .ok_or_else(|| bad("storage outside the archive"))?;
    // Every count comes from the file: check them against the storage before allocating.
    let numel = size
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(&format!("size {size:?} overflows")))?;
    let stored = storage.len() / elem;
    if numel > stored {
        return Err(bad(&format!(
            "size {size:?} needs {numel} elements, its storage `{entry}` holds {stored} \
             (expanded views are not supported)"
        )));
    }
    if numel > 0 {
        let last = size
            .iter()
            .zip(&stride)
            .try_fold(offset, |a, (&d, &st)| {
                a.checked_add((d - 1).checked_mul(st)?)
            })
            .filter(|&l| l < stored)
            .ok_or_else(|| bad("offset and strides reach outside the storage"))?;
        debug_assert!(last < stored);
    }
    let mut values = Vec::with_capacity(numel);
    let mut idx = vec![0usize; size.len()];
    for _ in 0..numel {
        // In bounds: the largest linear index was checked above.
        let lin = offset + idx.iter().zip(&stride).map(|(i, st)| i * st).sum::<usize>();
        let at = lin * elem;
        let chunk = storage
            .get(at..at + elem)
            .ok_or_else(|| bad("element outside its storage"))?;
        values.push(conv(chunk));
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    let values = ArrayD::from_shape_vec(IxDyn(&size), values).map_err(|e| bad(&e.to_string()))?;
    let integer = !matches!(
        class.as_str(),
        "FloatStorage" | "DoubleStorage" | "HalfStorage" | "BFloat16Storage"
    );
    Ok(Some(PtTensor { values, integer }))
}

/// Reads every tensor of a `.pt` file: `("", tensor)` for a bare tensor, `(key, tensor)` for
/// the tensor values of a dictionary at the root.
pub fn read_pt(path: &Path) -> Result<Vec<(String, PtTensor)>> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    let entries = zip_entries(path, &bytes)?;
    let pkl = entries
        .keys()
        .find(|k| k.ends_with("/data.pkl"))
        .cloned()
        .ok_or_else(|| err(path, "no data.pkl in the archive"))?;
    let root = pkl.trim_end_matches("/data.pkl").to_string();
    let (s, e) = entries[&pkl];
    let pickle = bytes
        .get(s..e)
        .ok_or_else(|| err(path, "data.pkl outside the archive"))?;
    let obj = unpickle(path, pickle)?;
    let mut out = Vec::new();
    if let Some(t) = build_tensor(path, &obj, &bytes, &entries, &root)? {
        out.push((String::new(), t));
    } else if let Val::Dict(items) = &obj {
        for (k, v) in items {
            if let (Val::Str(k), Some(t)) = (k, build_tensor(path, v, &bytes, &entries, &root)?) {
                out.push((k.clone(), t));
            }
        }
    }
    if out.is_empty() {
        return Err(err(
            path,
            "no tensor found (expected torch.save of a tensor or a dict of tensors)",
        ));
    }
    Ok(out)
}

/// The layer key of an original-study file name `layer{N}-{component}-{indices}-{sparsity}.pt`
/// (`layer1-mlp.down_proj-0-0-0.5.pt` → `layer1-mlp.down_proj`), so that files of the same
/// layer at different structures match; other names give their stem.
pub fn layer_key_from_file_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.len() >= 2
        && parts[0].starts_with("layer")
        && parts[0][5..].chars().all(|c| c.is_ascii_digit())
        && !parts[0][5..].is_empty()
    {
        format!("{}-{}", parts[0], parts[1])
    } else {
        stem
    }
}

/// A 2-D tensor of a `.pt` file as [rows, cols] f32.
pub fn pt_matrix(path: &Path, name: &str, t: PtTensor) -> Result<Array2<f32>> {
    let shape = t.values.shape().to_vec();
    t.values
        .into_dimensionality()
        .map_err(|_| PruneError::UnsupportedTensor {
            file: path.display().to_string(),
            tensor: name.to_string(),
            what: format!("rank {} (shape {shape:?}), expected 2", shape.len()),
        })
}
