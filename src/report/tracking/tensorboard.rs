//! TensorBoard event files: one run folder per stage execution, holding one
//! `events.out.tfevents.*` file of TFRecords (length, masked CRC-32C, an
//! `Event` protocol buffer, masked CRC-32C). The three messages written here
//! (`Event`, `Summary`, `Summary.Value` with `simple_value`) are encoded by
//! hand: they are a few fixed fields, and a protobuf code generator would
//! cost more build time than the encoding it replaces.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Scalar, StageRun, final_step};

/// Writes `run` as a new TensorBoard run under `root` and returns its folder:
/// `root/<experiment>/<stage>/<key prefix>` (`-2`, `-3`... for a forced rerun).
pub fn write_run(root: &Path, run: &StageRun, curves: &[Scalar]) -> std::io::Result<PathBuf> {
    let base = root
        .join(file_name(&run.experiment))
        .join(file_name(&run.stage));
    std::fs::create_dir_all(&base)?;
    let short = &run.key[..run.key.len().min(12)];
    let dir = (1..)
        .map(|i| match i {
            1 => base.join(short),
            _ => base.join(format!("{short}-{i}")),
        })
        .find(|d| !d.exists())
        .unwrap_or_else(|| base.join(short));
    std::fs::create_dir_all(&dir)?;
    let wall = run.finished_ms as f64 / 1000.0;
    let mut bytes = record(&event_header(wall));
    for s in curves {
        bytes.extend(record(&scalar_event(wall, s.step, &s.tag, s.value)));
    }
    // Final metrics under `metrics/`, at the last step any curve reached.
    let step = final_step(curves);
    for (name, value) in &run.metrics {
        let tag = format!("metrics/{name}");
        bytes.extend(record(&scalar_event(wall, step, &tag, *value)));
    }
    let name = format!(
        "events.out.tfevents.{}.{}.{}",
        run.finished_ms / 1000,
        host_name(),
        std::process::id()
    );
    // Written whole and renamed: TensorBoard never reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(&name))?;
    Ok(dir)
}

/// A path component: `/`, `\` and control characters become `_`.
fn file_name(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    match clean.as_str() {
        "" | "." | ".." => "_".into(),
        _ => clean,
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| file_name(h.trim()))
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// One TFRecord: u64 length, its masked CRC, the data, the data's masked CRC.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// `Event { wall_time: 1, file_version: 3 }`: the first record of every file.
fn event_header(wall: f64) -> Vec<u8> {
    let mut e = Vec::new();
    field_f64(&mut e, 1, wall);
    field_bytes(&mut e, 3, b"brain.Event:2");
    e
}

/// `Event { wall_time: 1, step: 2, summary: 5 { value: 1 { tag: 1, simple_value: 2 } } }`.
fn scalar_event(wall: f64, step: i64, tag: &str, value: f64) -> Vec<u8> {
    let mut v = Vec::new();
    field_bytes(&mut v, 1, tag.as_bytes());
    key(&mut v, 2, 5);
    // TensorBoard's scalars are 32-bit floats.
    v.extend_from_slice(&(value as f32).to_le_bytes());
    let mut summary = Vec::new();
    field_bytes(&mut summary, 1, &v);
    let mut e = Vec::new();
    field_f64(&mut e, 1, wall);
    key(&mut e, 2, 0);
    // int64 fields are varints of the two's-complement value.
    varint(&mut e, step as u64);
    field_bytes(&mut e, 5, &summary);
    e
}

fn key(out: &mut Vec<u8>, field: u64, wire_type: u64) {
    varint(out, (field << 3) | wire_type);
}

fn field_f64(out: &mut Vec<u8>, field: u64, x: f64) {
    key(out, field, 1);
    out.extend_from_slice(&x.to_le_bytes());
}

fn field_bytes(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    key(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_match_tensorflows_framing() {
        // CRC-32C of "123456789" is 0xE3069283 (RFC 3720's check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let r = record(b"abc");
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(r.len(), 3 + 16);
    }

    #[test]
    fn varints_and_fields_encode_as_protobuf_does() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        // `file_version: "brain.Event:2"` after `wall_time: 1.0`.
        let h = event_header(1.0);
        assert_eq!(h[0], 0x09);
        assert_eq!(&h[1..9], &1.0f64.to_le_bytes());
        assert_eq!(h[9], 0x1a);
        assert_eq!(h[10], 13);
        // A negative step is ten bytes, as protobuf writes int64.
        let e = scalar_event(0.0, -1, "t", 1.0);
        assert_eq!(&e[9..11], &[0x10, 0xff]);
        assert_eq!(file_name("ppo[a=b/c]"), "ppo[a=b_c]");
        assert_eq!(file_name(".."), "_");
    }
}
