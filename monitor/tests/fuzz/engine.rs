//! The fuzz harness: proptest runs each target for a bounded number of inputs, every parse
//! is timed and its allocations counted, and each target prints what it executed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestError, TestRunner};

/// No input may take longer than this to parse (issue 11).
pub const MAX_PARSE_TIME: Duration = Duration::from_millis(100);
/// Nor make its parse hold more than this at once.
pub const MAX_PARSE_BYTES: usize = 64 << 20;
/// Inputs per target when PINSIGHT_FUZZ_CASES is not set: enough for shallow bugs, a few
/// seconds per target in a release build.
const DEFAULT_CASES: u32 = 5000;

/// The system allocator, counting each thread's live bytes and their peak, so a target can
/// tell what one parse held at most (threads fuzz different targets in parallel).
pub struct CountingAlloc;

thread_local! {
    // Const-initialised and without Drop: reading them never allocates, so the allocator
    // can use them.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // try_with: a thread being torn down still frees memory after its locals are gone.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to System unchanged; the counting only reads sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `layout` is passed on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in alloc.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            track(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System with this layout (alloc/realloc above).
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from System with `layout`; the caller vouches for new_size.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        new
    }
}

thread_local! {
    static SLOWEST: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    static MOST_BYTES: Cell<usize> = const { Cell::new(0) };
    static PARSES: Cell<u64> = const { Cell::new(0) };
}

/// Runs one parse, and fails the input if it took longer than [`MAX_PARSE_TIME`] or held
/// more than [`MAX_PARSE_BYTES`] (its result included, as it is still alive at the end).
/// A parse over the time is run up to four more times, a little apart, and the fastest run
/// counts: on a loaded machine (other tests' VMs pinned to both CPUs) a run can lose the CPU
/// for tens of milliseconds; a slow input is slow each time.
pub fn bounded<T>(what: &str, parse: impl Fn() -> T) -> T {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let start = Instant::now();
    let mut result = parse();
    let mut took = start.elapsed();
    let bytes = (PEAK.with(Cell::get) - base).max(0) as usize;
    for _ in 0..4 {
        if took <= MAX_PARSE_TIME {
            break;
        }
        drop(result);
        std::thread::sleep(Duration::from_millis(20));
        let start = Instant::now();
        result = parse();
        took = took.min(start.elapsed());
    }
    SLOWEST.with(|s| s.set(s.get().max(took)));
    MOST_BYTES.with(|m| m.set(m.get().max(bytes)));
    PARSES.with(|p| p.set(p.get() + 1));
    assert!(
        took <= MAX_PARSE_TIME && bytes <= MAX_PARSE_BYTES,
        "{what}: parse took {took:?} and held {bytes} bytes; the limits are {MAX_PARSE_TIME:?} \
         and {MAX_PARSE_BYTES} bytes"
    );
    result
}

/// Inputs per target: PINSIGHT_FUZZ_CASES, else the default, divided by `cost` for targets
/// whose inputs are expensive to build (a sysfs tree on disk).
pub fn cases(cost: u32) -> u32 {
    let base = std::env::var("PINSIGHT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(DEFAULT_CASES);
    (base / cost).max(1)
}

/// Runs `check` on `cases` inputs of `strategy`; a panic or failed check is shrunk to a
/// small input and fails the test with it. Prints the counts either way.
pub fn fuzz<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    SLOWEST.with(|s| s.set(Duration::ZERO));
    MOST_BYTES.with(|m| m.set(0));
    PARSES.with(|p| p.set(0));
    let config = Config {
        cases,
        // Failures are reported with the shrunk input; a regression test keeps them.
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    };
    let inputs = Cell::new(0u64);
    let start = Instant::now();
    let outcome = TestRunner::new(config).run(&strategy, |value| {
        inputs.set(inputs.get() + 1);
        check(value)
    });
    let wall = start.elapsed();
    let (slowest, bytes, parses) = (
        SLOWEST.with(Cell::get),
        MOST_BYTES.with(Cell::get),
        PARSES.with(Cell::get),
    );
    let panics = u32::from(outcome.is_err());
    println!(
        "fuzz {name}: {} inputs, {parses} parses, {panics} panics, max {:.3} ms, max {} KiB held, \
         {:.0} inputs/s",
        inputs.get(),
        slowest.as_secs_f64() * 1e3,
        bytes / 1024,
        inputs.get() as f64 / wall.as_secs_f64()
    );
    match outcome {
        Ok(()) => {}
        Err(TestError::Fail(reason, value)) => {
            panic!("fuzz {name}: failing input (shrunk): {value:#?}\n{reason}")
        }
        Err(TestError::Abort(reason)) => panic!("fuzz {name}: aborted: {reason}"),
    }
}

/// One edit of a seed's bytes: the byte-level half of the strategies.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Removes up to `len` bytes at `at`.
    Delete(prop::sample::Index, usize),
    /// Inserts one of the target's interesting tokens.
    Token(prop::sample::Index, prop::sample::Index),
    /// Inserts arbitrary bytes.
    Bytes(prop::sample::Index, Vec<u8>),
    /// Repeats a slice of up to `len` bytes `times` times (nesting, many entries).
    Repeat(prop::sample::Index, usize, usize),
    /// Flips one bit.
    Flip(prop::sample::Index, u8),
}

/// Up to `max` mutations (small ones most of the time).
pub fn mutations(max: usize) -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        3 => (any::<prop::sample::Index>(), 1usize..64).prop_map(|(a, l)| Mutation::Delete(a, l)),
        4 => (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(a, t)| Mutation::Token(a, t)),
        2 => (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(a, b)| Mutation::Bytes(a, b)),
        1 => (any::<prop::sample::Index>(), 1usize..256, 2usize..64)
            .prop_map(|(a, l, n)| Mutation::Repeat(a, l, n)),
        3 => (any::<prop::sample::Index>(), 0u8..8).prop_map(|(a, b)| Mutation::Flip(a, b)),
    ];
    prop::collection::vec(one, 0..=max)
}

/// `seed` with `edits` applied, as text (invalid UTF-8 made lossy, as the parsers take &str).
pub fn mutate(seed: &str, edits: &[Mutation], tokens: &[&str]) -> String {
    let tokens: Vec<&[u8]> = tokens.iter().map(|t| t.as_bytes()).collect();
    String::from_utf8_lossy(&mutate_bytes(seed.as_bytes(), edits, &tokens)).into_owned()
}

/// `seed` with `edits` applied, as bytes (for binary inputs such as BTF).
pub fn mutate_bytes(seed: &[u8], edits: &[Mutation], tokens: &[&[u8]]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for edit in edits {
        let at = |i: &prop::sample::Index, len: usize| i.index(len + 1);
        match edit {
            Mutation::Delete(i, len) => {
                let start = at(i, bytes.len()).min(bytes.len());
                let end = (start + len).min(bytes.len());
                bytes.drain(start..end);
            }
            Mutation::Token(i, t) => {
                let start = at(i, bytes.len());
                let token = tokens[t.index(tokens.len())];
                bytes.splice(start..start, token.iter().copied());
            }
            Mutation::Bytes(i, new) => {
                let start = at(i, bytes.len());
                bytes.splice(start..start, new.iter().copied());
            }
            Mutation::Repeat(i, len, times) => {
                let start = at(i, bytes.len()).min(bytes.len());
                let end = (start + len).min(bytes.len());
                let slice = bytes[start..end].to_vec();
                let repeated: Vec<u8> = slice.repeat(*times);
                bytes.splice(end..end, repeated);
            }
            Mutation::Flip(i, bit) => {
                if !bytes.is_empty() {
                    let pos = i.index(bytes.len());
                    bytes[pos] ^= 1 << bit;
                }
            }
        }
    }
    bytes
}

/// Files of `dir` under the crate (tests/fixtures/...) whose names end in `ext`, as text.
pub fn seeds(dir: &str, ext: &str) -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut seeds: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("seed directory entry").path())
        .filter(|path| path.to_string_lossy().ends_with(ext))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("seed file is text");
            (
                path.file_name()
                    .expect("a seed has a name")
                    .to_string_lossy()
                    .into_owned(),
                text,
            )
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no {ext} seeds in {}", dir.display());
    seeds
}
