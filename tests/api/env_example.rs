//! `.env.example` and `serve --help` stay in step: the same variables, and every value the
//! example sets is the declared default unless it is one that has none.

use std::collections::BTreeMap;

use clap::Args;
use sandbox_broker::config::Config;
use sandbox_broker::provider::simulated::server::SimulatorConfig;

/// `(variable, value)` of every `NAME=value` or `# NAME=value` line.
pub(crate) fn example_variables() -> BTreeMap<String, (String, bool)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|line| {
            let (commented, line) = match line.strip_prefix("# ") {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let (name, value) = line.split_once('=')?;
            let is_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            is_name.then(|| (name.to_owned(), (value.to_owned(), commented)))
        })
        .collect()
}

/// `variable → declared default` of every setting `serve` (and `simulate-provider`, the
/// compose file's provider) reads from the environment.
fn declared_variables() -> BTreeMap<String, Option<String>> {
    let serve = Config::augment_args(clap::Command::new("serve"));
    let simulator = SimulatorConfig::augment_args(clap::Command::new("simulate-provider"));
    serve
        .get_arguments()
        .chain(simulator.get_arguments())
        .filter_map(|arg| {
            let name = arg.get_env()?.to_str()?.to_owned();
            let default = arg
                .get_default_values()
                .first()
                .and_then(|value| value.to_str())
                .map(str::to_owned);
            Some((name, default))
        })
        .collect()
}

#[test]
fn the_example_lists_exactly_the_variables_serve_reads() {
    let example = example_variables();
    let declared = declared_variables();
    assert!(
        declared.len() > 60,
        "only {} variables declared",
        declared.len()
    );
    let missing: Vec<&String> = declared
        .keys()
        .filter(|name| !example.contains_key(*name))
        .collect();
    let unknown: Vec<&String> = example
        .keys()
        .filter(|name| !declared.contains_key(*name))
        .collect();
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
    assert!(
        unknown.is_empty(),
        ".env.example names what serve does not read: {unknown:?}"
    );
}

#[test]
fn every_value_the_example_sets_is_the_declared_default() {
    let declared = declared_variables();
    for (name, (value, commented)) in example_variables() {
        let Some(Some(default)) = declared.get(&name) else {
            continue; // No declared default (tokens, the table name): any example value.
        };
        if commented && value.is_empty() {
            continue;
        }
        assert_eq!(&value, default, "{name} in .env.example");
    }
}

#[test]
fn every_variable_has_a_description_line_above_it() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example");
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let is_variable = |line: &str| {
        let line = line.strip_prefix("# ").unwrap_or(line);
        line.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
    };
    let mut described = 0;
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| is_variable(l)) {
        let above = i.checked_sub(1).map(|j| lines[j]).unwrap_or_default();
        let description = above.strip_prefix("# ").filter(|_| !is_variable(above));
        assert!(
            description.is_some_and(|d| d.split_whitespace().count() >= 3),
            "{line} has no description line above it"
        );
        described += 1;
    }
    assert_eq!(described, example_variables().len());
}
