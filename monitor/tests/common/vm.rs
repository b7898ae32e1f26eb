//! Real KVM VMs under libvirt for tests: transient domains that are destroyed (by name) when
//! their `TestVm` guard drops, also while a failing test unwinds.

use super::guest::{domain_xml, path_str, scratch_dir, spin_guest, VmOptions, IDLE_VCPUS};
use super::qemu_threads::{parse_cpu_list, vcpu_threads};
use super::stale::reap_stale;
use super::virsh::{destroy, virsh, virsh_ok};
use super::wait_for;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::Duration;

/// Every test domain's name starts with this; stale ones are found by it.
pub(super) const NAME_PREFIX: &str = "pinsight-test-";

/// A running libvirt domain, destroyed (and undefined, if defined) by name on drop.
#[derive(Debug)]
pub struct TestVm {
    pub name: String,
    pub uuid: String,
    /// QEMU's pid, from /run/libvirt/qemu/NAME.pid.
    pub pid: u32,
    /// Thread id of vCPU N at index N (threads named `CPU N/KVM`).
    pub vcpu_tids: Vec<u32>,
    /// Defined with an inactive config (see `TestVm::start_defined`).
    pub persistent: bool,
}

static VM_COUNTER: AtomicU32 = AtomicU32::new(0);
static REAP_STALE: Once = Once::new();

impl TestVm {
    /// Starts a transient domain `pinsight-test-<hint>-<pid>-<n>` and waits for its vCPU threads.
    pub fn start(opts: VmOptions) -> TestVm {
        TestVm::start_as(opts, false)
    }

    /// Like [`TestVm::start`], but defined (`virsh define` + `start`, so it has an inactive
    /// config) instead of transient (`virsh create`); undefined on drop.
    pub fn start_defined(opts: VmOptions) -> TestVm {
        TestVm::start_as(opts, true)
    }

    fn start_as(opts: VmOptions, persistent: bool) -> TestVm {
        assert!(
            !opts.name_hint.is_empty()
                && opts
                    .name_hint
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)),
            "name_hint {:?} must be non-empty [A-Za-z0-9_-]",
            opts.name_hint
        );
        REAP_STALE.call_once(reap_stale);
        let n = VM_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{NAME_PREFIX}{}-{}-{n}", opts.name_hint, std::process::id());
        let kernel = opts.busy.then(|| spin_guest(opts.spin_iterations));
        let vcpus = if opts.busy { 1 } else { IDLE_VCPUS };
        let xml = domain_xml(&name, &opts, vcpus, kernel.as_deref());

        let xml_path = scratch_dir().join(format!("{name}.xml"));
        std::fs::write(&xml_path, &xml)
            .unwrap_or_else(|e| panic!("write {}: {e}", xml_path.display()));
        let verb = if persistent { "define" } else { "create" };
        let created = virsh(&[verb, path_str(&xml_path)]);
        let _ = std::fs::remove_file(&xml_path);
        if let Err(e) = created {
            panic!("virsh {verb} of {name} failed: {e}\n--- domain XML ---\n{xml}");
        }

        // From here on the guard exists, so a panic below still destroys (and undefines) the
        // domain.
        let mut vm = TestVm {
            name,
            uuid: String::new(),
            pid: 0,
            vcpu_tids: Vec::new(),
            persistent,
        };
        if persistent {
            virsh_ok(&["start", &vm.name]);
        }
        vm.uuid = virsh_ok(&["domuuid", &vm.name]).trim().to_string();
        let pid_file = format!("/run/libvirt/qemu/{}.pid", vm.name);
        vm.pid = wait_for(
            Duration::from_secs(30),
            &format!("QEMU pid in {pid_file}"),
            || std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok(),
        );
        let pid = vm.pid;
        let what = format!("{vcpus} vCPU thread(s) of {} (pid {pid})", vm.name);
        vm.vcpu_tids = wait_for(Duration::from_secs(30), &what, || vcpu_threads(pid, vcpus));
        vm
    }

    /// Thread id of vCPU `vcpu`; panics if the VM has no such vCPU.
    pub fn vcpu_tid(&self, vcpu: u32) -> u32 {
        *self.vcpu_tids.get(vcpu as usize).unwrap_or_else(|| {
            panic!(
                "{} has {} vCPU(s), no vCPU {vcpu}",
                self.name,
                self.vcpu_tids.len()
            )
        })
    }

    /// Pins vCPU `vcpu` to `cpus` live through libvirt and asserts the thread's affinity changed.
    pub fn pin_vcpu(&self, vcpu: u32, cpus: &str) {
        virsh_ok(&["vcpupin", &self.name, &vcpu.to_string(), cpus, "--live"]);
        let want = parse_cpu_list(cpus);
        let what = format!("vCPU {vcpu} of {} allowed on {cpus}", self.name);
        wait_for(Duration::from_secs(5), &what, || {
            (parse_cpu_list(&self.allowed_cpus(vcpu)) == want).then_some(())
        });
    }

    /// Pauses the guest (`virsh suspend`) and waits until every vCPU thread sleeps. A paused
    /// vCPU thread neither runs nor exits, so two counters read while it is paused cover the
    /// same stints: agreement tests fence their interval with `suspend`/`resume`.
    pub fn suspend(&self) {
        // QEMU's `stop` returns once every vCPU has left KVM_RUN and marked itself stopped;
        // the thread may still be on its way into the wait, hence the check for sleep.
        virsh_ok(&["suspend", &self.name]);
        let what = format!("the vCPU threads of paused {} to sleep", self.name);
        wait_for(Duration::from_secs(5), &what, || {
            (0..self.vcpu_tids.len() as u32)
                .all(|vcpu| self.thread_state(vcpu) != 'R')
                .then_some(())
        });
    }

    /// Restarts a guest paused by `suspend` (`virsh resume`).
    pub fn resume(&self) {
        virsh_ok(&["resume", &self.name]);
    }

    /// Replaces this domain's metadata element in namespace `ns_uri` (prefix `key`) live.
    pub fn set_metadata(&self, ns_uri: &str, key: &str, xml: &str) {
        let args = [
            "metadata", &self.name, "--uri", ns_uri, "--key", key, "--set", xml, "--live",
        ];
        virsh_ok(&args);
    }

    /// The live metadata element in namespace `ns_uri`, None if the domain has none.
    pub fn metadata(&self, ns_uri: &str) -> Option<String> {
        virsh(&["metadata", &self.name, "--uri", ns_uri, "--live"]).ok()
    }

    /// The inactive (persistent) domain XML (`virsh dumpxml --inactive`).
    pub fn inactive_xml(&self) -> String {
        virsh_ok(&["dumpxml", "--inactive", &self.name])
    }

    /// The live domain XML (`virsh dumpxml`).
    pub fn dumpxml(&self) -> String {
        virsh_ok(&["dumpxml", &self.name])
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        // A panic here while the test already unwinds would abort the whole test binary.
        if let Err(e) = destroy(&self.name) {
            eprintln!("warning: could not destroy test domain {}: {e}", self.name);
        }
        if self.persistent {
            if let Err(e) = virsh(&["undefine", &self.name]) {
                eprintln!("warning: could not undefine test domain {}: {e}", self.name);
            }
        }
    }
}

/// Whether libvirt knows a domain of this name (running or not).
pub fn domain_exists(name: &str) -> bool {
    virsh(&["domstate", name]).is_ok()
}
