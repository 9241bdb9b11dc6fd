//! The documentation holds together: every relative link in the README, the changelog, the
//! guide and the other pages under `docs/` (and the crates' READMEs) names a file that exists,
//! and every `#anchor` a heading of the page it points to (GitHub's slugs); the README and the
//! performance page stay within the lengths issue #15 set them.
//!
//! Links are read with a CommonMark parser (pulldown-cmark), so a link-like text in a code
//! block or a code span is not taken for a link.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every Markdown page a user or contributor reads, relative to the repository's root.
fn pages() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("README.md"), PathBuf::from("CHANGELOG.md")];
    let mut dirs = vec![PathBuf::from("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(root().join(&dir)).unwrap() {
            let entry = entry.unwrap();
            let rel = dir.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                dirs.push(rel);
            } else if rel.extension().is_some_and(|e| e == "md") {
                out.push(rel);
            }
        }
    }
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let readme = PathBuf::from("crates")
            .join(entry.unwrap().file_name())
            .join("README.md");
        if root().join(&readme).exists() {
            out.push(readme);
        }
    }
    out.sort();
    out
}

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_FOOTNOTES | Options::ENABLE_STRIKETHROUGH
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces to `-`; a repeated heading gets `-1`, `-2`, ….
fn slug(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(markdown, options()) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let s = slug(&heading.take().unwrap());
                let n = seen.entry(s.clone()).or_insert(0);
                out.insert(if *n == 0 {
                    s.clone()
                } else {
                    format!("{s}-{n}")
                });
                *n += 1;
            }
            _ => {}
        }
    }
    out
}

/// `a/b/../c` to `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                assert!(
                    out.pop(),
                    "a link leaves the repository: {}",
                    path.display()
                );
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Each page's links as (line, destination).
fn links(markdown: &str) -> Vec<(usize, String)> {
    let line_of = |offset: usize| markdown[..offset].matches('\n').count() + 1;
    Parser::new_ext(markdown, options())
        .into_offset_iter()
        .filter_map(|(event, range)| match event {
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                Some((line_of(range.start), dest_url.to_string()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn every_relative_link_resolves() {
    let pages = pages();
    assert!(pages.len() >= 15, "found only {pages:?}");
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(root().join(page)).unwrap();
        for (line, dest) in links(&text) {
            if dest.contains("://") || dest.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = match dest.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (dest.as_str(), None),
            };
            let target = if file.is_empty() {
                page.clone()
            } else {
                normalize(&page.parent().unwrap().join(file))
            };
            let at = format!("{}:{line}: {dest}", page.display());
            if !root().join(&target).exists() {
                broken.push(format!("{at}: no file {}", target.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let md = std::fs::read_to_string(root().join(&target)).unwrap_or_default();
                if !anchors(&md).contains(anchor) {
                    broken.push(format!(
                        "{at}: no heading #{anchor} in {}",
                        target.display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 60, "only {checked} relative links checked");
}

#[test]
fn the_checker_sees_what_github_sees() {
    // Anchors as GitHub makes them, duplicates numbered.
    let a = anchors(
        "# The guide\n## `/metrics`, `/auth/health` and the live dashboard\n## Fields\n## Fields\n",
    );
    let want = [
        "the-guide",
        "metrics-authhealth-and-the-live-dashboard",
        "fields",
        "fields-1",
    ];
    assert_eq!(a, want.iter().map(|s| s.to_string()).collect());
    // Links in code are not links; images are.
    let l = links("[a](x.md) `[b](y.md)`\n\n```text\n[c](z.md)\n```\n![d](p.png)\n");
    assert_eq!(l, vec![(1, "x.md".into()), (6, "p.png".into())]);
    assert_eq!(
        normalize(Path::new("docs/guide/../runbooks.md")),
        PathBuf::from("docs/runbooks.md")
    );
}

#[test]
fn the_readme_and_the_performance_page_stay_short() {
    let lines = |p: &str| {
        std::fs::read_to_string(root().join(p))
            .unwrap()
            .lines()
            .count()
    };
    let readme = lines("README.md");
    assert!(
        readme <= 300,
        "README.md has {readme} lines; the guide is the place for more"
    );
    let perf = lines("docs/performance.md");
    assert!(
        perf <= 400,
        "docs/performance.md has {perf} lines; the journal is docs/dev/"
    );
}

/// The README keeps the two commands a newcomer needs, and `.ci/run` runs its test command.
#[test]
fn the_readme_names_the_demo_and_the_test_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let demo = "cargo run --release --example demo -- --speed";
    let tests = "scripts/test-deps.sh && cargo test --workspace --all-features";
    assert!(readme.contains(demo) && readme.contains(tests));
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.contains(tests),
        ".ci/run no longer runs the README's test command"
    );
}
