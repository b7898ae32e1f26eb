//! Just enough of a BTF reader to find one member's offset in one kernel struct.
//!
//! The probes read `task_struct.pid` and `task_struct.se.sum_exec_runtime` directly from the
//! BTF pointers sched_switch hands them; the offsets differ between kernel builds, so they are
//! looked up in the running kernel's BTF at load time (a small CO-RE of our own).
//!
//! Why not a crate: aya-obj 0.2 (aya 0.13) parses BTF but keeps struct members and
//! `type_by_id` crate-private; btf-rs (retis-org, well kept, does exactly this) is
//! LGPL-2.1-or-later, which this MIT/Apache-2.0 project would link statically into its .deb;
//! libbpf-rs builds and links the C libbpf (libelf, zlib) beside aya for two offsets. One
//! linear walk over the type section is about 100 lines and is tested on a handmade blob.

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
    /// The struct or member is missing, or the member cannot be read as a whole field.
    #[error("kernel BTF {path}: struct {strukt} member {member:?}: {what}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Struct name.
        strukt: String,
        /// Member name.
        member: String,
        /// What is wrong with it.
        what: &'static str,
    },
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

/// The running kernel's BTF (normally /sys/kernel/btf/vmlinux), read once for every lookup.
pub struct KernelBtf {
    path: PathBuf,
    data: Vec<u8>,
}

impl KernelBtf {
    /// Reads the BTF file at `path`.
    pub fn read(path: &Path) -> Result<KernelBtf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(KernelBtf {
            path: path.to_path_buf(),
            data,
        })
    }

    /// BTF already in memory (a handmade blob, a fuzz input); `path` only names it in errors.
    pub fn from_bytes(path: &Path, data: Vec<u8>) -> KernelBtf {
        KernelBtf {
            path: path.to_path_buf(),
            data,
        }
    }

    /// Byte offset of `member` in `struct strukt`.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let malformed = |reason: &str| BtfError::Malformed {
            path: self.path.clone(),
            reason: reason.to_string(),
        };
        let btf = Btf::parse(&self.data).map_err(malformed)?;
        let found = btf.member(strukt, member).map_err(malformed)?;
        let named = |what: &'static str| BtfError::Unusable {
            path: self.path.clone(),
            strukt: strukt.to_string(),
            member: member.to_string(),
            what,
        };
        match found {
            None => Err(named("no such member")),
            Some(m) if m.bitfield_size != 0 || !m.bits.is_multiple_of(8) => {
                Err(named("a bitfield, not a byte-addressable member"))
            }
            Some(m) => Ok(m.bits / 8),
        }
    }
}

/// Where a member sits: bit offset and, for a bitfield, its size in bits.
struct Member {
    bits: u32,
    bitfield_size: u32,
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
    fn member(&self, strukt: &str, member: &str) -> Result<Option<Member>, &'static str> {
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
                        // With kind_flag the top 8 bits are a bitfield's size and the low
                        // 24 bits the bit offset; without it, the offset is in bits.
                        let (bits, bitfield_size) = if kind_flag {
                            (m_offset & 0xff_ffff, m_offset >> 24)
                        } else {
                            (m_offset, 0)
                        };
                        return Ok(Some(Member {
                            bits,
                            bitfield_size,
                        }));
                    }
                }
            }
            at += 12 + trailing;
        }
        Ok(None)
    }
}

/// Test fixture: a kernel BTF of one `int` type and the given structs, each member an `int`
/// at the given byte offset (no kind_flag: offsets in bits, as most of vmlinux's structs).
#[cfg(test)]
pub(super) fn fixture(structs: &[(&str, &[(&str, u32)])]) -> KernelBtf {
    let mut strings = b"\0int\0".to_vec();
    let mut name = |text: &str| {
        let at = strings.len() as u32;
        strings.extend(text.as_bytes());
        strings.push(0);
        at
    };
    let mut words: Vec<u32> = vec![1, 1 << 24, 4, 32]; // [1] INT "int", 32 bits
    for (strukt, members) in structs {
        words.extend([name(strukt), (4 << 24) | members.len() as u32, 64]);
        for (member, byte) in *members {
            words.extend([name(member), 1, byte * 8]);
        }
    }
    let types: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut data = Vec::new();
    data.extend(BTF_MAGIC.to_le_bytes());
    data.extend([1u8, 0]); // version, flags
    let type_len = types.len() as u32;
    for v in [24, 0, type_len, type_len, strings.len() as u32] {
        data.extend(v.to_le_bytes());
    }
    data.extend(types);
    data.extend(strings);
    KernelBtf::from_bytes(Path::new("fixture.btf"), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with the strings "", "task_struct", "pid", "flags" and one INT type, then
    /// `struct task_struct { int flags:3 (bit 0); int pid (byte 8); }` with kind_flag set.
    fn blob() -> Vec<u8> {
        let strings = b"\0task_struct\0pid\0flags\0int\0";
        let mut types = Vec::new();
        let mut u32s = |v: &[u32]| v.iter().for_each(|x| types.extend(x.to_le_bytes()));
        // [1] INT "int": name, info (kind 1), size, then the INT's encoding word.
        u32s(&[23, 1 << 24, 4, 32]);
        // [2] STRUCT "task_struct", kind_flag, 2 members, size 16.
        u32s(&[1, (1 << 31) | (4 << 24) | 2, 16]);
        // flags: bitfield size 3 at bit 0; pid: bit 64 (byte 8).
        u32s(&[17, 1, 3 << 24, 13, 1, 64]);
        let mut data = Vec::new();
        data.extend(BTF_MAGIC.to_le_bytes());
        data.extend([1u8, 0]); // version, flags
        let hdr_len = 24u32;
        let type_len = types.len() as u32;
        for v in [hdr_len, 0, type_len, type_len, strings.len() as u32] {
            data.extend(v.to_le_bytes());
        }
        data.extend(types);
        data.extend(strings);
        data
    }

    fn btf(data: Vec<u8>) -> KernelBtf {
        KernelBtf::from_bytes(Path::new("fixture.btf"), data)
    }

    #[test]
    fn finds_a_member_offset_with_kind_flag_bit_offsets() {
        assert_eq!(btf(blob()).member_offset("task_struct", "pid").unwrap(), 8);
    }

    #[test]
    fn missing_struct_or_member_is_named() {
        let err = btf(blob())
            .member_offset("task_struct", "tgid")
            .unwrap_err();
        assert!(matches!(err, BtfError::Unusable { .. }), "{err}");
        assert!(err.to_string().contains("tgid"), "{err}");
        let err = btf(blob()).member_offset("mm_struct", "pid").unwrap_err();
        assert!(err.to_string().contains("mm_struct"), "{err}");
    }

    #[test]
    fn a_bitfield_member_is_refused() {
        let err = btf(blob())
            .member_offset("task_struct", "flags")
            .unwrap_err();
        assert!(err.to_string().contains("bitfield"), "{err}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for data in [
            b"\x9f\xeb\x01\x00garbage".to_vec(),
            b"ELF".to_vec(),
            Vec::new(),
        ] {
            let err = btf(data).member_offset("task_struct", "pid").unwrap_err();
            assert!(matches!(err, BtfError::Malformed { .. }), "{err}");
            assert!(err.to_string().contains("fixture.btf"), "{err}");
        }
    }

    #[test]
    fn an_unreadable_file_names_the_path() {
        let err = KernelBtf::read(Path::new("/nonexistent/vmlinux"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }
}
