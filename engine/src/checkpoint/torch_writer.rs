//! Writes state dicts in PyTorch's zip checkpoint format, as `torch.save` (torch >= 1.6) does.
//!
//! THUDM's `ptuning/main.py --ptuning_checkpoint` reads adapters with
//! `torch.load(".../pytorch_model.bin")`, so glmtune must be able to hand back the same format it
//! reads; tests also use this to build torch checkpoints (single or sharded) without Python.
//!
//! The archive holds, under one top folder:
//! - `data.pkl`: a protocol-2 pickle of an `OrderedDict` mapping each name to
//!   `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`, where
//!   `storage` is a persistent id `('storage', torch.FloatStorage, key, 'cpu', numel)`;
//! - `byteorder` (`little`), `data/<key>` (the raw storage bytes), `version` (`3`).
//!
//! Entries are stored uncompressed and their data is aligned to 64 bytes through a padding extra
//! field, as torch's own writer does, so `torch.load(mmap=True)` can map storages in place.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::error::{EngineError, Result};

/// Top folder of every entry. Torch names it after the file stem, but any name loads; a fixed one
/// keeps the bytes independent of the file name, so equal tensors always give equal files.
const ARCHIVE_DIR: &str = "archive";
/// Torch aligns record data to 64 bytes so that mmap-ed storages are suitably aligned.
const ALIGNMENT: u16 = 64;
/// Extra-field id torch uses for its padding (`"FB"`); readers skip unknown ids.
const PADDING_FIELD_ID: u16 = u16::from_le_bytes(*b"FB");
/// Serialization format version torch >= 1.6 records (`kProducedFileFormatVersion`).
const FORMAT_VERSION: &str = "3\n";

/// Writes `tensors` (name, tensor; any of F32/F16/BF16, any shape, contiguous or not) as a torch zip checkpoint.
///
/// The file is written next to `path` under a temporary name and renamed into place, so a crash
/// never leaves a truncated checkpoint behind. The output depends only on the names, order and
/// values of `tensors`.
pub fn save(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    // A dict cannot hold a name twice: torch would silently keep the last tensor.
    let mut seen = HashSet::new();
    if let Some((name, _)) = tensors.iter().find(|(name, _)| !seen.insert(name)) {
        return Err(EngineError::tensor(path, name, "is listed twice"));
    }
    let storages = tensors
        .iter()
        .map(|(name, tensor)| StorageRecord::new(path, name, tensor))
        .collect::<Result<Vec<_>>>()?;
    let pickle = state_dict_pickle(tensors.iter().map(|(name, _)| name.as_str()).zip(&storages));

    let tmp = temporary_path(path)?;
    let written = write_archive(&tmp, path, &pickle, tensors, &storages);
    if let Err(e) =
        written.and_then(|()| std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e)))
    {
        // Best effort: the temporary file is garbage either way, and the first error is the useful one.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// What the pickle says about one tensor's storage; the bytes themselves are produced at write
/// time, one tensor at a time, so a whole model is never held twice in memory.
struct StorageRecord {
    storage_class: &'static str,
    numel: usize,
    elem_size: usize,
    dims: Vec<usize>,
}

impl StorageRecord {
    fn new(path: &Path, name: &str, tensor: &Tensor) -> Result<Self> {
        let storage_class = match tensor.dtype() {
            DType::F32 => "FloatStorage",
            DType::F16 => "HalfStorage",
            DType::BF16 => "BFloat16Storage",
            // Raw bytes; THUDM's int8 weights are `CharStorage` of the same bytes.
            DType::U8 => "ByteStorage",
            other => {
                return Err(EngineError::tensor(
                    path,
                    name,
                    format!("is {other:?}; only f32, f16, bf16 and u8 tensors can be saved"),
                ))
            }
        };
        Ok(Self {
            storage_class,
            numel: tensor.elem_count(),
            elem_size: tensor.dtype().size_in_bytes(),
            dims: tensor.dims().to_vec(),
        })
    }

    /// Row-major strides of the contiguous copy that is written. Plain products (not torch's
    /// `max(size, 1)` variant) so that candle's reader also sees empty tensors as contiguous.
    fn strides(&self) -> Vec<usize> {
        let mut strides = vec![0; self.dims.len()];
        let mut acc = 1;
        for (stride, &dim) in strides.iter_mut().zip(&self.dims).rev() {
            *stride = acc;
            acc *= dim;
        }
        strides
    }

    fn byte_len(&self) -> usize {
        self.numel * self.elem_size
    }
}

/// Next to `path`, so the final rename never crosses file systems; unique per process and call, so
/// concurrent saves to one path never write into each other's file.
fn temporary_path(path: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let file_name = path
        .file_name()
        .ok_or_else(|| EngineError::checkpoint(path, "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    tmp_name.push(format!(".tmp-{}-{n}", std::process::id()));
    Ok(path.with_file_name(tmp_name))
}

/// Writes the archive to `tmp`; errors name `dest`, the file the caller asked for.
fn write_archive(
    tmp: &Path,
    dest: &Path,
    pickle: &[u8],
    tensors: &[(String, Tensor)],
    storages: &[StorageRecord],
) -> Result<()> {
    let zip_err = |e: zip::result::ZipError| match e {
        zip::result::ZipError::Io(e) => EngineError::io(dest, e),
        other => EngineError::checkpoint(dest, format!("cannot write zip archive: {other}")),
    };
    let file = File::create(tmp).map_err(|e| EngineError::io(dest, e))?;
    let mut zip = ZipWriter::new(BufWriter::new(file));
    let record = |zip: &mut ZipWriter<BufWriter<File>>, name: &str, bytes: &[u8]| -> Result<()> {
        zip.start_file(format!("{ARCHIVE_DIR}/{name}"), record_options(bytes.len()))
            .map_err(zip_err)?;
        zip.write_all(bytes).map_err(|e| EngineError::io(dest, e))
    };

    // Same record order as torch: pickle, byte order, storages by key, then the version.
    record(&mut zip, "data.pkl", pickle)?;
    record(&mut zip, "byteorder", b"little")?;
    for (key, ((name, tensor), storage)) in tensors.iter().zip(storages).enumerate() {
        zip.start_file(
            format!("{ARCHIVE_DIR}/data/{key}"),
            record_options(storage.byte_len()),
        )
        .map_err(zip_err)?;
        write_elements(dest, name, tensor, &mut zip)?;
    }
    record(&mut zip, "version", FORMAT_VERSION.as_bytes())?;

    let writer = zip.finish().map_err(zip_err)?;
    let file = writer
        .into_inner()
        .map_err(|e| EngineError::io(dest, e.into_error()))?;
    // Flush to disk before the rename makes the file visible under its real name.
    file.sync_all().map_err(|e| EngineError::io(dest, e))
}

/// Streams `tensor` row-major and little-endian through a small buffer: saving a multi-GiB shard
/// then costs no second copy of its tensors.
fn write_elements(dest: &Path, name: &str, tensor: &Tensor, out: &mut impl Write) -> Result<()> {
    let tensor_err = |e: candle_core::Error| {
        EngineError::tensor(dest, name, format!("cannot be serialized: {e}"))
    };
    // Both are no-ops for a contiguous CPU tensor; strided views are copied in logical order.
    let tensor = tensor
        .to_device(&Device::Cpu)
        .and_then(|t| t.contiguous())
        .map_err(tensor_err)?;
    let (storage, layout) = tensor.storage_and_layout();
    let range = layout.start_offset()..layout.start_offset() + tensor.elem_count();
    let written = match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => write_le(&v[range], out, f32::to_le_bytes),
        Storage::Cpu(CpuStorage::F16(v)) => write_le(&v[range], out, |x| x.to_le_bytes()),
        Storage::Cpu(CpuStorage::BF16(v)) => write_le(&v[range], out, |x| x.to_le_bytes()),
        Storage::Cpu(CpuStorage::U8(v)) => out.write_all(&v[range]),
        _ => {
            let dtype = tensor.dtype();
            return Err(EngineError::tensor(
                dest,
                name,
                format!("unexpected {dtype:?} storage"),
            ));
        }
    };
    written.map_err(|e| EngineError::io(dest, e))
}

fn write_le<T: Copy, const N: usize>(
    values: &[T],
    out: &mut impl Write,
    to_le: impl Fn(T) -> [u8; N],
) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 16;
    let mut buf = Vec::with_capacity(CHUNK * N);
    for chunk in values.chunks(CHUNK) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|&v| to_le(v)));
        out.write_all(&buf)?;
    }
    Ok(())
}

fn record_options(len: usize) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        // A fixed time and mode keep the output byte-identical from run to run.
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644)
        .with_alignment_and_header_id(ALIGNMENT, PADDING_FIELD_ID)
        .large_file(len as u64 >= zip::ZIP64_BYTES_THR)
}

/// The pickle of the state dict, in the subset of protocol 2 that both `pickle` and candle's
/// reader understand. No memo is used: it only saves bytes, and unpicklers never require it.
fn state_dict_pickle<'a>(entries: impl Iterator<Item = (&'a str, &'a StorageRecord)>) -> Vec<u8> {
    let mut p = Pickler::default();
    p.op(op::PROTO);
    p.buf.push(2);
    p.empty_ordered_dict();
    let mut entries = entries.peekable();
    if entries.peek().is_some() {
        p.op(op::MARK);
        for (key, (name, storage)) in entries.enumerate() {
            p.unicode(name);
            p.global("torch._utils", "_rebuild_tensor_v2");
            p.op(op::MARK);
            // The persistent id torch's unpickler resolves to the storage in `data/<key>`.
            p.op(op::MARK);
            p.unicode("storage");
            p.global("torch", storage.storage_class);
            p.unicode(&key.to_string());
            p.unicode("cpu");
            p.int(storage.numel);
            p.op(op::TUPLE);
            p.op(op::BINPERSID);
            p.int(0); // storage offset: every tensor owns its storage
            p.int_tuple(&storage.dims);
            p.int_tuple(&storage.strides());
            p.op(op::NEWFALSE); // requires_grad
            p.empty_ordered_dict(); // backward hooks
            p.op(op::TUPLE);
            p.op(op::REDUCE);
        }
        p.op(op::SETITEMS);
    }
    p.op(op::STOP);
    p.buf
}

mod op {
    pub const PROTO: u8 = 0x80;
    pub const GLOBAL: u8 = b'c';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const REDUCE: u8 = b'R';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const BININT: u8 = b'J';
    pub const LONG1: u8 = 0x8a;
    pub const BINPERSID: u8 = b'Q';
    pub const NEWFALSE: u8 = 0x89;
    pub const SETITEMS: u8 = b'u';
    pub const STOP: u8 = b'.';
}

#[derive(Default)]
struct Pickler {
    buf: Vec<u8>,
}

impl Pickler {
    fn op(&mut self, code: u8) {
        self.buf.push(code);
    }

    fn global(&mut self, module: &str, name: &str) {
        self.op(op::GLOBAL);
        for part in [module, name] {
            self.buf.extend_from_slice(part.as_bytes());
            self.buf.push(b'\n');
        }
    }

    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(op::EMPTY_TUPLE);
        self.op(op::REDUCE);
    }

    fn unicode(&mut self, s: &str) {
        self.op(op::BINUNICODE);
        // Tensor names and keys are far below 4 GiB; a longer string could not be a tensor name.
        self.buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// The smallest encoding Python's own pickler would pick, so readers that only handle the
    /// common opcodes (candle's reads sizes and strides only as BININT*) keep working.
    fn int(&mut self, v: usize) {
        if let Ok(v) = u8::try_from(v) {
            self.op(op::BININT1);
            self.buf.push(v);
        } else if let Ok(v) = u16::try_from(v) {
            self.op(op::BININT2);
            self.buf.extend_from_slice(&v.to_le_bytes());
        } else if let Ok(v) = i32::try_from(v) {
            self.op(op::BININT);
            self.buf.extend_from_slice(&v.to_le_bytes());
        } else {
            // Two's complement, little-endian, with a clear sign bit as pickle requires.
            let bytes = (v as u64).to_le_bytes();
            let mut len = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if bytes[len - 1] & 0x80 != 0 {
                len += 1;
            }
            self.op(op::LONG1);
            self.buf.push(len as u8);
            self.buf.extend_from_slice(&bytes[..len.min(8)]);
            self.buf
                .extend(std::iter::repeat_n(0, len.saturating_sub(8)));
        }
    }

    fn int_tuple(&mut self, values: &[usize]) {
        match values.len() {
            0 => return self.op(op::EMPTY_TUPLE),
            1..=3 => {}
            _ => self.op(op::MARK),
        }
        for &v in values {
            self.int(v);
        }
        self.op(match values.len() {
            1 => op::TUPLE1,
            2 => op::TUPLE2,
            3 => op::TUPLE3,
            _ => op::TUPLE,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_match_python_encoding() {
        let encode = |v: usize| {
            let mut p = Pickler::default();
            p.int(v);
            p.buf
        };
        assert_eq!(encode(7), [op::BININT1, 7]);
        assert_eq!(encode(300), [op::BININT2, 0x2c, 0x01]);
        assert_eq!(encode(1 << 20), [op::BININT, 0, 0, 0x10, 0]);
        // pickle.dumps(2**31, 2) == b'\x80\x02\x8a\x05\x00\x00\x00\x80\x00.'
        assert_eq!(encode(1 << 31), [op::LONG1, 5, 0, 0, 0, 0x80, 0]);
        assert_eq!(encode(1 << 32), [op::LONG1, 5, 0, 0, 0, 0, 1]);
        // pickle.dumps(2**63, 2): the sign bit forces a ninth, zero byte.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(
            encode(1 << 63),
            [op::LONG1, 9, 0, 0, 0, 0, 0, 0, 0, 0x80, 0]
        );
    }
}
