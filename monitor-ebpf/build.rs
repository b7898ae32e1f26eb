use which::which;

/// The eBPF object is linked by `bpf-linker`; rebuild when that binary changes (for instance
/// after `scripts/setup.sh` installs a different version).
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!(
            "cargo:warning=bpf-linker not found on PATH: run scripts/setup.sh (it installs bpf-linker 0.10.3)"
        ),
    }
}
