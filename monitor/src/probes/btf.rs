//! Just enough of a BTF reader to find one member's offset in one kernel struct.
//!
//! The probes read `task_struct.pid` directly from the BTF pointers sched_switch hands them;
//! its offset differs between kernel builds, so it is looked up in the running kernel's BTF at
//! load time (a small CO-RE of our own: aya's Btf does not expose member offsets).

use std::path::{Path, PathBuf};

/// Why a member offset could not be found.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("cannot read kernel BTF {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not BTF as we know it.
    #[error("kernel BTF {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No such struct or member.
    #[error("kernel BTF {path} has no member {member:?} in struct {strukt}")]
    NotFound {
        /// The file.
        path: PathBuf,
        /// Struct name.
        strukt: String,
        /// Member name.
        member: String,
    },
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

/// Byte offset of `member` in `struct strukt`, from the BTF file at `path`
/// (normally /sys/kernel/btf/vmlinux).
pub fn member_offset(path: &Path, strukt: &str, member: &str) -> Result<u32, BtfError> {
    let data = std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let malformed = |reason: &str| BtfError::Malformed {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let btf = Btf::parse(&data).map_err(malformed)?;
    btf.member_offset(strukt, member)
        .map_err(malformed)?
        .ok_or_else(|| BtfError::NotFound {
            path: path.to_path_buf(),
            strukt: strukt.to_string(),
            member: member.to_string(),
        })
}

struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, &'static str> {
        let magic = data.get(0..2).ok_or("file too short")?;
        if u16::from_le_bytes([magic[0], magic[1]]) != BTF_MAGIC {
            return Err("bad magic (not little-endian BTF)");
        }
        let hdr_len = u32_at(data, 4).ok_or("truncated header")? as usize;
        let field = |at| {
            u32_at(data, at)
                .map(|v| v as usize)
                .ok_or("truncated header")
        };
        let (type_off, type_len) = (field(8)?, field(12)?);
        let (str_off, str_len) = (field(16)?, field(20)?);
        let section = |off: usize, len: usize| {
            data.get(hdr_len + off..hdr_len + off + len)
                .ok_or("section out of bounds")
        };
        Ok(Btf {
            types: section(type_off, type_len)?,
            strings: section(str_off, str_len)?,
        })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Walks every type record; each is a 12-byte header plus kind-specific trailing data.
    fn member_offset(&self, strukt: &str, member: &str) -> Result<Option<u32>, &'static str> {
        let mut at = 0;
        while at + 12 <= self.types.len() {
            let name_off = u32_at(self.types, at).ok_or("truncated type")?;
            let info = u32_at(self.types, at + 4).ok_or("truncated type")?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let trailing = match kind {
                1 | 14 | 17 => 4,              // INT, VAR, DECL_TAG
                3 => 12,                       // ARRAY
                4 | 5 | 15 | 19 => vlen * 12,  // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => vlen * 8,            // ENUM, FUNC_PROTO
                0 | 2 | 7..=12 | 16 | 18 => 0, // the kinds with no trailing data
                _ => return Err("unknown BTF kind"),
            };
            if kind == KIND_STRUCT && self.name(name_off) == strukt.as_bytes() {
                for i in 0..vlen {
                    let m = at + 12 + i * 12;
                    let m_name = u32_at(self.types, m).ok_or("truncated member")?;
                    let m_offset = u32_at(self.types, m + 8).ok_or("truncated member")?;
                    if self.name(m_name) == member.as_bytes() {
                        // With kind_flag the low 24 bits are the bit offset (bitfields).
                        let bits = if kind_flag {
                            m_offset & 0xff_ffff
                        } else {
                            m_offset
                        };
                        if !bits.is_multiple_of(8) {
                            return Err("member is a bitfield");
                        }
                        return Ok(Some(bits / 8));
                    }
                }
            }
            at += 12 + trailing;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_task_struct_pid_in_the_running_kernel() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        let pid = member_offset(path, "task_struct", "pid").expect("kernel BTF readable");
        let tgid = member_offset(path, "task_struct", "tgid").unwrap();
        // pid and tgid are adjacent pid_t members in every kernel since 2.6.
        assert_eq!(tgid, pid + 4, "pid at {pid}, tgid at {tgid}");
        assert!(pid > 0 && pid.is_multiple_of(4));
    }

    #[test]
    fn missing_member_is_named() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        let err = member_offset(path, "task_struct", "no_such_member").unwrap_err();
        assert!(err.to_string().contains("no_such_member"), "{err}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("pinsight-btf-{}", std::process::id()));
        std::fs::write(&dir, b"\x9f\xeb\x01\x00garbage").unwrap();
        let err = member_offset(&dir, "task_struct", "pid").unwrap_err();
        std::fs::remove_file(&dir).ok();
        assert!(matches!(err, BtfError::Malformed { .. }), "{err}");
    }
}
