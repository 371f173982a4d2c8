//! What the environment files put on `PATH`, `CUDA_HOME` and the loader
//! path, and which toolkit each entry points at. `/etc/profile.d` serves
//! login shells only; `/etc/ld.so.conf.d` serves every process, services too.

use serde::{Deserialize, Serialize};

use super::loader::ConfDir;
use crate::host::Root;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Environment {
    /// CUDA directories that profile scripts add to PATH.
    pub path: Vec<Entry>,
    pub cuda_home: Vec<Entry>,
    /// LD_LIBRARY_PATH entries set by profile scripts (login shells only).
    pub library_path: Vec<Entry>,
    /// CUDA and NVIDIA directories in the loader configuration.
    pub loader: Vec<Entry>,
    /// Distinct toolkits the entries above point at.
    pub toolkits: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub file: String,
    pub value: String,
    /// The toolkit directory the value resolves into, if any.
    pub toolkit: Option<String>,
}

/// `VAR=value` and `export VAR=value` assignments in a shell snippet, with
/// `$VAR`/`${VAR}` references dropped and the value split on ':'.
pub fn assignments(text: &str, variable: &str) -> Vec<String> {
    let mut values = Vec::new();
    for line in text.lines() {
        let line = line.trim().trim_start_matches("export ").trim();
        if line.starts_with('#') {
            continue;
        }
        // Also inside `case`/`if` bodies: find "VAR=" at a word start.
        let mut rest = line;
        while let Some(at) = rest.find(&format!("{variable}=")) {
            let before = &rest[..at];
            let at_word_start = before.is_empty()
                || before.ends_with([' ', ';', '(', '\t'])
                || before.ends_with("export ");
            let value_start = at + variable.len() + 1;
            let tail = &rest[value_start..];
            if at_word_start {
                let value = shell_word(tail);
                for part in value.split(':') {
                    let part = part.trim();
                    if part.is_empty() || part.starts_with('$') {
                        continue;
                    }
                    values.push(part.to_string());
                }
            }
            rest = tail;
        }
    }
    values
}

/// The first shell word of `text` with quotes removed and every `$VAR` or
/// `${...}` expansion turned into a ':' separator (only literals matter).
fn shell_word(text: &str) -> String {
    let mut word = String::new();
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ' ' | ';' | '\t') => break,
            (_, '$') if chars.peek() == Some(&'{') => {
                let mut depth = 0;
                for c in chars.by_ref() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                word.push(':');
            }
            (_, '$') => {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    chars.next();
                }
                word.push(':');
            }
            (_, c) => word.push(c),
        }
    }
    word
}

fn is_gpu_dir(value: &str) -> bool {
    value.contains("cuda") || value.contains("nvidia")
}

/// The `/usr/local/cuda-X.Y` directory a path resolves into.
pub fn toolkit_of(root: &Root, value: &str) -> Option<String> {
    let resolved = root.resolve(value).ok()?;
    let text = resolved.to_string_lossy();
    let rest = text.strip_prefix("/usr/local/")?;
    let first = rest.split('/').next()?;
    first
        .starts_with("cuda")
        .then(|| format!("/usr/local/{first}"))
}

pub fn gather(root: &Root, loader_dirs: &[ConfDir]) -> Environment {
    let mut env = Environment::default();
    let mut scripts: Vec<String> = root
        .read_dir("/etc/profile.d")
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".sh"))
        .map(|n| format!("/etc/profile.d/{n}"))
        .collect();
    scripts.push("/etc/environment".into());
    for file in scripts {
        let Ok(text) = root.read_string(&file) else {
            continue;
        };
        let entry = |value: String| Entry {
            toolkit: toolkit_of(root, &value),
            file: file.clone(),
            value,
        };
        env.path.extend(
            assignments(&text, "PATH")
                .into_iter()
                .filter(|v| is_gpu_dir(v))
                .map(entry),
        );
        env.cuda_home
            .extend(assignments(&text, "CUDA_HOME").into_iter().map(entry));
        env.library_path.extend(
            assignments(&text, "LD_LIBRARY_PATH")
                .into_iter()
                .filter(|v| is_gpu_dir(v))
                .map(entry),
        );
    }
    env.loader = loader_dirs
        .iter()
        .filter(|d| is_gpu_dir(&d.dir))
        .map(|d| Entry {
            file: d.file.clone(),
            value: d.dir.clone(),
            toolkit: toolkit_of(root, &d.dir),
        })
        .collect();
    let mut toolkits: Vec<String> = env
        .path
        .iter()
        .chain(&env.cuda_home)
        .chain(&env.library_path)
        .chain(&env.loader)
        .filter_map(|e| e.toolkit.clone())
        .collect();
    toolkits.sort();
    toolkits.dedup();
    env.toolkits = toolkits;
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_assignments_in_their_usual_shapes() {
        let script = r#"
export CUDA_HOME=/usr/local/cuda-12.8
export PATH=/usr/local/cuda-12.8/bin${PATH:+:${PATH}}
case ":${PATH}:" in *":/opt/x:"*) ;; *) PATH="/opt/x:$PATH" ;; esac
LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH}"
# PATH=/commented/out
"#;
        assert_eq!(assignments(script, "CUDA_HOME"), ["/usr/local/cuda-12.8"]);
        assert_eq!(
            assignments(script, "PATH"),
            ["/usr/local/cuda-12.8/bin", "/opt/x"]
        );
        assert_eq!(
            assignments(script, "LD_LIBRARY_PATH"),
            ["/usr/local/cuda/lib64"]
        );
    }
}
