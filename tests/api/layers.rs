//! The layering the architecture promises: `domain` at the bottom depending on no other
//! module, and no import cycle between the crate's top-level modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module → the other top-level modules its files name as `crate::<module>`.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if ["main", "lib", "bin"].contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let uses = graph.entry(module.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                uses.insert(name);
            }
        }
    }
    graph
}

#[test]
fn the_domain_depends_on_nothing_else() {
    let graph = dependencies();
    assert_eq!(graph.get("domain"), Some(&BTreeSet::new()), "{graph:?}");
}

#[test]
fn no_two_modules_depend_on_each_other_even_through_others() {
    let graph = dependencies();
    // Depth-first search for a path back to where it started.
    fn reaches(
        graph: &BTreeMap<String, BTreeSet<String>>,
        from: &str,
        to: &str,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(from).into_iter().flatten() {
            if next == to || (seen.insert(next.clone()) && reaches(graph, next, to, seen)) {
                return true;
            }
        }
        false
    }
    let cycles: Vec<&String> = graph
        .keys()
        .filter(|module| reaches(&graph, module, module, &mut BTreeSet::new()))
        .collect();
    assert!(
        cycles.is_empty(),
        "modules on an import cycle: {cycles:?}\n{graph:#?}"
    );
}

/// The names of the `fn`s declared in `text` between each match of `opening` and its
/// closing brace (an `impl` or `trait` block).
fn fns_in_blocks(text: &str, opening: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices(opening) {
        let body_start = start + text[start..].find('{').unwrap();
        let mut depth = 0;
        let mut end = body_start;
        for (offset, c) in text[body_start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = body_start + offset;
                break;
            }
        }
        for (at, _) in text[body_start..end].match_indices("fn ") {
            let name: String = text[body_start + at + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// A store's role impl forwards to helpers; were a helper to share a trait method's name,
/// renaming one would leave the forward calling itself forever, and nothing would warn.
#[test]
fn no_store_helper_shares_a_name_with_a_store_operation() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let roles = std::fs::read_to_string(src.join("store/roles.rs")).unwrap();
    let operations = fns_in_blocks(&roles, "pub trait ");
    assert!(
        operations.contains("allocate") && operations.len() > 30,
        "{operations:?}"
    );
    let mut files = Vec::new();
    rust_files(&src.join("store"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for store in ["impl DynamoStore {", "impl EmbeddedStore {"] {
            let clashes: Vec<_> = fns_in_blocks(&text, store)
                .intersection(&operations)
                .cloned()
                .collect();
            assert!(
                clashes.is_empty(),
                "{}: `{store}` declares {clashes:?}, named like store operations; name helpers apart",
                file.display()
            );
        }
    }
}

/// Suites that run on the embedded store only: the binary and tools around it, the
/// repository's files, and what only an in-process store has.
const EMBEDDED_ONLY: [&str; 12] = [
    "backup",
    "connections",
    "deploy_files",
    "embedded",
    "env_example",
    "layers",
    "load_scenarios",
    "process",
    "provider",
    "schema_conformance",
    "simulator",
    "terraform",
];

/// The `.rs` file stems directly in `dir`, but `main` and `mod`.
fn stems(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|stem| stem != "main" && stem != "mod")
        .collect()
}

/// Cargo compiles only what a crate root names: a test file or a conformance case that is
/// not registered would silently never run.
#[test]
fn every_test_file_and_conformance_case_is_registered() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let read = |path: &str| std::fs::read_to_string(tests.join(path)).unwrap();
    let (api, dynamodb, helpers) = (
        read("api/main.rs"),
        read("dynamodb/main.rs"),
        read("api/helpers/mod.rs"),
    );
    for stem in stems(&tests.join("api")) {
        assert!(
            api.contains(&format!("\nmod {stem};")),
            "tests/api/main.rs lacks `mod {stem};`"
        );
        let shared = dynamodb.contains(&format!("#[path = \"../api/{stem}.rs\"]\nmod {stem};"));
        let embedded_only = EMBEDDED_ONLY.contains(&stem.as_str());
        assert!(
            shared != embedded_only,
            "tests/api/{stem}.rs: register it in tests/dynamodb/main.rs too, or list it in EMBEDDED_ONLY (and only one)"
        );
    }
    for stem in stems(&tests.join("dynamodb")) {
        assert!(
            dynamodb.contains(&format!("\nmod {stem};")),
            "tests/dynamodb/main.rs lacks `mod {stem};`"
        );
    }
    for stem in stems(&tests.join("api/helpers")) {
        assert!(
            helpers.contains(&format!("pub mod {stem};")),
            "tests/api/helpers/mod.rs lacks `pub mod {stem};`"
        );
    }
    let conformance = read("api/store_conformance.rs");
    let listed = &conformance[conformance.find("macro_rules!").unwrap()..];
    for (at, _) in conformance.match_indices("pub async fn ") {
        let case: String = conformance[at + 13..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            listed.contains(&format!("{case},")),
            "store_conformance.rs: `{case}` is not in conformance_suite!'s list"
        );
    }
}

/// The crate's module map (the `lib.rs` docs) names every top-level module, so a reader
/// starting there finds each one.
#[test]
fn the_module_map_names_every_module() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let map: String = lib.lines().filter(|line| line.starts_with("//!")).collect();
    for line in lib.lines() {
        if let Some(module) = line
            .strip_prefix("pub mod ")
            .and_then(|m| m.strip_suffix(';'))
        {
            assert!(
                map.contains(&format!("[`{module}`]")),
                "src/lib.rs's module map does not name `{module}`"
            );
        }
    }
}
