//! The pictures of `docs/architecture.md` and the README's table name every function and every
//! port, so a new one cannot leave them stale.

use std::path::PathBuf;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repository().join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The code blocks of a markdown text, in order.
fn code_blocks(markdown: &str) -> Vec<String> {
    markdown.split("```").skip(1).step_by(2).map(str::to_owned).collect()
}

fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect()
}

/// The functions: the directories of `functions/`.
fn functions() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repository().join("functions"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The ports: the traits of `ports.rs`.
fn ports() -> Vec<&'static str> {
    include_str!("ports.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("pub trait "))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_alphanumeric()).next())
        .collect()
}

#[test]
fn the_architecture_pictures_name_every_function_and_port() {
    let blocks = code_blocks(&read("docs/architecture.md"));
    let diagram = blocks.iter().find(|block| block.starts_with("mermaid")).expect("the diagram");
    let tree = blocks.iter().find(|block| block.contains("src/ports.rs")).expect("the tree of the code");
    assert_eq!(functions().len(), 10, "{:?}", functions());
    for function in functions() {
        assert!(words(diagram).contains(&function.as_str()), "the diagram lacks the function {function}");
    }
    assert!(ports().len() >= 10, "{:?}", ports());
    for port in ports() {
        assert!(words(tree).contains(&port), "the tree lacks the port {port}");
    }
}

#[test]
fn the_readme_lists_every_function_and_links_every_document() {
    let readme = read("README.md");
    for function in functions() {
        assert!(readme.contains(&format!("| `{function}` |")), "the README's table lacks {function}");
    }
    for entry in std::fs::read_dir(repository().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(readme.contains(&format!("(docs/{name})")), "the README does not link docs/{name}");
    }
    assert!(readme.lines().count() < 200, "the README stays short: the rest goes to docs/");
}
