//! The configured socket globs: `*` and `?` within one path component, nothing else, so a
//! pattern cannot make the scan walk a whole tree.

use std::path::{Path, PathBuf};

/// The existing paths that `pattern` (absolute) matches, sorted.
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for part in Path::new(pattern).components().skip(1) {
        let part = part.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for dir in &found {
            if !part.contains(['*', '?']) {
                next.push(dir.join(&*part));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                // Like a shell, a leading '*' does not match hidden names.
                if (part.starts_with('.') || !name.starts_with('.')) && matches(&part, &name) {
                    next.push(entry.path());
                }
            }
        }
        found = next;
    }
    found.retain(|p| p.exists());
    found.sort();
    found
}

/// Whether `name` matches `pattern` (`*`: any run, `?`: one character).
fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer wildcard match with one backtrack point: linear-ish, no recursion.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_a_component() {
        assert!(matches("*.qmp", "vm1.qmp"));
        assert!(!matches("*.qmp", "vm1.qmp.old"));
        assert!(matches("vm?.qmp", "vm1.qmp"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
    }

    #[test]
    fn expands_directories_and_files() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["a", "b", ".hidden"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join("qmp.sock"), "").unwrap();
        }
        std::fs::write(dir.path().join("x.qmp"), "").unwrap();
        let root = dir.path().display();
        let found = expand(&format!("{root}/*/qmp.sock"));
        assert_eq!(
            found,
            vec![dir.path().join("a/qmp.sock"), dir.path().join("b/qmp.sock")]
        );
        assert_eq!(
            expand(&format!("{root}/*.qmp")),
            vec![dir.path().join("x.qmp")]
        );
        assert!(expand(&format!("{root}/none/*.qmp")).is_empty());
    }
}
